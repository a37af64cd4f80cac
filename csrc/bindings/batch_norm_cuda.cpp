// CUDA implementation of the dlk_C fused BatchNorm ops (schemas in batch_norm.cpp). Thin: tensors ->
// params via batch_norm_binding.h, a workspace for the reductions' per-block partials, then the
// torch-free launchers in csrc/cuda/batch_norm.cu on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "batch_norm_binding.h"

#include "../cuda/batch_norm.cuh"

namespace dlk::binding {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> stats_cuda(const at::Tensor& input, const OptionalTensor& running_mean,
                                              const OptionalTensor& running_var, double momentum, double eps,
                                              bool channels_last) {
  TORCH_CHECK(input.is_cuda(), "dlkernels batch_norm_stats (cuda): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [mean, invstd, params] = prepare_batch_norm_stats(input, running_mean, running_var, momentum, eps, channels_last);
  const DType dtype = to_dlk_dtype(input);
  // Queried after the device guard and with the filled params: the size depends on both.
  const Workspace ws = make_workspace(input, batch_norm_stats_workspace_bytes(params, dtype));
  check_status(batch_norm_stats_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "batch_norm_stats (cuda)");
  return {mean, invstd};
}

at::Tensor apply_cuda(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& invstd,
                      const OptionalTensor& weight, const OptionalTensor& bias, const OptionalTensor& residual,
                      bool relu, bool channels_last) {
  TORCH_CHECK(input.is_cuda(), "dlkernels batch_norm_apply (cuda): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [output, params] = prepare_batch_norm_apply(input, mean, invstd, weight, bias, residual, relu, channels_last);
  check_status(batch_norm_apply_cuda(params, to_dlk_dtype(input), at::cuda::getCurrentCUDAStream()),
               "batch_norm_apply (cuda)");
  return output;
}

std::tuple<at::Tensor, at::Tensor> backward_reduce_cuda(const at::Tensor& grad_output, const OptionalTensor& output,
                                                        const at::Tensor& input, const at::Tensor& mean,
                                                        const at::Tensor& invstd, bool relu, bool channels_last) {
  TORCH_CHECK(input.is_cuda(), "dlkernels batch_norm_backward_reduce (cuda): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [sum_dy, sum_dy_xhat, params] =
      prepare_batch_norm_backward_reduce(grad_output, output, input, mean, invstd, relu, channels_last);
  const DType dtype = to_dlk_dtype(input);
  const Workspace ws = make_workspace(input, batch_norm_backward_reduce_workspace_bytes(params, dtype));
  check_status(batch_norm_backward_reduce_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "batch_norm_backward_reduce (cuda)");
  return {sum_dy, sum_dy_xhat};
}

std::tuple<at::Tensor, at::Tensor> backward_apply_cuda(const at::Tensor& grad_output, const OptionalTensor& output,
                                                       const at::Tensor& input, const at::Tensor& mean,
                                                       const at::Tensor& invstd, const OptionalTensor& weight,
                                                       const at::Tensor& sum_dy, const at::Tensor& sum_dy_xhat,
                                                       bool training, bool relu, bool want_grad_residual,
                                                       bool channels_last) {
  TORCH_CHECK(input.is_cuda(), "dlkernels batch_norm_backward_apply (cuda): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(input.device());
  auto [grad_input, grad_residual, params] = prepare_batch_norm_backward_apply(
      grad_output, output, input, mean, invstd, weight, sum_dy, sum_dy_xhat, training, relu, want_grad_residual,
      channels_last);
  check_status(batch_norm_backward_apply_cuda(params, to_dlk_dtype(input), at::cuda::getCurrentCUDAStream()),
               "batch_norm_backward_apply (cuda)");
  return {grad_input, grad_residual};
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_IMPL(dlk_C, CUDA, m) {
  m.impl("batch_norm_stats", &dlk::binding::stats_cuda);
  m.impl("batch_norm_apply", &dlk::binding::apply_cuda);
  m.impl("batch_norm_backward_reduce", &dlk::binding::backward_reduce_cuda);
  m.impl("batch_norm_backward_apply", &dlk::binding::backward_apply_cuda);
}
