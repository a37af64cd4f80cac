"""Triton kernels and their launchers, one module per op (e.g. pool2d.py)."""
