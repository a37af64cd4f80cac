// Tensor -> params plumbing shared by the CPU and CUDA pooling bindings. Everything torch-specific
// about pooling stays here and in the two thin binding files; kernels see only Pool2d*Params.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <tuple>

#include "binding_common.h"
#include "dlk/pool2d.h"

namespace dlk::binding {

// The caller names the layout: tensors with C == 1 or 1x1 planes are contiguous in both, and only
// the caller knows which one the outputs (and, in backward, grad_input) must have.
inline at::MemoryFormat check_layout(const at::Tensor& t, const char* name, bool channels_last) {
  TORCH_CHECK(t.dim() == 4, "dlkernels pool2d: ", name, " must be 4-D, got ", t.dim(), "-D");
  const auto format = memory_format_for(channels_last);
  TORCH_CHECK(t.is_contiguous(format), "dlkernels pool2d: ", name, " must be contiguous in ",
              channels_last ? "channels_last" : "NCHW", " layout");
  return format;
}

inline void fill_geometry(Pool2dParams& p, int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, bool count_include_pad,
                          int64_t divisor_override) {
  TORCH_CHECK(mode >= 0 && mode <= 2, "dlkernels pool2d: mode must be 0, 1 or 2, got ", mode);
  TORCH_CHECK(kernel.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "dlkernels pool2d: kernel, stride, padding and dilation must have two entries each");
  p.mode = static_cast<PoolMode>(mode);
  p.kernel_h = int(kernel[0]); p.kernel_w = int(kernel[1]);
  p.stride_h = int(stride[0]); p.stride_w = int(stride[1]);
  p.pad_h = int(padding[0]); p.pad_w = int(padding[1]);
  p.dilation_h = int(dilation[0]); p.dilation_w = int(dilation[1]);
  p.count_include_pad = count_include_pad;
  p.divisor_override = int(divisor_override);
}

inline std::tuple<at::Tensor, at::Tensor, Pool2dFwdParams> prepare_pool2d_forward(
    const at::Tensor& input, int64_t mode, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, at::IntArrayRef output_size, bool count_include_pad,
    int64_t divisor_override, bool channels_last) {
  const auto format = check_layout(input, "input", channels_last);
  TORCH_CHECK(output_size.size() == 2, "dlkernels pool2d: output_size must have two entries");
  Pool2dFwdParams p;
  fill_geometry(p, mode, kernel, stride, padding, dilation, count_include_pad, divisor_override);
  p.channels_last = channels_last;
  p.batch = input.size(0); p.channels = input.size(1);
  p.in_h = input.size(2); p.in_w = input.size(3);
  p.out_h = output_size[0]; p.out_w = output_size[1];
  at::Tensor output = at::empty({p.batch, p.channels, p.out_h, p.out_w}, input.options().memory_format(format));
  at::Tensor indices = p.mode == PoolMode::kMax
      ? at::empty({p.batch, p.channels, p.out_h, p.out_w}, input.options().dtype(at::kLong).memory_format(format))
      : at::empty({0}, input.options().dtype(at::kLong));
  p.input = input.data_ptr();
  p.output = output.data_ptr();
  p.indices = p.mode == PoolMode::kMax ? indices.data_ptr<int64_t>() : nullptr;
  return {output, indices, p};
}

inline std::tuple<at::Tensor, Pool2dBwdParams> prepare_pool2d_backward(
    const at::Tensor& grad_output, const at::Tensor& indices, int64_t mode, at::IntArrayRef input_size,
    at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    bool count_include_pad, int64_t divisor_override, bool channels_last) {
  const auto format = check_layout(grad_output, "grad_output", channels_last);
  TORCH_CHECK(input_size.size() == 2, "dlkernels pool2d: input_size must have two entries");
  Pool2dBwdParams p;
  fill_geometry(p, mode, kernel, stride, padding, dilation, count_include_pad, divisor_override);
  p.channels_last = channels_last;
  p.batch = grad_output.size(0); p.channels = grad_output.size(1);
  p.out_h = grad_output.size(2); p.out_w = grad_output.size(3);
  p.in_h = input_size[0]; p.in_w = input_size[1];
  if (p.mode == PoolMode::kMax) {
    // Both dense in one memory format is all the kernels need (they index by shape and format); the
    // strides of size-1 dims may differ (a flattened global pool's gradient), so they are not compared.
    TORCH_CHECK(indices.scalar_type() == at::kLong && indices.sizes() == grad_output.sizes() &&
                    indices.device() == grad_output.device(),
                "dlkernels pool2d: indices must be int64 with grad_output's shape and device");
    TORCH_CHECK(indices.is_contiguous(format), "dlkernels pool2d: indices must be contiguous like grad_output");
    p.indices = indices.data_ptr<int64_t>();
  }
  at::Tensor grad_input =
      at::empty({p.batch, p.channels, p.in_h, p.in_w}, grad_output.options().memory_format(format));
  p.grad_output = grad_output.data_ptr();
  p.grad_input = grad_input.data_ptr();
  return {grad_input, p};
}

}  // namespace dlk::binding
