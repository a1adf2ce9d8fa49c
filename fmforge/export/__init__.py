"""fmforge.export"""
