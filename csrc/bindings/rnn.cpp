// Schemas of the low-level LSTM / GRU layer ops (namespace dlk_C) and their CPU implementation (the
// C++ reference in csrc/cpu/rnn.cpp). The CUDA implementation is registered from rnn_cuda.cpp.
#include "rnn_binding.h"

#include "../cpu/rnn.h"

namespace dlk::binding {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

// The kernels index with lengths; the GPU backends trust the Python layer's check, the CPU one can
// afford to repeat it.
void check_lengths_cpu(const OptionalTensor& lengths, int64_t steps) {
  if (!present(lengths)) return;
  const int* values = lengths->data_ptr<int>();
  for (int64_t b = 0; b < lengths->numel(); ++b)
    TORCH_CHECK(values[b] >= 1 && values[b] <= steps, "dlkernels rnn: lengths[", b, "] = ", values[b],
                " is outside [1, ", steps, "]");
}

RnnForwardResult forward_cpu(c10::string_view cell, const at::Tensor& x_proj, const at::Tensor& w_hh,
                             const OptionalTensor& b_hh, const at::Tensor& h0, const OptionalTensor& c0,
                             const OptionalTensor& lengths, bool reverse, bool training) {
  auto [outputs, params] = prepare_rnn_forward(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, training);
  check_lengths_cpu(lengths, params.steps);
  check_status(rnn_forward_cpu(params, to_dlk_dtype(x_proj)), "rnn_layer_forward (cpu)");
  return outputs;
}

RnnBackwardResult backward_cpu(c10::string_view cell, const OptionalTensor& grad_h_all, const OptionalTensor& grad_h_n,
                               const OptionalTensor& grad_c_n, const at::Tensor& w_hh, const at::Tensor& h0,
                               const OptionalTensor& c0, const at::Tensor& h_all, const at::Tensor& c_all,
                               const at::Tensor& saved, const OptionalTensor& lengths, bool reverse) {
  auto [outputs, params] = prepare_rnn_backward(cell, grad_h_all, grad_h_n, grad_c_n, w_hh, h0, c0, h_all, c_all,
                                                saved, lengths, reverse);
  check_lengths_cpu(lengths, params.steps);
  check_status(rnn_backward_cpu(params, to_dlk_dtype(h_all)), "rnn_layer_backward (cpu)");
  return outputs;
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_FRAGMENT(dlk_C, m) {
  m.def("rnn_layer_forward(str cell, Tensor x_proj, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor? c0, "
        "Tensor? lengths, bool reverse, bool training) "
        "-> (Tensor h_all, Tensor c_all, Tensor h_n, Tensor c_n, Tensor saved)");
  m.def("rnn_layer_backward(str cell, Tensor? grad_h_all, Tensor? grad_h_n, Tensor? grad_c_n, Tensor w_hh, "
        "Tensor h0, Tensor? c0, Tensor h_all, Tensor c_all, Tensor saved, Tensor? lengths, bool reverse) "
        "-> (Tensor grad_x_proj, Tensor grad_gh, Tensor grad_h0, Tensor grad_c0)");
}

TORCH_LIBRARY_IMPL(dlk_C, CPU, m) {
  m.impl("rnn_layer_forward", &dlk::binding::forward_cpu);
  m.impl("rnn_layer_backward", &dlk::binding::backward_cpu);
}
