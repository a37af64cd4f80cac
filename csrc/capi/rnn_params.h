// Flat C arguments -> RnnFwdParams / RnnBwdParams, shared by rnn_cpu.cpp and rnn_cuda.cpp. The checks
// are the cheap ones the kernels rely on; the Python caller has checked shapes, dtypes and devices.
#pragma once

#include <string>

#include "common.h"
#include "dlk/rnn.h"
#include "rnn_api.h"

namespace dlk::capi {

inline void set_rnn_params(RnnParams& p, DLK_RNN_PARAMS) {
  p.cell = static_cast<RnnCell>(cell);
  p.steps = steps;
  p.batch = batch;
  p.hidden = hidden;
  p.reverse = reverse != 0;
  p.lengths = lengths;
  p.w_hh = w_hh;
  p.h0 = h0;
  p.c0 = cell == static_cast<int>(RnnCell::kLSTM) ? c0 : nullptr;
}

// DLK_OK, or the failure code with "<what>: <why>" as the last error. `cell` is checked before the
// params are filled (a cast to RnnCell of anything else would be meaningless).
inline int check_rnn(const char* what, int cell, const RnnParams& p, int dtype) {
  if (!valid_dtype(dtype)) {
    set_last_error(std::string(what) + ": unknown dtype code " + std::to_string(dtype));
    return DLK_ERR_UNSUPPORTED_DTYPE;
  }
  if (cell != static_cast<int>(RnnCell::kLSTM) && cell != static_cast<int>(RnnCell::kGRU))
    return invalid_argument(what, "cell must be 0 (LSTM) or 1 (GRU), got " + std::to_string(cell));
  if (p.steps < 1 || p.batch < 1 || p.hidden < 1)
    return invalid_argument(what, "empty sequence, batch or hidden size");
  if (p.cell == RnnCell::kLSTM && p.c0 == nullptr) return invalid_argument(what, "c0 is required for an LSTM");
  return DLK_OK;
}

inline RnnFwdParams rnn_layer_forward_params(DLK_RNN_LAYER_FORWARD_PARAMS) {
  (void)dtype;
  RnnFwdParams p;
  set_rnn_params(p, DLK_RNN_ARGS);
  const bool lstm = p.cell == RnnCell::kLSTM;
  p.b_hh = lstm ? nullptr : b_hh;
  p.x_proj = x_proj;
  p.h_all = h_all;
  p.c_all = lstm ? c_all : nullptr;
  p.h_n = h_n;
  p.c_n = lstm ? c_n : nullptr;
  p.training = training != 0;
  p.saved = p.training ? saved : nullptr;
  return p;
}

inline int check_rnn_layer_forward(const char* what, int cell, const RnnFwdParams& p, const void* b_hh, int dtype) {
  if (const int status = check_rnn(what, cell, p, dtype)) return status;
  if (p.cell == RnnCell::kLSTM && b_hh != nullptr)
    return invalid_argument(what, "an LSTM takes no b_hh (x_proj includes b_ih + b_hh)");
  return DLK_OK;
}

inline RnnBwdParams rnn_layer_backward_params(DLK_RNN_LAYER_BACKWARD_PARAMS) {
  (void)dtype;
  RnnBwdParams p;
  set_rnn_params(p, DLK_RNN_ARGS);
  const bool lstm = p.cell == RnnCell::kLSTM;
  p.h_all = h_all;
  p.c_all = lstm ? c_all : nullptr;
  p.saved = saved;
  p.grad_h_all = grad_h_all;
  p.grad_h_n = grad_h_n;
  p.grad_c_n = lstm ? grad_c_n : nullptr;
  p.grad_x_proj = grad_x_proj;
  p.grad_gh = lstm ? nullptr : grad_gh;
  p.grad_h0 = grad_h0;
  p.grad_c0 = lstm ? grad_c0 : nullptr;
  return p;
}

inline int check_rnn_layer_backward(const char* what, int cell, const RnnBwdParams& p, int dtype) {
  if (const int status = check_rnn(what, cell, p, dtype)) return status;
  if (p.saved == nullptr) return invalid_argument(what, "saved is empty: run the forward with training=True");
  return DLK_OK;
}

}  // namespace dlk::capi
