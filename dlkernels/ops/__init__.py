"""Custom ops, one module per op family."""
from dlkernels.ops.attention import attention, scaled_dot_product_attention
from dlkernels.ops.batch_norm import batch_norm_relu
from dlkernels.ops.conv2d import conv2d
from dlkernels.ops.conv_transpose2d import conv_transpose2d
from dlkernels.ops.sync_batch_norm import sync_batch_norm_relu
from dlkernels.ops.rnn import gru, gru_cell, lstm, lstm_cell
from dlkernels.ops.pool2d import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = ["adaptive_avg_pool2d", "attention", "avg_pool2d", "batch_norm_relu", "conv2d", "conv_transpose2d", "gru", "gru_cell", "lstm", "lstm_cell", "max_pool2d", "scaled_dot_product_attention", "sync_batch_norm_relu"]
