// C ABI of the conv2d family (direct forward, dgrad, wgrad; Winograd weight transform and forward),
// exported by libdlk_cpu.so (_cpu) and libdlk_cuda.so (_cuda). Conventions: csrc/capi/capi.h.
// dlkernels/_native/conv2d.py is the caller: it allocates the outputs, checks the tensors as
// csrc/bindings/conv2d_binding.h did and computes the geometry below; semantics and layouts are
// those of dlk/conv2d.h and dlk/winograd.h.
//
// Names: dlk_conv2d_ + the dlk_C op's name without its "conv2d_" prefix (winograd_transform_weight
// -> dlk_conv2d_winograd_transform_weight_cpu). Argument order: data pointers (in the params
// struct's order), geometry, flags, dtype (dlk::DType as int), then for CUDA the workspace (where the
// entry needs one) and the stream.
#pragma once

#include "capi.h"

// The geometry of dlk::Conv2dParams, in its field order. A macro so that the four direct entries of
// both libraries and their workspace queries cannot drift apart.
#define DLK_CONV2D_GEOMETRY_PARAMS                                                                              \
  int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w, int64_t out_channels, int64_t out_h,          \
      int64_t out_w, int kernel_h, int kernel_w, int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, \
      int dilation_w, int groups, int channels_last, int allow_tf32
#define DLK_CONV2D_GEOMETRY_ARGS                                                                                   \
  batch, in_channels, in_h, in_w, out_channels, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, \
      dilation_h, dilation_w, groups, channels_last, allow_tf32

// output = act(conv(input, weight) + bias + residual); bias and residual nullable; act = identity, or
// LeakyReLU(negative_slope) when activation != 0 (slope 0: ReLU).
#define DLK_CONV2D_FORWARD_PARAMS                                                                            \
  const void *input, const void *weight, const void *bias, const void *residual, void *output,              \
      DLK_CONV2D_GEOMETRY_PARAMS, int activation, double negative_slope, int dtype
#define DLK_CONV2D_BACKWARD_INPUT_PARAMS \
  const void *grad_output, const void *weight, void *grad_input, DLK_CONV2D_GEOMETRY_PARAMS, int dtype
#define DLK_CONV2D_BACKWARD_WEIGHT_PARAMS \
  const void *grad_output, const void *input, void *grad_weight, DLK_CONV2D_GEOMETRY_PARAMS, int dtype
// weight (K, C, 3, 3) -> transformed (alpha*alpha, K, C), alpha = tile + 2.
#define DLK_WINOGRAD_TRANSFORM_WEIGHT_PARAMS \
  const void *weight, void *transformed, int64_t out_channels, int64_t in_channels, int tile, int channels_last, \
      int dtype
// 3x3, stride 1, dilation 1, groups 1: only the sizes and padding travel.
#define DLK_CONV2D_WINOGRAD_PARAMS                                                                              \
  const void *input, const void *transformed_weight, const void *bias, const void *residual, void *output,      \
      int64_t batch, int64_t in_channels, int64_t in_h, int64_t in_w, int64_t out_channels, int64_t out_h,      \
      int64_t out_w, int pad_h, int pad_w, int tile, int channels_last, int allow_tf32, int activation, \
      double negative_slope, int dtype

DLK_API int dlk_conv2d_forward_cpu(DLK_CONV2D_FORWARD_PARAMS);
DLK_API int dlk_conv2d_backward_input_cpu(DLK_CONV2D_BACKWARD_INPUT_PARAMS);
DLK_API int dlk_conv2d_backward_weight_cpu(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS);
DLK_API int dlk_conv2d_winograd_transform_weight_cpu(DLK_WINOGRAD_TRANSFORM_WEIGHT_PARAMS);
DLK_API int dlk_conv2d_winograd_cpu(DLK_CONV2D_WINOGRAD_PARAMS);

DLK_API int dlk_conv2d_forward_cuda(DLK_CONV2D_FORWARD_PARAMS, void* stream);
DLK_API int dlk_conv2d_backward_input_cuda(DLK_CONV2D_BACKWARD_INPUT_PARAMS, void* stream);
// Workspace queries take the launcher's arguments (pointers unused), so that a caller passes the same
// tuple to both, and store the size the launcher needs on the current device in *workspace_bytes.
DLK_API int dlk_conv2d_backward_weight_workspace_bytes_cuda(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS,
                                                            int64_t* workspace_bytes);
DLK_API int dlk_conv2d_backward_weight_cuda(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS, void* workspace,
                                            int64_t workspace_bytes, void* stream);
DLK_API int dlk_conv2d_winograd_transform_weight_cuda(DLK_WINOGRAD_TRANSFORM_WEIGHT_PARAMS, void* stream);
DLK_API int dlk_conv2d_winograd_workspace_bytes_cuda(DLK_CONV2D_WINOGRAD_PARAMS, int64_t* workspace_bytes);
DLK_API int dlk_conv2d_winograd_cuda(DLK_CONV2D_WINOGRAD_PARAMS, void* workspace, int64_t workspace_bytes,
                                     void* stream);
