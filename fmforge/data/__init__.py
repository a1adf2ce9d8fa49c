"""fmforge.data"""
