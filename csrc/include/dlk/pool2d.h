// 2-D pooling: parameters and window math shared by every implementation (CPU reference, CUDA).
// The Triton kernels in triton_kernels/pool2d.py mirror these formulas; they follow ATen's
// definitions exactly so that values, indices and tie-breaking match torch.
#pragma once

#include "dlk/common.h"

namespace dlk {

// What a pooling window computes: its maximum, its average, or adaptive average pooling.
enum class PoolMode : int { kMax = 0, kAvg = 1, kAdaptiveAvg = 2 };

// Geometry of one pooling call. Input and output tensors are contiguous in the same layout:
// NCHW, or NHWC (torch's channels_last) when `channels_last` is set.
struct Pool2dParams {
  int64_t batch = 0, channels = 0;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  int kernel_h = 1, kernel_w = 1;      // unused by kAdaptiveAvg
  int stride_h = 1, stride_w = 1;      // unused by kAdaptiveAvg
  int pad_h = 0, pad_w = 0;            // unused by kAdaptiveAvg
  int dilation_h = 1, dilation_w = 1;  // kMax only
  PoolMode mode = PoolMode::kMax;
  bool count_include_pad = true;  // kAvg only
  int divisor_override = 0;       // kAvg only; 0 means none
  bool channels_last = false;
};

struct Pool2dFwdParams : Pool2dParams {
  const void* input = nullptr;
  void* output = nullptr;
  int64_t* indices = nullptr;  // kMax only: flat h * in_w + w of the max within its plane; null: not written
};

struct Pool2dBwdParams : Pool2dParams {
  const void* grad_output = nullptr;
  const int64_t* indices = nullptr;  // kMax only
  void* grad_input = nullptr;
};

// Offset of element (n, c, h, w) in a contiguous NCHW or NHWC tensor of spatial size hh x ww.
DLK_HOST_DEVICE int64_t pool_offset(int64_t n, int64_t c, int64_t h, int64_t w, int64_t channels,
                                    int64_t hh, int64_t ww, bool channels_last) {
  return channels_last ? ((n * hh + h) * ww + w) * channels + c : ((n * channels + c) * hh + h) * ww + w;
}

// Input rows/cols covered by one output position along one axis. Iterate i = begin; i < end;
// i += step. `count` is the divisor contribution for average pooling along this axis.
struct PoolSpan {
  int64_t begin, end, step, count;
};

// Max pooling (ATen max_pool2d): window starts at o*stride - pad, taps every `dilation`, clipped
// to the input; taps that fall into padding are skipped, never read.
DLK_HOST_DEVICE PoolSpan max_pool_span(int64_t o, int64_t in, int kernel, int stride, int pad,
                                       int dilation) {
  int64_t begin = o * stride - pad;
  int64_t end = begin + int64_t(kernel - 1) * dilation + 1;
  if (end > in) end = in;
  while (begin < 0) begin += dilation;
  return {begin, end, dilation, 0};
}

// Average pooling (ATen avg_pool2d): the divisor counts padding (up to in + pad) unless
// count_include_pad is false, in which case it counts only real elements.
DLK_HOST_DEVICE PoolSpan avg_pool_span(int64_t o, int64_t in, int kernel, int stride, int pad,
                                       bool count_include_pad) {
  int64_t begin = o * stride - pad;
  int64_t end = begin + kernel;
  if (end > in + pad) end = in + pad;
  int64_t padded_count = end - begin;
  if (begin < 0) begin = 0;
  if (end > in) end = in;
  return {begin, end, 1, count_include_pad ? padded_count : (end > begin ? end - begin : 0)};
}

// Adaptive average pooling (ATen): window [floor(o*in/out), ceil((o+1)*in/out)).
DLK_HOST_DEVICE PoolSpan adaptive_pool_span(int64_t o, int64_t in, int64_t out) {
  int64_t begin = (o * in) / out;
  int64_t end = ((o + 1) * in + out - 1) / out;
  return {begin, end, 1, end - begin};
}

// Range [first, last) of outputs along one axis whose window may contain input position i.
// Used by the gather-style backward kernels (deterministic, no atomics); callers still check
// membership (max: the saved index; avg/adaptive: the span) before accumulating.
DLK_HOST_DEVICE void pool_output_range(int64_t i, int64_t in, int64_t out, int kernel, int stride,
                                       int pad, int dilation, PoolMode mode, int64_t* first,
                                       int64_t* last) {
  if (mode == PoolMode::kAdaptiveAvg) {
    *first = (i * out) / in;
    *last = ((i + 1) * out + in - 1) / in;
    if (*last > out) *last = out;
    return;
  }
  const int64_t extent = int64_t(kernel - 1) * (mode == PoolMode::kMax ? dilation : 1) + 1;
  const int64_t padded = i + pad;
  *first = padded < extent ? 0 : (padded - extent) / stride + 1;
  *last = padded / stride + 1;
  if (*last > out) *last = out;
}

}  // namespace dlk
