"""fmforge.tokenizer"""
