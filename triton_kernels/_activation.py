"""The fused epilogues' activation (conv2d, batch_norm_relu), as csrc/include/dlk/activation.h.

When on, y = y > 0 ? y : negative_slope * y; ReLU is slope 0 and keeps torch.relu's exact zeros (also
for -inf) and NaN propagation. The backward scales the gradient by 1 or the slope from the saved
output's sign (the ops refuse negative slopes); a NaN output passes the gradient for ReLU (torch's
threshold_backward) and scales it otherwise (torch's leaky_relu_backward).

Kernels take the slope as a `negative_slope: tl.float64` argument so that float64 sees the exact
value (a plain float argument would be fp32); these helpers round it to the type they compute in
with tl.full, which is exact under the interpreter too, as torch rounds it to the tensor's dtype.
"""
import triton
import triton.language as tl


@triton.jit
def leaky_relu(y, negative_slope):
    slope = tl.full([], negative_slope, y.dtype)
    relu = tl.where(y != y, y, 0.0)  # slope 0: exact zeros, NaN propagates
    return tl.where(y > 0, y, tl.where(slope != 0, y * slope, relu))


@triton.jit
def leaky_relu_backward(grad, output, negative_slope):
    slope = tl.full([], negative_slope, grad.dtype)
    relu = tl.where(output != output, grad, 0.0)
    return tl.where(output > 0, grad, tl.where(slope != 0, grad * slope, relu))
