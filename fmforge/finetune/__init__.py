"""fmforge.finetune"""
