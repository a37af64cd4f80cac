"""The Winograd entries of dlkernels._native.conv2d under the family name the ops ask for
(`implementation("conv2d_winograd", backend)`), as dlkernels/triton_kernels/conv2d_winograd.py is for Triton."""
from dlkernels._native.conv2d import conv2d_winograd, winograd_transform_weight

__all__ = ["conv2d_winograd", "winograd_transform_weight"]
