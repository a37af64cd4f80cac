// conv2d family of libdlk_cpu.so: the C ABI of conv2d_api.h over the C++ reference (csrc/cpu/conv2d.h).
#include "../cpu/conv2d.h"

#include "conv2d_api.h"
#include "conv2d_params.h"

using namespace dlk;
using namespace dlk::capi;

DLK_API int dlk_conv2d_forward_cpu(DLK_CONV2D_FORWARD_PARAMS) {
  constexpr const char* what = "conv2d_forward (cpu)";
  const Conv2dFwdParams p = conv2d_forward_params(input, weight, bias, residual, output, DLK_CONV2D_GEOMETRY_ARGS,
                                                  activation, negative_slope, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  if (const int status = check_activation(what, p.activation, p.negative_slope)) return status;
  return guarded(what, [&] { return conv2d_forward_cpu(p, DType(dtype)); });
}

DLK_API int dlk_conv2d_backward_input_cpu(DLK_CONV2D_BACKWARD_INPUT_PARAMS) {
  constexpr const char* what = "conv2d_backward_input (cpu)";
  const Conv2dDgradParams p =
      conv2d_backward_input_params(grad_output, weight, grad_input, DLK_CONV2D_GEOMETRY_ARGS, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  return guarded(what, [&] { return conv2d_backward_input_cpu(p, DType(dtype)); });
}

DLK_API int dlk_conv2d_backward_weight_cpu(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS) {
  constexpr const char* what = "conv2d_backward_weight (cpu)";
  const Conv2dWgradParams p =
      conv2d_backward_weight_params(grad_output, input, grad_weight, DLK_CONV2D_GEOMETRY_ARGS, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  return guarded(what, [&] { return conv2d_backward_weight_cpu(p, DType(dtype)); });
}

DLK_API int dlk_conv2d_winograd_transform_weight_cpu(DLK_WINOGRAD_TRANSFORM_WEIGHT_PARAMS) {
  constexpr const char* what = "winograd_transform_weight (cpu)";
  const WinogradWeightParams p =
      winograd_transform_weight_params(weight, transformed, out_channels, in_channels, tile, channels_last, dtype);
  if (const int status = check_winograd_transform_weight(what, p, dtype)) return status;
  return guarded(what, [&] { return winograd_transform_weight_cpu(p, DType(dtype)); });
}

DLK_API int dlk_conv2d_winograd_cpu(DLK_CONV2D_WINOGRAD_PARAMS) {
  constexpr const char* what = "conv2d_winograd (cpu)";
  const WinogradFwdParams p =
      conv2d_winograd_params(input, transformed_weight, bias, residual, output, batch, in_channels, in_h, in_w,
                             out_channels, out_h, out_w, pad_h, pad_w, tile, channels_last, allow_tf32, activation,
                             negative_slope, dtype);
  if (const int status = check_conv2d_winograd(what, p, dtype)) return status;
  return guarded(what, [&] { return conv2d_winograd_cpu(p, DType(dtype)); });
}
