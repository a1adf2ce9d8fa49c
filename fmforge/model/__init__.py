"""fmforge.model"""
