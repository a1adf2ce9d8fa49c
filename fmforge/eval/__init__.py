"""fmforge.eval"""
