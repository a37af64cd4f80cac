"""dlkernels: hand-written CUDA C++ and Triton kernels as PyTorch ops, measured against cuDNN.

    import dlkernels
    y = dlkernels.max_pool2d(x, 3, 2, 1)            # backend="auto" | "cuda" | "triton" | "reference" | "torch"
    model = dlkernels.convert(model)                # swap torch.nn modules for drop-ins
"""
from dlkernels import nn
from dlkernels._backends import BACKENDS, autotune, available_backends, explain
from dlkernels.convert import convert
from dlkernels.info import info
from dlkernels.ops import (adaptive_avg_pool2d, attention, avg_pool2d, batch_norm_relu, conv2d, conv_transpose2d, gru,
                           gru_cell, lstm, lstm_cell, max_pool2d, scaled_dot_product_attention, sync_batch_norm_relu)
from dlkernels.ops.conv2d import clear_weight_cache as clear_conv2d_weight_cache
from dlkernels.ops.conv2d import set_benchmark as set_conv2d_benchmark

__version__ = "0.1.0"

__all__ = ["BACKENDS", "adaptive_avg_pool2d", "attention", "autotune", "available_backends", "avg_pool2d", "batch_norm_relu",
           "clear_conv2d_weight_cache", "conv2d", "conv_transpose2d", "convert", "explain", "gru", "gru_cell", "info", "lstm", "lstm_cell",
           "max_pool2d", "nn", "scaled_dot_product_attention", "set_conv2d_benchmark", "sync_batch_norm_relu"]
