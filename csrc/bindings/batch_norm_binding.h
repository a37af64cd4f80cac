// Tensor -> params plumbing shared by the CPU and CUDA bindings of the fused BatchNorm ops.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "dlk/batch_norm.h"
#include "binding_common.h"

namespace dlk::binding {

inline at::ScalarType stat_dtype_for(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Fills the (N, C, S) geometry and checks that a full-size tensor has the input's shape, dtype and layout.
inline void fill_bn_geometry(BatchNormParams& p, const at::Tensor& input, bool channels_last, bool relu) {
  TORCH_CHECK(input.dim() == 4, "dlkernels batch_norm: input must be 4-D, got ", input.dim(), "-D");
  TORCH_CHECK(input.is_contiguous(memory_format_for(channels_last)),
              "dlkernels batch_norm: input must be contiguous in ", channels_last ? "channels_last" : "NCHW",
              " layout");
  p.batch = input.size(0);
  p.channels = input.size(1);
  p.spatial = input.size(2) * input.size(3);
  p.channels_last = channels_last;
  p.relu = relu;
}

inline void check_like_input(const at::Tensor& t, const at::Tensor& input, const char* name, bool channels_last) {
  TORCH_CHECK(t.sizes() == input.sizes() && t.scalar_type() == input.scalar_type() &&
                  t.is_contiguous(memory_format_for(channels_last)) && t.device() == input.device(),
              "dlkernels batch_norm: ", name, " must have the input's shape, dtype, layout and device");
}

inline void check_per_channel(const at::Tensor& t, const at::Tensor& input, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == input.size(1) && t.is_contiguous() &&
                  t.scalar_type() == stat_dtype_for(input) && t.device() == input.device(),
              "dlkernels batch_norm: ", name, " must be a contiguous 1-D ", stat_dtype_for(input),
              " tensor of length C = ", input.size(1), " on the input's device");
}

inline const void* optional_per_channel(const std::optional<at::Tensor>& t, const at::Tensor& input,
                                        const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  check_per_channel(*t, input, name);
  return t->data_ptr();
}

inline at::Tensor empty_like_input(const at::Tensor& input, bool channels_last) {
  return at::empty(input.sizes(), input.options().memory_format(memory_format_for(channels_last)));
}

inline at::Tensor empty_per_channel(const at::Tensor& input) {
  return at::empty({input.size(1)}, input.options().dtype(stat_dtype_for(input)));
}

inline std::tuple<at::Tensor, at::Tensor, BatchNormStatsParams> prepare_batch_norm_stats(
    const at::Tensor& input, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, double momentum, double eps, bool channels_last) {
  BatchNormStatsParams p;
  fill_bn_geometry(p, input, channels_last, /*relu=*/false);
  at::Tensor mean = empty_per_channel(input), invstd = empty_per_channel(input);
  p.input = input.data_ptr();
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.running_mean = const_cast<void*>(optional_per_channel(running_mean, input, "running_mean"));
  p.running_var = const_cast<void*>(optional_per_channel(running_var, input, "running_var"));
  p.momentum = momentum;
  p.eps = eps;
  return {mean, invstd, p};
}

inline std::tuple<at::Tensor, BatchNormApplyParams> prepare_batch_norm_apply(
    const at::Tensor& input, const at::Tensor& mean, const at::Tensor& invstd, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, bool relu, bool channels_last) {
  BatchNormApplyParams p;
  fill_bn_geometry(p, input, channels_last, relu);
  check_per_channel(mean, input, "mean");
  check_per_channel(invstd, input, "invstd");
  at::Tensor output = empty_like_input(input, channels_last);
  p.input = input.data_ptr();
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.weight = optional_per_channel(weight, input, "weight");
  p.bias = optional_per_channel(bias, input, "bias");
  if (residual.has_value() && residual->defined()) {
    check_like_input(*residual, input, "residual", channels_last);
    p.residual = residual->data_ptr();
  }
  p.output = output.data_ptr();
  return {output, p};
}

inline const void* relu_output(const std::optional<at::Tensor>& output, const at::Tensor& input, bool relu,
                               bool channels_last) {
  if (!relu) return nullptr;
  TORCH_CHECK(output.has_value() && output->defined(), "dlkernels batch_norm: output is needed when relu is set");
  check_like_input(*output, input, "output", channels_last);
  return output->data_ptr();
}

inline std::tuple<at::Tensor, at::Tensor, BatchNormBwdReduceParams> prepare_batch_norm_backward_reduce(
    const at::Tensor& grad_output, const std::optional<at::Tensor>& output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& invstd, bool relu, bool channels_last) {
  BatchNormBwdReduceParams p;
  fill_bn_geometry(p, input, channels_last, relu);
  check_like_input(grad_output, input, "grad_output", channels_last);
  check_per_channel(mean, input, "mean");
  check_per_channel(invstd, input, "invstd");
  at::Tensor sum_dy = empty_per_channel(input), sum_dy_xhat = empty_per_channel(input);
  p.grad_output = grad_output.data_ptr();
  p.output = relu_output(output, input, relu, channels_last);
  p.input = input.data_ptr();
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.sum_dy = sum_dy.data_ptr();
  p.sum_dy_xhat = sum_dy_xhat.data_ptr();
  return {sum_dy, sum_dy_xhat, p};
}

inline std::tuple<at::Tensor, at::Tensor, BatchNormBwdApplyParams> prepare_batch_norm_backward_apply(
    const at::Tensor& grad_output, const std::optional<at::Tensor>& output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& invstd, const std::optional<at::Tensor>& weight,
    const at::Tensor& sum_dy, const at::Tensor& sum_dy_xhat, bool training, bool relu, bool want_grad_residual,
    bool channels_last) {
  BatchNormBwdApplyParams p;
  fill_bn_geometry(p, input, channels_last, relu);
  check_like_input(grad_output, input, "grad_output", channels_last);
  check_per_channel(mean, input, "mean");
  check_per_channel(invstd, input, "invstd");
  check_per_channel(sum_dy, input, "sum_dy");
  check_per_channel(sum_dy_xhat, input, "sum_dy_xhat");
  at::Tensor grad_input = empty_like_input(input, channels_last);
  at::Tensor grad_residual =
      want_grad_residual ? empty_like_input(input, channels_last) : at::empty({0}, input.options());
  p.grad_output = grad_output.data_ptr();
  p.output = relu_output(output, input, relu, channels_last);
  p.input = input.data_ptr();
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.weight = optional_per_channel(weight, input, "weight");
  p.sum_dy = sum_dy.data_ptr();
  p.sum_dy_xhat = sum_dy_xhat.data_ptr();
  p.training = training;
  p.grad_input = grad_input.data_ptr();
  p.grad_residual = want_grad_residual ? grad_residual.data_ptr() : nullptr;
  return {grad_input, grad_residual, p};
}

}  // namespace dlk::binding
