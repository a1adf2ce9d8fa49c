"""fmforge.train"""
