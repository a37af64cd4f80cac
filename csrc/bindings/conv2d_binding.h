// Tensor -> params plumbing shared by the CPU and CUDA convolution bindings (direct and Winograd).
// Kernels see only Conv2d*Params / Winograd*Params. The public Python layer validates arguments
// with friendlier messages; the checks here keep a direct torch.ops.dlk_C call from reaching a
// kernel with tensors it would misread.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <tuple>

#include "binding_common.h"
#include "dlk/conv2d.h"
#include "dlk/winograd.h"

namespace dlk::binding {

inline void check_conv_tensor(const at::Tensor& t, const char* name, bool channels_last, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 4, "dlkernels conv2d: ", name, " must be 4-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.is_contiguous(memory_format_for(channels_last)), "dlkernels conv2d: ", name,
              " must be contiguous in ", channels_last ? "channels_last" : "NCHW", " layout");
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device() == like.device(), "dlkernels conv2d: ", name,
              " must have the dtype and device of the input");
}

inline void check_pairs(at::IntArrayRef a, at::IntArrayRef b, at::IntArrayRef c, at::IntArrayRef d) {
  TORCH_CHECK(a.size() == 2 && b.size() == 2 && c.size() == 2 && d.size() == 2,
              "dlkernels conv2d: stride, padding, dilation and sizes must have two entries each");
}

// Geometry from the input's (N, C, H, W), the weight's (K, C/groups, R, S) and the output's (P, Q).
inline void fill_conv_geometry(Conv2dParams& p, at::IntArrayRef input_shape, at::IntArrayRef weight_shape,
                               at::IntArrayRef output_size, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups, bool channels_last, bool allow_tf32) {
  check_pairs(stride, padding, dilation, output_size);
  TORCH_CHECK(groups >= 1 && input_shape[1] % groups == 0 && weight_shape[0] % groups == 0 &&
                  weight_shape[1] * groups == input_shape[1],
              "dlkernels conv2d: channels do not match groups (input ", input_shape, ", weight ", weight_shape,
              ", groups ", groups, ")");
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1,
              "dlkernels conv2d: stride and dilation must be positive");
  p.batch = input_shape[0];
  p.in_channels = input_shape[1]; p.in_h = input_shape[2]; p.in_w = input_shape[3];
  p.out_channels = weight_shape[0]; p.out_h = output_size[0]; p.out_w = output_size[1];
  p.kernel_h = int(weight_shape[2]); p.kernel_w = int(weight_shape[3]);
  p.stride_h = int(stride[0]); p.stride_w = int(stride[1]);
  p.pad_h = int(padding[0]); p.pad_w = int(padding[1]);
  p.dilation_h = int(dilation[0]); p.dilation_w = int(dilation[1]);
  p.groups = int(groups);
  p.channels_last = channels_last;
  p.allow_tf32 = allow_tf32;
  TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "dlkernels conv2d: output size must be positive");
}

inline void check_epilogue(const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                           const at::Tensor& input, int64_t out_channels, at::IntArrayRef output_shape,
                           bool channels_last) {
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels && bias->is_contiguous() &&
                    bias->scalar_type() == input.scalar_type() && bias->device() == input.device(),
                "dlkernels conv2d: bias must be a contiguous (", out_channels, ",) tensor like the input");
  }
  if (residual) {
    check_conv_tensor(*residual, "residual", channels_last, input);
    TORCH_CHECK(residual->sizes() == output_shape, "dlkernels conv2d: residual must have the output's shape ",
                output_shape, ", got ", residual->sizes());
  }
}

inline std::tuple<at::Tensor, Conv2dFwdParams> prepare_conv2d_forward(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, at::IntArrayRef output_size, bool relu, bool channels_last,
    bool allow_tf32) {
  check_conv_tensor(input, "input", channels_last, input);
  check_conv_tensor(weight, "weight", channels_last, input);
  Conv2dFwdParams p;
  fill_conv_geometry(p, input.sizes(), weight.sizes(), output_size, stride, padding, dilation, groups,
                     channels_last, allow_tf32);
  const std::vector<int64_t> shape{p.batch, p.out_channels, p.out_h, p.out_w};
  check_epilogue(bias, residual, input, p.out_channels, shape, channels_last);
  at::Tensor output = at::empty(shape, input.options().memory_format(memory_format_for(channels_last)));
  p.input = input.data_ptr();
  p.weight = weight.data_ptr();
  p.bias = bias ? bias->data_ptr() : nullptr;
  p.residual = residual ? residual->data_ptr() : nullptr;
  p.output = output.data_ptr();
  p.relu = relu;
  return {output, p};
}

inline std::tuple<at::Tensor, Conv2dDgradParams> prepare_conv2d_backward_input(
    const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool channels_last, bool allow_tf32) {
  check_conv_tensor(grad_output, "grad_output", channels_last, grad_output);
  check_conv_tensor(weight, "weight", channels_last, grad_output);
  TORCH_CHECK(input_size.size() == 2, "dlkernels conv2d: input_size must have two entries");
  TORCH_CHECK(grad_output.size(1) == weight.size(0), "dlkernels conv2d: grad_output has ", grad_output.size(1),
              " channels but the weight has ", weight.size(0), " filters");
  const std::vector<int64_t> input_shape{grad_output.size(0), weight.size(1) * groups, input_size[0], input_size[1]};
  Conv2dDgradParams p;
  fill_conv_geometry(p, input_shape, weight.sizes(), grad_output.sizes().slice(2), stride, padding, dilation, groups,
                     channels_last, allow_tf32);
  at::Tensor grad_input =
      at::empty(input_shape, grad_output.options().memory_format(memory_format_for(channels_last)));
  p.grad_output = grad_output.data_ptr();
  p.weight = weight.data_ptr();
  p.grad_input = grad_input.data_ptr();
  return {grad_input, p};
}

inline std::tuple<at::Tensor, Conv2dWgradParams> prepare_conv2d_backward_weight(
    const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool channels_last, bool allow_tf32) {
  check_conv_tensor(grad_output, "grad_output", channels_last, input);
  check_conv_tensor(input, "input", channels_last, input);
  TORCH_CHECK(kernel_size.size() == 2, "dlkernels conv2d: kernel_size must have two entries");
  TORCH_CHECK(groups >= 1 && input.size(1) % groups == 0, "dlkernels conv2d: groups must divide the input channels");
  TORCH_CHECK(grad_output.size(0) == input.size(0), "dlkernels conv2d: grad_output and input batch sizes differ");
  const std::vector<int64_t> weight_shape{grad_output.size(1), input.size(1) / groups, kernel_size[0],
                                          kernel_size[1]};
  Conv2dWgradParams p;
  fill_conv_geometry(p, input.sizes(), weight_shape, grad_output.sizes().slice(2), stride, padding, dilation, groups,
                     channels_last, allow_tf32);
  at::Tensor grad_weight = at::empty(weight_shape, input.options().memory_format(memory_format_for(channels_last)));
  p.grad_output = grad_output.data_ptr();
  p.input = input.data_ptr();
  p.grad_weight = grad_weight.data_ptr();
  return {grad_weight, p};
}

inline int64_t winograd_alpha(int64_t tile) {
  TORCH_CHECK(tile == 2 || tile == 4, "dlkernels conv2d: Winograd tile must be 2 or 4, got ", tile);
  return tile + 2;
}

inline std::tuple<at::Tensor, WinogradWeightParams> prepare_winograd_transform_weight(const at::Tensor& weight,
                                                                                     int64_t tile,
                                                                                     bool channels_last) {
  const int64_t alpha = winograd_alpha(tile);
  check_conv_tensor(weight, "weight", channels_last, weight);
  TORCH_CHECK(weight.size(2) == 3 && weight.size(3) == 3, "dlkernels conv2d: Winograd needs a 3x3 weight, got ",
              weight.sizes());
  WinogradWeightParams p;
  p.out_channels = weight.size(0);
  p.in_channels = weight.size(1);
  p.tile = int(tile);
  p.channels_last = channels_last;
  at::Tensor transformed = at::empty({alpha * alpha, p.out_channels, p.in_channels}, weight.options());
  p.weight = weight.data_ptr();
  p.transformed = transformed.data_ptr();
  return {transformed, p};
}

inline std::tuple<at::Tensor, WinogradFwdParams> prepare_conv2d_winograd(
    const at::Tensor& input, const at::Tensor& transformed_weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& residual, at::IntArrayRef padding, at::IntArrayRef output_size, int64_t tile,
    bool relu, bool channels_last, bool allow_tf32) {
  const int64_t alpha = winograd_alpha(tile);
  check_conv_tensor(input, "input", channels_last, input);
  TORCH_CHECK(transformed_weight.dim() == 3 && transformed_weight.size(0) == alpha * alpha &&
                  transformed_weight.size(2) == input.size(1) && transformed_weight.is_contiguous() &&
                  transformed_weight.scalar_type() == input.scalar_type() &&
                  transformed_weight.device() == input.device(),
              "dlkernels conv2d: transformed_weight must be a contiguous (", alpha * alpha, ", K, ", input.size(1),
              ") tensor like the input (from winograd_transform_weight with tile ", tile, "), got ",
              transformed_weight.sizes());
  const int64_t out_channels = transformed_weight.size(1);
  WinogradFwdParams p;
  const int64_t ones[2] = {1, 1};
  fill_conv_geometry(p, input.sizes(), {out_channels, input.size(1), 3, 3}, output_size, ones, padding, ones, 1,
                     channels_last, allow_tf32);
  const std::vector<int64_t> shape{p.batch, out_channels, p.out_h, p.out_w};
  check_epilogue(bias, residual, input, out_channels, shape, channels_last);
  at::Tensor output = at::empty(shape, input.options().memory_format(memory_format_for(channels_last)));
  p.tile = int(tile);
  p.input = input.data_ptr();
  p.transformed_weight = transformed_weight.data_ptr();
  p.bias = bias ? bias->data_ptr() : nullptr;
  p.residual = residual ? residual->data_ptr() : nullptr;
  p.output = output.data_ptr();
  p.relu = relu;
  return {output, p};
}

}  // namespace dlk::binding
