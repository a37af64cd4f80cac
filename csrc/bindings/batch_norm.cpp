// Schemas of the low-level fused BatchNorm ops (namespace dlk_C) and their CPU implementation.
// The CUDA implementation is registered from batch_norm_cuda.cpp when the CUDA build is enabled.
#include "batch_norm_binding.h"

#include "../cpu/batch_norm.h"

namespace dlk::binding {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> stats_cpu(const at::Tensor& input, const OptionalTensor& running_mean,
                                             const OptionalTensor& running_var, double momentum, double eps,
                                             bool channels_last) {
  auto [mean, invstd, params] = prepare_batch_norm_stats(input, running_mean, running_var, momentum, eps, channels_last);
  check_status(batch_norm_stats_cpu(params, to_dlk_dtype(input)), "batch_norm_stats (cpu)");
  return {mean, invstd};
}

at::Tensor apply_cpu(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& invstd,
                     const OptionalTensor& weight, const OptionalTensor& bias, const OptionalTensor& residual, bool relu,
                     bool channels_last) {
  auto [output, params] = prepare_batch_norm_apply(input, mean, invstd, weight, bias, residual, relu, channels_last);
  check_status(batch_norm_apply_cpu(params, to_dlk_dtype(input)), "batch_norm_apply (cpu)");
  return output;
}

std::tuple<at::Tensor, at::Tensor> backward_reduce_cpu(const at::Tensor& grad_output, const OptionalTensor& output,
                                                       const at::Tensor& input, const at::Tensor& mean,
                                                       const at::Tensor& invstd, bool relu, bool channels_last) {
  auto [sum_dy, sum_dy_xhat, params] =
      prepare_batch_norm_backward_reduce(grad_output, output, input, mean, invstd, relu, channels_last);
  check_status(batch_norm_backward_reduce_cpu(params, to_dlk_dtype(input)), "batch_norm_backward_reduce (cpu)");
  return {sum_dy, sum_dy_xhat};
}

std::tuple<at::Tensor, at::Tensor> backward_apply_cpu(const at::Tensor& grad_output, const OptionalTensor& output,
                                                      const at::Tensor& input, const at::Tensor& mean,
                                                      const at::Tensor& invstd, const OptionalTensor& weight,
                                                      const at::Tensor& sum_dy, const at::Tensor& sum_dy_xhat,
                                                      bool training, bool relu, bool want_grad_residual,
                                                      bool channels_last) {
  auto [grad_input, grad_residual, params] = prepare_batch_norm_backward_apply(
      grad_output, output, input, mean, invstd, weight, sum_dy, sum_dy_xhat, training, relu, want_grad_residual,
      channels_last);
  check_status(batch_norm_backward_apply_cpu(params, to_dlk_dtype(input)), "batch_norm_backward_apply (cpu)");
  return {grad_input, grad_residual};
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_FRAGMENT(dlk_C, m) {
  m.def("batch_norm_stats(Tensor input, Tensor(a!)? running_mean, Tensor(b!)? running_var, float momentum, "
        "float eps, bool channels_last) -> (Tensor, Tensor)");
  m.def("batch_norm_apply(Tensor input, Tensor mean, Tensor invstd, Tensor? weight, Tensor? bias, "
        "Tensor? residual, bool relu, bool channels_last) -> Tensor");
  m.def("batch_norm_backward_reduce(Tensor grad_output, Tensor? output, Tensor input, Tensor mean, "
        "Tensor invstd, bool relu, bool channels_last) -> (Tensor, Tensor)");
  m.def("batch_norm_backward_apply(Tensor grad_output, Tensor? output, Tensor input, Tensor mean, "
        "Tensor invstd, Tensor? weight, Tensor sum_dy, Tensor sum_dy_xhat, bool training, bool relu, "
        "bool want_grad_residual, bool channels_last) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dlk_C, CPU, m) {
  m.impl("batch_norm_stats", &dlk::binding::stats_cpu);
  m.impl("batch_norm_apply", &dlk::binding::apply_cpu);
  m.impl("batch_norm_backward_reduce", &dlk::binding::backward_reduce_cpu);
  m.impl("batch_norm_backward_apply", &dlk::binding::backward_apply_cpu);
}
