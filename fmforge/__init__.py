"""fmforge: build your own language foundation model, end to end."""

__version__ = "0.1.0"
