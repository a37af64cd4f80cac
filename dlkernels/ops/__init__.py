"""Custom ops, one module per op family."""
from dlkernels.ops.batch_norm import batch_norm_relu
from dlkernels.ops.pool2d import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "batch_norm_relu", "max_pool2d"]
