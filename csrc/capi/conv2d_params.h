// Flat C arguments -> the conv2d params structs, shared by conv2d_cpu.cpp and conv2d_cuda.cpp so
// that both libraries read an argument list the same way. The checks are the cheap ones a kernel's
// indexing relies on (the Python caller checks tensors, shapes and dtypes before this).
#pragma once

#include <string>

#include "common.h"
#include "conv2d_api.h"
#include "dlk/conv2d.h"
#include "dlk/winograd.h"

namespace dlk::capi {

inline void set_conv2d_geometry(Conv2dParams& p, DLK_CONV2D_GEOMETRY_PARAMS) {
  p.batch = batch;
  p.in_channels = in_channels; p.in_h = in_h; p.in_w = in_w;
  p.out_channels = out_channels; p.out_h = out_h; p.out_w = out_w;
  p.kernel_h = kernel_h; p.kernel_w = kernel_w;
  p.stride_h = stride_h; p.stride_w = stride_w;
  p.pad_h = pad_h; p.pad_w = pad_w;
  p.dilation_h = dilation_h; p.dilation_w = dilation_w;
  p.groups = groups;
  p.channels_last = channels_last != 0;
  p.allow_tf32 = allow_tf32 != 0;
}

// DLK_OK, or the failure code with "<what>: <why>" as the last error.
inline int check_conv2d(const char* what, const Conv2dParams& p, int dtype) {
  if (!valid_dtype(dtype)) {
    set_last_error(std::string(what) + ": unknown dtype code " + std::to_string(dtype));
    return DLK_ERR_UNSUPPORTED_DTYPE;
  }
  if (p.batch < 0 || p.in_channels < 0 || p.in_h < 0 || p.in_w < 0 || p.out_channels < 0 || p.kernel_h < 0 ||
      p.kernel_w < 0)
    return invalid_argument(what, "sizes must not be negative");
  if (p.out_h < 1 || p.out_w < 1) return invalid_argument(what, "output size must be positive");
  if (p.stride_h < 1 || p.stride_w < 1 || p.dilation_h < 1 || p.dilation_w < 1)
    return invalid_argument(what, "stride and dilation must be positive");
  if (p.groups < 1 || p.in_channels % p.groups != 0 || p.out_channels % p.groups != 0)
    return invalid_argument(what, "groups must be positive and divide the input and output channels");
  return DLK_OK;
}

inline Conv2dFwdParams conv2d_forward_params(DLK_CONV2D_FORWARD_PARAMS) {
  (void)dtype;
  Conv2dFwdParams p;
  set_conv2d_geometry(p, DLK_CONV2D_GEOMETRY_ARGS);
  p.input = input;
  p.weight = weight;
  p.bias = bias;
  p.residual = residual;
  p.output = output;
  p.activation = activation != 0;
  p.negative_slope = negative_slope;
  return p;
}

inline Conv2dDgradParams conv2d_backward_input_params(DLK_CONV2D_BACKWARD_INPUT_PARAMS) {
  (void)dtype;
  Conv2dDgradParams p;
  set_conv2d_geometry(p, DLK_CONV2D_GEOMETRY_ARGS);
  p.grad_output = grad_output;
  p.weight = weight;
  p.grad_input = grad_input;
  return p;
}

inline Conv2dWgradParams conv2d_backward_weight_params(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS) {
  (void)dtype;
  Conv2dWgradParams p;
  set_conv2d_geometry(p, DLK_CONV2D_GEOMETRY_ARGS);
  p.grad_output = grad_output;
  p.input = input;
  p.grad_weight = grad_weight;
  return p;
}

inline int check_winograd_tile(const char* what, int tile, int dtype) {
  if (!valid_dtype(dtype)) {
    set_last_error(std::string(what) + ": unknown dtype code " + std::to_string(dtype));
    return DLK_ERR_UNSUPPORTED_DTYPE;
  }
  if (tile != 2 && tile != 4)
    return invalid_argument(what, "Winograd tile must be 2 or 4, got " + std::to_string(tile));
  return DLK_OK;
}

inline WinogradWeightParams winograd_transform_weight_params(DLK_WINOGRAD_TRANSFORM_WEIGHT_PARAMS) {
  (void)dtype;
  WinogradWeightParams p;
  p.out_channels = out_channels;
  p.in_channels = in_channels;
  p.tile = tile;
  p.channels_last = channels_last != 0;
  p.weight = weight;
  p.transformed = transformed;
  return p;
}

inline int check_winograd_transform_weight(const char* what, const WinogradWeightParams& p, int dtype) {
  if (const int status = check_winograd_tile(what, p.tile, dtype)) return status;
  if (p.out_channels < 0 || p.in_channels < 0) return invalid_argument(what, "sizes must not be negative");
  return DLK_OK;
}

// The Winograd forward as a 3x3 convolution with stride 1, dilation 1 and groups 1.
inline WinogradFwdParams conv2d_winograd_params(DLK_CONV2D_WINOGRAD_PARAMS) {
  (void)dtype;
  WinogradFwdParams p;
  set_conv2d_geometry(p, batch, in_channels, in_h, in_w, out_channels, out_h, out_w, /*kernel_h=*/3, /*kernel_w=*/3,
                      /*stride_h=*/1, /*stride_w=*/1, pad_h, pad_w, /*dilation_h=*/1, /*dilation_w=*/1,
                      /*groups=*/1, channels_last, allow_tf32);
  p.tile = tile;
  p.input = input;
  p.transformed_weight = transformed_weight;
  p.bias = bias;
  p.residual = residual;
  p.output = output;
  p.activation = activation != 0;
  p.negative_slope = negative_slope;
  return p;
}

inline int check_conv2d_winograd(const char* what, const WinogradFwdParams& p, int dtype) {
  if (const int status = check_winograd_tile(what, p.tile, dtype)) return status;
  if (const int status = check_activation(what, p.activation, p.negative_slope)) return status;
  return check_conv2d(what, p, dtype);
}

}  // namespace dlk::capi
