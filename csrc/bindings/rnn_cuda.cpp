// CUDA implementation of the dlk_C LSTM / GRU layer ops (schemas in rnn.cpp). Thin: tensors -> params
// via rnn_binding.h, the workspace the launcher asks for, then the torch-free launchers of
// csrc/cuda/rnn.cuh on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "rnn_binding.h"

#include "../cuda/rnn.cuh"

namespace dlk::binding {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), "dlkernels ", op, " (cuda): ", name, " must be a CUDA tensor");
}

RnnForwardResult forward_cuda(c10::string_view cell, const at::Tensor& x_proj, const at::Tensor& w_hh,
                              const OptionalTensor& b_hh, const at::Tensor& h0, const OptionalTensor& c0,
                              const OptionalTensor& lengths, bool reverse, bool training) {
  check_cuda(x_proj, "rnn_layer_forward", "x_proj");
  const c10::cuda::CUDAGuard device_guard(x_proj.device());
  auto [outputs, params] = prepare_rnn_forward(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, training);
  const DType dtype = to_dlk_dtype(x_proj);
  // Queried after the device guard and with the filled params: the size may depend on both.
  const Workspace ws = make_workspace(x_proj, rnn_forward_workspace_bytes(params, dtype));
  check_status(rnn_forward_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "rnn_layer_forward (cuda)");
  return outputs;
}

RnnBackwardResult backward_cuda(c10::string_view cell, const OptionalTensor& grad_h_all,
                                const OptionalTensor& grad_h_n, const OptionalTensor& grad_c_n,
                                const at::Tensor& w_hh, const at::Tensor& h0, const OptionalTensor& c0,
                                const at::Tensor& h_all, const at::Tensor& c_all, const at::Tensor& saved,
                                const OptionalTensor& lengths, bool reverse) {
  check_cuda(h_all, "rnn_layer_backward", "h_all");
  const c10::cuda::CUDAGuard device_guard(h_all.device());
  auto [outputs, params] = prepare_rnn_backward(cell, grad_h_all, grad_h_n, grad_c_n, w_hh, h0, c0, h_all, c_all,
                                                saved, lengths, reverse);
  const DType dtype = to_dlk_dtype(h_all);
  const Workspace ws = make_workspace(h_all, rnn_backward_workspace_bytes(params, dtype));
  check_status(rnn_backward_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "rnn_layer_backward (cuda)");
  return outputs;
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_IMPL(dlk_C, CUDA, m) {
  m.impl("rnn_layer_forward", &dlk::binding::forward_cuda);
  m.impl("rnn_layer_backward", &dlk::binding::backward_cuda);
}
