// Schemas of the low-level pooling ops (namespace dlk_C) and their CPU implementation.
// The CUDA implementation is registered from pool2d_cuda.cpp when the CUDA build is enabled.
#include "pool2d_binding.h"

#include "../cpu/pool2d.h"

namespace dlk::binding {
namespace {

std::tuple<at::Tensor, at::Tensor> pool2d_forward_cpu_op(
    const at::Tensor& input, int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, at::IntArrayRef output_size, bool count_include_pad,
    int64_t divisor_override, bool channels_last) {
  auto [output, indices, params] = prepare_pool2d_forward(input, mode, kernel, stride, padding, dilation,
                                                          output_size, count_include_pad, divisor_override,
                                                          channels_last);
  check_status(pool2d_forward_cpu(params, to_dlk_dtype(input)), "pool2d_forward (cpu)");
  return {output, indices};
}

at::Tensor pool2d_backward_cpu_op(const at::Tensor& grad_output, const at::Tensor& indices, int64_t mode,
                                  at::IntArrayRef input_size, at::IntArrayRef kernel, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, bool count_include_pad,
                                  int64_t divisor_override, bool channels_last) {
  auto [grad_input, params] = prepare_pool2d_backward(grad_output, indices, mode, input_size, kernel, stride,
                                                      padding, dilation, count_include_pad, divisor_override,
                                                      channels_last);
  check_status(pool2d_backward_cpu(params, to_dlk_dtype(grad_output)), "pool2d_backward (cpu)");
  return grad_input;
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_FRAGMENT(dlk_C, m) {
  m.def(
      "pool2d_forward(Tensor input, int mode, int[] kernel, int[] stride, int[] padding, int[] dilation, "
      "int[] output_size, bool count_include_pad, int divisor_override, bool channels_last) -> (Tensor, Tensor)");
  m.def(
      "pool2d_backward(Tensor grad_output, Tensor indices, int mode, int[] input_size, int[] kernel, "
      "int[] stride, int[] padding, int[] dilation, bool count_include_pad, int divisor_override, "
      "bool channels_last) -> Tensor");
}

TORCH_LIBRARY_IMPL(dlk_C, CPU, m) {
  m.impl("pool2d_forward", &dlk::binding::pool2d_forward_cpu_op);
  m.impl("pool2d_backward", &dlk::binding::pool2d_backward_cpu_op);
}
