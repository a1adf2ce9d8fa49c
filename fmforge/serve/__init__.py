"""fmforge.serve"""
