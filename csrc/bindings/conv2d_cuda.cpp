// CUDA implementation of the dlk_C convolution ops (schemas in conv2d.cpp). Thin: tensors -> params
// via conv2d_binding.h, a workspace where a launcher asks for one, then the torch-free launchers in
// csrc/cuda/conv2d*.cu on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "conv2d_binding.h"

#include "../cuda/conv2d.cuh"
#include "../cuda/conv2d_winograd.cuh"

namespace dlk::binding {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), "dlkernels ", op, " (cuda): ", name, " must be a CUDA tensor");
}

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight, const OptionalTensor& bias,
                        const OptionalTensor& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, int64_t groups, at::IntArrayRef output_size, bool relu,
                        bool channels_last, bool allow_tf32) {
  check_cuda(input, "conv2d_forward", "input");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [output, params] = prepare_conv2d_forward(input, weight, bias, residual, stride, padding, dilation, groups,
                                                 output_size, relu, channels_last, allow_tf32);
  check_status(conv2d_forward_cuda(params, to_dlk_dtype(input), at::cuda::getCurrentCUDAStream()),
               "conv2d_forward (cuda)");
  return output;
}

at::Tensor backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, bool channels_last, bool allow_tf32) {
  check_cuda(grad_output, "conv2d_backward_input", "grad_output");
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  auto [grad_input, params] = prepare_conv2d_backward_input(grad_output, weight, input_size, stride, padding,
                                                            dilation, groups, channels_last, allow_tf32);
  check_status(conv2d_backward_input_cuda(params, to_dlk_dtype(grad_output), at::cuda::getCurrentCUDAStream()),
               "conv2d_backward_input (cuda)");
  return grad_input;
}

at::Tensor backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, bool channels_last, bool allow_tf32) {
  check_cuda(input, "conv2d_backward_weight", "input");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [grad_weight, params] = prepare_conv2d_backward_weight(grad_output, input, kernel_size, stride, padding,
                                                              dilation, groups, channels_last, allow_tf32);
  const DType dtype = to_dlk_dtype(input);
  const Workspace ws = make_workspace(input, conv2d_backward_weight_workspace_bytes(params, dtype));
  check_status(conv2d_backward_weight_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "conv2d_backward_weight (cuda)");
  return grad_weight;
}

at::Tensor winograd_transform_weight_cuda_op(const at::Tensor& weight, int64_t tile, bool channels_last) {
  check_cuda(weight, "winograd_transform_weight", "weight");
  const c10::cuda::CUDAGuard device_guard(weight.device());
  auto [transformed, params] = prepare_winograd_transform_weight(weight, tile, channels_last);
  check_status(winograd_transform_weight_cuda(params, to_dlk_dtype(weight), at::cuda::getCurrentCUDAStream()),
               "winograd_transform_weight (cuda)");
  return transformed;
}

at::Tensor winograd_cuda(const at::Tensor& input, const at::Tensor& transformed_weight, const OptionalTensor& bias,
                         const OptionalTensor& residual, at::IntArrayRef padding, at::IntArrayRef output_size,
                         int64_t tile, bool relu, bool channels_last, bool allow_tf32) {
  check_cuda(input, "conv2d_winograd", "input");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [output, params] = prepare_conv2d_winograd(input, transformed_weight, bias, residual, padding, output_size,
                                                  tile, relu, channels_last, allow_tf32);
  const DType dtype = to_dlk_dtype(input);
  const Workspace ws = make_workspace(input, conv2d_winograd_workspace_bytes(params, dtype));
  check_status(conv2d_winograd_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "conv2d_winograd (cuda)");
  return output;
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_IMPL(dlk_C, CUDA, m) {
  m.impl("conv2d_forward", &dlk::binding::forward_cuda);
  m.impl("conv2d_backward_input", &dlk::binding::backward_input_cuda);
  m.impl("conv2d_backward_weight", &dlk::binding::backward_weight_cuda);
  m.impl("winograd_transform_weight", &dlk::binding::winograd_transform_weight_cuda_op);
  m.impl("conv2d_winograd", &dlk::binding::winograd_cuda);
}
