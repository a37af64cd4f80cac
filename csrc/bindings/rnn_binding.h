// Tensor -> params plumbing shared by the CPU and CUDA bindings of the LSTM / GRU layer ops
// (contract: dlk/rnn.h). Checks what the kernels rely on (shapes, dtypes, contiguity, devices);
// argument errors meant for users are raised earlier, by dlkernels/ops/rnn.py.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "dlk/rnn.h"
#include "binding_common.h"

namespace dlk::binding {

using RnnForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using RnnBackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline RnnCell parse_rnn_cell(std::string_view cell) {
  TORCH_CHECK(cell == "lstm" || cell == "gru", "dlkernels rnn: cell must be \"lstm\" or \"gru\", got \"", cell, "\"");
  return cell == "lstm" ? RnnCell::kLSTM : RnnCell::kGRU;
}

// c_all and saved hold the accumulation dtype: float, or double for double input.
inline at::ScalarType rnn_acc_dtype(const at::Tensor& like) {
  return like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

inline void check_rnn_tensor(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType dtype,
                             const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == shape, "dlkernels rnn: ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "dlkernels rnn: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "dlkernels rnn: ", name, " is on ", t.device(), ", expected ",
              like.device());
  TORCH_CHECK(t.is_contiguous(), "dlkernels rnn: ", name, " must be contiguous");
}

inline const void* optional_rnn_tensor(const std::optional<at::Tensor>& t, const char* name, at::IntArrayRef shape,
                                       at::ScalarType dtype, const at::Tensor& like) {
  if (!present(t)) return nullptr;
  check_rnn_tensor(*t, name, shape, dtype, like);
  return t->data_ptr();
}

// The parts of RnnParams both directions share; steps, batch and hidden come from the caller.
inline void fill_rnn_params(RnnParams& p, RnnCell cell, int64_t steps, int64_t batch, int64_t hidden,
                            const at::Tensor& like, const at::Tensor& w_hh, const at::Tensor& h0,
                            const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& lengths,
                            bool reverse) {
  TORCH_CHECK(steps > 0 && batch > 0 && hidden > 0, "dlkernels rnn: empty sequence, batch or hidden size (T=", steps,
              ", B=", batch, ", H=", hidden, ")");
  const at::ScalarType dtype = like.scalar_type();
  p.cell = cell;
  p.steps = steps;
  p.batch = batch;
  p.hidden = hidden;
  p.reverse = reverse;
  check_rnn_tensor(w_hh, "w_hh", {rnn_gate_count(cell) * hidden, hidden}, dtype, like);
  p.w_hh = w_hh.data_ptr();
  check_rnn_tensor(h0, "h0", {batch, hidden}, dtype, like);
  p.h0 = h0.data_ptr();
  if (cell == RnnCell::kLSTM) {
    TORCH_CHECK(present(c0), "dlkernels rnn: c0 is required for an LSTM");
    p.c0 = optional_rnn_tensor(c0, "c0", {batch, hidden}, dtype, like);
  }
  p.lengths = static_cast<const int*>(optional_rnn_tensor(lengths, "lengths", {batch}, at::kInt, like));
}

inline at::Tensor empty_unused(const at::Tensor& like) { return at::empty({0}, like.options()); }

// Outputs (h_all, c_all, h_n, c_n, saved) and their params; those that do not apply are (0,).
inline std::tuple<RnnForwardResult, RnnFwdParams> prepare_rnn_forward(
    std::string_view cell_name, const at::Tensor& x_proj, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hh,
    const at::Tensor& h0, const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& lengths, bool reverse,
    bool training) {
  const RnnCell cell = parse_rnn_cell(cell_name);
  const int64_t gates = rnn_gate_count(cell);
  to_dlk_dtype(x_proj);  // rejects unsupported dtypes
  TORCH_CHECK(x_proj.dim() == 3 && x_proj.size(2) % gates == 0, "dlkernels rnn: x_proj must be (T, B, ", gates,
              "*H), got ", x_proj.sizes());
  TORCH_CHECK(x_proj.is_contiguous(), "dlkernels rnn: x_proj must be contiguous");
  const int64_t steps = x_proj.size(0), batch = x_proj.size(1), hidden = x_proj.size(2) / gates;
  RnnFwdParams p;
  fill_rnn_params(p, cell, steps, batch, hidden, x_proj, w_hh, h0, c0, lengths, reverse);
  const bool lstm = cell == RnnCell::kLSTM;
  TORCH_CHECK(!(lstm && present(b_hh)), "dlkernels rnn: an LSTM takes no b_hh (x_proj includes b_ih + b_hh)");
  if (!lstm) p.b_hh = optional_rnn_tensor(b_hh, "b_hh", {gates * hidden}, x_proj.scalar_type(), x_proj);

  const auto acc = x_proj.options().dtype(rnn_acc_dtype(x_proj));
  at::Tensor h_all = at::empty({steps, batch, hidden}, x_proj.options());
  at::Tensor c_all = lstm ? at::empty({steps, batch, hidden}, acc) : empty_unused(x_proj);
  at::Tensor h_n = at::empty({batch, hidden}, x_proj.options());
  at::Tensor c_n = lstm ? at::empty({batch, hidden}, x_proj.options()) : empty_unused(x_proj);
  at::Tensor saved = training ? at::empty({steps, batch, 4 * hidden}, acc) : at::empty({0}, acc);
  p.x_proj = x_proj.data_ptr();
  p.h_all = h_all.data_ptr();
  p.c_all = lstm ? c_all.data_ptr() : nullptr;
  p.h_n = h_n.data_ptr();
  p.c_n = lstm ? c_n.data_ptr() : nullptr;
  p.saved = training ? saved.data_ptr() : nullptr;
  p.training = training;
  return {{h_all, c_all, h_n, c_n, saved}, p};
}

// Outputs (grad_x_proj, grad_gh, grad_h0, grad_c0) and their params; GRU-only grad_gh and LSTM-only
// grad_c0 are (0,) for the other cell.
inline std::tuple<RnnBackwardResult, RnnBwdParams> prepare_rnn_backward(
    std::string_view cell_name, const std::optional<at::Tensor>& grad_h_all, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const at::Tensor& w_hh, const at::Tensor& h0,
    const std::optional<at::Tensor>& c0, const at::Tensor& h_all, const at::Tensor& c_all, const at::Tensor& saved,
    const std::optional<at::Tensor>& lengths, bool reverse) {
  const RnnCell cell = parse_rnn_cell(cell_name);
  const bool lstm = cell == RnnCell::kLSTM;
  to_dlk_dtype(h_all);
  TORCH_CHECK(h_all.dim() == 3, "dlkernels rnn: h_all must be (T, B, H), got ", h_all.sizes());
  const int64_t steps = h_all.size(0), batch = h_all.size(1), hidden = h_all.size(2);
  const int64_t gate_width = rnn_gate_count(cell) * hidden;
  RnnBwdParams p;
  fill_rnn_params(p, cell, steps, batch, hidden, h_all, w_hh, h0, c0, lengths, reverse);
  check_rnn_tensor(h_all, "h_all", {steps, batch, hidden}, h_all.scalar_type(), h_all);
  const at::ScalarType acc = rnn_acc_dtype(h_all), dtype = h_all.scalar_type();
  TORCH_CHECK(saved.numel() > 0, "dlkernels rnn: saved is empty: run the forward with training=True");
  check_rnn_tensor(saved, "saved", {steps, batch, 4 * hidden}, acc, h_all);
  if (lstm) check_rnn_tensor(c_all, "c_all", {steps, batch, hidden}, acc, h_all);
  p.h_all = h_all.data_ptr();
  p.c_all = lstm ? c_all.data_ptr() : nullptr;
  p.saved = saved.data_ptr();
  p.grad_h_all = optional_rnn_tensor(grad_h_all, "grad_h_all", {steps, batch, hidden}, dtype, h_all);
  p.grad_h_n = optional_rnn_tensor(grad_h_n, "grad_h_n", {batch, hidden}, dtype, h_all);
  if (lstm) p.grad_c_n = optional_rnn_tensor(grad_c_n, "grad_c_n", {batch, hidden}, dtype, h_all);

  at::Tensor grad_x_proj = at::empty({steps, batch, gate_width}, h_all.options().dtype(acc));
  at::Tensor grad_gh = lstm ? at::empty({0}, h_all.options().dtype(acc)) : at::empty_like(grad_x_proj);
  at::Tensor grad_h0 = at::empty({batch, hidden}, h_all.options());
  at::Tensor grad_c0 = lstm ? at::empty({batch, hidden}, h_all.options()) : empty_unused(h_all);
  p.grad_x_proj = grad_x_proj.data_ptr();
  p.grad_gh = lstm ? nullptr : grad_gh.data_ptr();
  p.grad_h0 = grad_h0.data_ptr();
  p.grad_c0 = lstm ? grad_c0.data_ptr() : nullptr;
  return {{grad_x_proj, grad_gh, grad_h0, grad_c0}, p};
}

}  // namespace dlk::binding
