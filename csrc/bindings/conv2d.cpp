// Schemas of the low-level convolution ops (namespace dlk_C) and their CPU implementation (the C++
// reference in csrc/cpu/conv2d.cpp). The CUDA implementation is registered from conv2d_cuda.cpp.
#include "conv2d_binding.h"

#include "../cpu/conv2d.h"

namespace dlk::binding {
namespace {

at::Tensor conv2d_forward_cpu_op(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, at::IntArrayRef output_size, bool relu, bool channels_last,
                                 bool allow_tf32) {
  auto [output, params] = prepare_conv2d_forward(input, weight, bias, residual, stride, padding, dilation, groups,
                                                 output_size, relu, channels_last, allow_tf32);
  check_status(conv2d_forward_cpu(params, to_dlk_dtype(input)), "conv2d_forward (cpu)");
  return output;
}

at::Tensor conv2d_backward_input_cpu_op(const at::Tensor& grad_output, const at::Tensor& weight,
                                        at::IntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation, int64_t groups, bool channels_last,
                                        bool allow_tf32) {
  auto [grad_input, params] = prepare_conv2d_backward_input(grad_output, weight, input_size, stride, padding,
                                                            dilation, groups, channels_last, allow_tf32);
  check_status(conv2d_backward_input_cpu(params, to_dlk_dtype(grad_output)), "conv2d_backward_input (cpu)");
  return grad_input;
}

at::Tensor conv2d_backward_weight_cpu_op(const at::Tensor& grad_output, const at::Tensor& input,
                                         at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                         at::IntArrayRef dilation, int64_t groups, bool channels_last,
                                         bool allow_tf32) {
  auto [grad_weight, params] = prepare_conv2d_backward_weight(grad_output, input, kernel_size, stride, padding,
                                                              dilation, groups, channels_last, allow_tf32);
  check_status(conv2d_backward_weight_cpu(params, to_dlk_dtype(input)), "conv2d_backward_weight (cpu)");
  return grad_weight;
}

at::Tensor winograd_transform_weight_cpu_op(const at::Tensor& weight, int64_t tile, bool channels_last) {
  auto [transformed, params] = prepare_winograd_transform_weight(weight, tile, channels_last);
  check_status(winograd_transform_weight_cpu(params, to_dlk_dtype(weight)), "winograd_transform_weight (cpu)");
  return transformed;
}

at::Tensor conv2d_winograd_cpu_op(const at::Tensor& input, const at::Tensor& transformed_weight,
                                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                  at::IntArrayRef padding, at::IntArrayRef output_size, int64_t tile, bool relu,
                                  bool channels_last, bool allow_tf32) {
  auto [output, params] = prepare_conv2d_winograd(input, transformed_weight, bias, residual, padding, output_size,
                                                  tile, relu, channels_last, allow_tf32);
  check_status(conv2d_winograd_cpu(params, to_dlk_dtype(input)), "conv2d_winograd (cpu)");
  return output;
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_FRAGMENT(dlk_C, m) {
  m.def(
      "conv2d_forward(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, "
      "int[] dilation, int groups, int[] output_size, bool relu, bool channels_last, bool allow_tf32) -> Tensor");
  m.def(
      "conv2d_backward_input(Tensor grad_output, Tensor weight, int[] input_size, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool channels_last, bool allow_tf32) -> Tensor");
  m.def(
      "conv2d_backward_weight(Tensor grad_output, Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "int[] dilation, int groups, bool channels_last, bool allow_tf32) -> Tensor");
  m.def("winograd_transform_weight(Tensor weight, int tile, bool channels_last) -> Tensor");
  m.def(
      "conv2d_winograd(Tensor input, Tensor transformed_weight, Tensor? bias, Tensor? residual, int[] padding, "
      "int[] output_size, int tile, bool relu, bool channels_last, bool allow_tf32) -> Tensor");
}

TORCH_LIBRARY_IMPL(dlk_C, CPU, m) {
  m.impl("conv2d_forward", &dlk::binding::conv2d_forward_cpu_op);
  m.impl("conv2d_backward_input", &dlk::binding::conv2d_backward_input_cpu_op);
  m.impl("conv2d_backward_weight", &dlk::binding::conv2d_backward_weight_cpu_op);
  m.impl("winograd_transform_weight", &dlk::binding::winograd_transform_weight_cpu_op);
  m.impl("conv2d_winograd", &dlk::binding::conv2d_winograd_cpu_op);
}
