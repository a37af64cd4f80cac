// CUDA implementation of the dlk_C pooling ops (schemas in pool2d.cpp). Thin: tensors -> params via
// pool2d_binding.h, then the torch-free launchers in csrc/cuda/pool2d.cu on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "pool2d_binding.h"

#include "../cuda/pool2d.cuh"

namespace dlk::binding {
namespace {

std::tuple<at::Tensor, at::Tensor> pool2d_forward_cuda_op(
    const at::Tensor& input, int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, at::IntArrayRef output_size, bool count_include_pad,
    int64_t divisor_override, bool channels_last) {
  TORCH_CHECK(input.is_cuda(), "dlkernels pool2d_forward (cuda): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [output, indices, params] = prepare_pool2d_forward(input, mode, kernel, stride, padding, dilation,
                                                          output_size, count_include_pad, divisor_override,
                                                          channels_last);
  check_status(pool2d_forward_cuda(params, to_dlk_dtype(input), at::cuda::getCurrentCUDAStream()),
               "pool2d_forward (cuda)");
  return {output, indices};
}

at::Tensor pool2d_backward_cuda_op(const at::Tensor& grad_output, const at::Tensor& indices, int64_t mode,
                                   at::IntArrayRef input_size, at::IntArrayRef kernel, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, bool count_include_pad,
                                   int64_t divisor_override, bool channels_last) {
  TORCH_CHECK(grad_output.is_cuda(), "dlkernels pool2d_backward (cuda): grad_output must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  auto [grad_input, params] = prepare_pool2d_backward(grad_output, indices, mode, input_size, kernel, stride,
                                                      padding, dilation, count_include_pad, divisor_override,
                                                      channels_last);
  check_status(pool2d_backward_cuda(params, to_dlk_dtype(grad_output), at::cuda::getCurrentCUDAStream()),
               "pool2d_backward (cuda)");
  return grad_input;
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_IMPL(dlk_C, CUDA, m) {
  m.impl("pool2d_forward", &dlk::binding::pool2d_forward_cuda_op);
  m.impl("pool2d_backward", &dlk::binding::pool2d_backward_cuda_op);
}
