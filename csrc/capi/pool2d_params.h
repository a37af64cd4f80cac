// Flat C arguments -> dlk::Pool2d*Params, shared by pool2d_cpu.cpp and pool2d_cuda.cpp.
// The argument lists are declared once here (macros) so that the CPU and CUDA exports cannot drift.
#pragma once

#include <cstdint>
#include <string>

#include "common.h"
#include "dlk/pool2d.h"

// dtype: dlk::DType; mode: dlk::PoolMode; flags are 0/1; divisor_override 0 means none.
#define DLK_POOL2D_GEOMETRY_ARGS                                                                    \
  int dtype, int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, \
      int mode, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,  \
      int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int count_include_pad, int64_t divisor_override, \
      int channels_last
#define DLK_POOL2D_GEOMETRY_NAMES                                                                        \
  dtype, batch, channels, in_h, in_w, out_h, out_w, mode, kernel_h, kernel_w, stride_h, stride_w, pad_h, \
      pad_w, dilation_h, dilation_w, count_include_pad, divisor_override, channels_last

// Forward: input (N, C, in_h, in_w) -> output (N, C, out_h, out_w) and, for max, int64 indices unless
// `indices` is null (no gradient will be needed: the kernels then skip writing them).
#define DLK_POOL2D_FORWARD_ARGS const void *input, void *output, int64_t *indices, DLK_POOL2D_GEOMETRY_ARGS
// Backward: grad_output (N, C, out_h, out_w) [+ indices for max] -> grad_input (N, C, in_h, in_w).
#define DLK_POOL2D_BACKWARD_ARGS \
  const void *grad_output, const int64_t *indices, void *grad_input, DLK_POOL2D_GEOMETRY_ARGS

namespace dlk::capi {

// Fills the geometry; on a bad argument sets the last error and returns false.
inline bool fill_pool2d_geometry(Pool2dParams& p, const char* what, DLK_POOL2D_GEOMETRY_ARGS) {
  if (!valid_dtype(dtype)) return invalid_argument(what, "unknown dtype " + std::to_string(dtype)), false;
  if (mode < 0 || mode > 2) return invalid_argument(what, "mode must be 0, 1 or 2, got " + std::to_string(mode)), false;
  const int64_t small[] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                           divisor_override};
  for (int64_t v : small) {
    if (v < INT32_MIN || v > INT32_MAX) {
      return invalid_argument(what, "kernel, stride, padding, dilation and divisor must fit in 32 bits"), false;
    }
  }
  if (batch < 0 || channels < 0 || in_h < 0 || in_w < 0 || out_h < 0 || out_w < 0) {
    return invalid_argument(what, "sizes must be non-negative"), false;
  }
  p.batch = batch; p.channels = channels;
  p.in_h = in_h; p.in_w = in_w; p.out_h = out_h; p.out_w = out_w;
  p.mode = static_cast<PoolMode>(mode);
  p.kernel_h = int(kernel_h); p.kernel_w = int(kernel_w);
  p.stride_h = int(stride_h); p.stride_w = int(stride_w);
  p.pad_h = int(pad_h); p.pad_w = int(pad_w);
  p.dilation_h = int(dilation_h); p.dilation_w = int(dilation_w);
  p.count_include_pad = count_include_pad != 0;
  p.divisor_override = int(divisor_override);
  p.channels_last = channels_last != 0;
  return true;
}

}  // namespace dlk::capi
