// 2-D convolution: parameters shared by every implementation (CPU reference, CUDA, and mirrored by
// triton_kernels/conv2d.py). Semantics are torch.nn.functional.conv2d's, plus a fused epilogue:
//   output = act(conv(input, weight) + bias + residual)
//
// Layouts: input, output (and residual / grad tensors) are contiguous NCHW, or NHWC (torch's
// channels_last) when `channels_last` is set. The weight (K, C/groups, R, S) follows the same flag:
// KCRS when NCHW, KRSC (channels_last of a 4-D weight) when NHWC, so that the GEMM reduction
// dimension is contiguous in both operands. Bias is (K,) in the input dtype.
//
// Padding: pad_h / pad_w are the top / left padding and may be negative (the Winograd dgrad uses
// 2 - pad). The bottom / right padding is implied by out_h / out_w, so torch's asymmetric
// padding="same" needs nothing special: any input tap outside [0, in_h) x [0, in_w) reads zero.
//   in_row(oh, r) = oh * stride_h - pad_h + r * dilation_h   (likewise for columns)
#pragma once

#include "dlk/activation.h"
#include "dlk/common.h"

namespace dlk {

struct Conv2dParams {
  int64_t batch = 0;
  int64_t in_channels = 0, in_h = 0, in_w = 0;    // C, H, W
  int64_t out_channels = 0, out_h = 0, out_w = 0;  // K, P, Q
  int kernel_h = 1, kernel_w = 1;                   // R, S
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;  // top, left; may be negative
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;  // C and K are multiples of groups; each group maps C/groups -> K/groups channels
  bool channels_last = false;
  // fp32 only: the GEMMs may use TF32 tensor cores (torch.backends.cudnn.allow_tf32). Ignored by the
  // CPU reference, which is always exact.
  bool allow_tf32 = false;
};

// output = act(conv(input, weight) + bias + residual); bias, residual nullable; act = identity, or
// LeakyReLU(negative_slope) when activation is set (slope 0: ReLU; dlk/activation.h).
struct Conv2dFwdParams : Conv2dParams {
  const void* input = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;      // (K,) or null
  const void* residual = nullptr;  // like output, or null
  void* output = nullptr;
  bool activation = false;
  double negative_slope = 0;
};

// grad_input = conv_transpose(grad_output, weight): the data gradient ("dgrad"). Writes every
// element of grad_input (no zero-fill needed beforehand).
struct Conv2dDgradParams : Conv2dParams {
  const void* grad_output = nullptr;
  const void* weight = nullptr;
  void* grad_input = nullptr;
};

// grad_weight[k, c, r, s] = sum over n, p, q of grad_output[n, k, p, q] * input[n, g*C/G + c, in_row, in_col]:
// the weight gradient ("wgrad"), accumulated in fp32 (fp64 for double) and stored in the weight dtype
// and layout. Writes every element of grad_weight.
struct Conv2dWgradParams : Conv2dParams {
  const void* grad_output = nullptr;
  const void* input = nullptr;
  void* grad_weight = nullptr;
};

// Spatial output size along one axis for symmetric padding (the binding receives out_h / out_w
// explicitly, so this is a convenience for callers and tests).
DLK_HOST_DEVICE int64_t conv_out_size(int64_t in, int kernel, int stride, int pad_begin, int pad_end,
                                      int dilation) {
  return (in + pad_begin + pad_end - int64_t(dilation) * (kernel - 1) - 1) / stride + 1;
}

// Offset of element (n, c, h, w) of a contiguous NCHW or NHWC tensor with C channels, hh x ww planes.
DLK_HOST_DEVICE int64_t conv_offset(int64_t n, int64_t c, int64_t h, int64_t w, int64_t channels, int64_t hh,
                                    int64_t ww, bool channels_last) {
  return channels_last ? ((n * hh + h) * ww + w) * channels + c : ((n * channels + c) * hh + h) * ww + w;
}

// Offset of weight element (k, c, r, s), c within the group (C/groups channels): KCRS or KRSC.
DLK_HOST_DEVICE int64_t conv_weight_offset(int64_t k, int64_t c, int r, int s, int64_t group_channels, int kh,
                                           int kw, bool channels_last) {
  return channels_last ? ((k * kh + r) * kw + s) * group_channels + c : ((k * group_channels + c) * kh + r) * kw + s;
}

}  // namespace dlk
