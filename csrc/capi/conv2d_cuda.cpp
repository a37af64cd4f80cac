// conv2d family of libdlk_cuda.so: the C ABI of conv2d_api.h over the CUDA launchers
// (csrc/cuda/conv2d.cuh, conv2d_winograd.cuh). The caller makes the tensors' device current, passes
// its stream and provides the workspace sized by the _workspace_bytes query.
#include "../cuda/conv2d.cuh"
#include "../cuda/conv2d_winograd.cuh"

#include "conv2d_api.h"
#include "conv2d_params.h"

using namespace dlk;
using namespace dlk::capi;

DLK_API int dlk_conv2d_forward_cuda(DLK_CONV2D_FORWARD_PARAMS, void* stream) {
  constexpr const char* what = "conv2d_forward (cuda)";
  const Conv2dFwdParams p = conv2d_forward_params(input, weight, bias, residual, output, DLK_CONV2D_GEOMETRY_ARGS,
                                                  activation, negative_slope, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  if (const int status = check_activation(what, p.activation, p.negative_slope)) return status;
  return guarded(what, [&] { return conv2d_forward_cuda(p, DType(dtype), static_cast<cudaStream_t>(stream)); });
}

DLK_API int dlk_conv2d_backward_input_cuda(DLK_CONV2D_BACKWARD_INPUT_PARAMS, void* stream) {
  constexpr const char* what = "conv2d_backward_input (cuda)";
  const Conv2dDgradParams p =
      conv2d_backward_input_params(grad_output, weight, grad_input, DLK_CONV2D_GEOMETRY_ARGS, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  return guarded(what,
                 [&] { return conv2d_backward_input_cuda(p, DType(dtype), static_cast<cudaStream_t>(stream)); });
}

DLK_API int dlk_conv2d_backward_weight_workspace_bytes_cuda(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS,
                                                            int64_t* workspace_bytes) {
  constexpr const char* what = "conv2d_backward_weight workspace (cuda)";
  const Conv2dWgradParams p =
      conv2d_backward_weight_params(grad_output, input, grad_weight, DLK_CONV2D_GEOMETRY_ARGS, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(conv2d_backward_weight_workspace_bytes(p, DType(dtype)));
    return Status::kOk;
  });
}

DLK_API int dlk_conv2d_backward_weight_cuda(DLK_CONV2D_BACKWARD_WEIGHT_PARAMS, void* workspace,
                                            int64_t workspace_bytes, void* stream) {
  constexpr const char* what = "conv2d_backward_weight (cuda)";
  const Conv2dWgradParams p =
      conv2d_backward_weight_params(grad_output, input, grad_weight, DLK_CONV2D_GEOMETRY_ARGS, dtype);
  if (const int status = check_conv2d(what, p, dtype)) return status;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return conv2d_backward_weight_cuda(p, DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                                       static_cast<cudaStream_t>(stream));
  });
}

DLK_API int dlk_conv2d_winograd_transform_weight_cuda(DLK_WINOGRAD_TRANSFORM_WEIGHT_PARAMS, void* stream) {
  constexpr const char* what = "winograd_transform_weight (cuda)";
  const WinogradWeightParams p =
      winograd_transform_weight_params(weight, transformed, out_channels, in_channels, tile, channels_last, dtype);
  if (const int status = check_winograd_transform_weight(what, p, dtype)) return status;
  return guarded(what,
                 [&] { return winograd_transform_weight_cuda(p, DType(dtype), static_cast<cudaStream_t>(stream)); });
}

DLK_API int dlk_conv2d_winograd_workspace_bytes_cuda(DLK_CONV2D_WINOGRAD_PARAMS, int64_t* workspace_bytes) {
  constexpr const char* what = "conv2d_winograd workspace (cuda)";
  const WinogradFwdParams p =
      conv2d_winograd_params(input, transformed_weight, bias, residual, output, batch, in_channels, in_h, in_w,
                             out_channels, out_h, out_w, pad_h, pad_w, tile, channels_last, allow_tf32, activation,
                             negative_slope, dtype);
  if (const int status = check_conv2d_winograd(what, p, dtype)) return status;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(conv2d_winograd_workspace_bytes(p, DType(dtype)));
    return Status::kOk;
  });
}

DLK_API int dlk_conv2d_winograd_cuda(DLK_CONV2D_WINOGRAD_PARAMS, void* workspace, int64_t workspace_bytes,
                                     void* stream) {
  constexpr const char* what = "conv2d_winograd (cuda)";
  const WinogradFwdParams p =
      conv2d_winograd_params(input, transformed_weight, bias, residual, output, batch, in_channels, in_h, in_w,
                             out_channels, out_h, out_w, pad_h, pad_w, tile, channels_last, allow_tf32, activation,
                             negative_slope, dtype);
  if (const int status = check_conv2d_winograd(what, p, dtype)) return status;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return conv2d_winograd_cuda(p, DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                                static_cast<cudaStream_t>(stream));
  });
}
