// LSTM and GRU: the recurrent part of one layer and one direction over a whole sequence, shared by
// every implementation (the C++ CPU reference, the CUDA kernels, and mirrored by
// triton_kernels/rnn.py). The input projection for all timesteps, x_proj = x W_ih^T (+ biases), and
// the weight gradients are large GEMMs that Python runs with torch; these kernels run the sequential
// part: per step, h_{t-1} W_hh^T fused with the gate nonlinearities and the state update.
//
// Shapes (T steps, B batch, H hidden), all contiguous:
//   x_proj (T, B, G*H) in the input dtype; G = 4 for LSTM (gates i, f, g, o: torch's order),
//   G = 3 for GRU (r, z, n). LSTM: x_proj already includes b_ih + b_hh. GRU: x_proj includes b_ih
//   only, b_hh is passed separately because the n gate needs r * (h W_hn^T + b_hn).
//   w_hh (G*H, H) in the input dtype; h0 (B, H) input dtype; c0 (B, H) input dtype (LSTM).
//   h_all (T, B, H) input dtype: h_t for every step (the layer's output sequence).
//   c_all (T, B, H) accumulation dtype (float; double for double input): LSTM cell states.
//   saved (T, B, S) accumulation dtype, written only when `training`: what the backward needs,
//     LSTM S = 4H: activated gates (i, f, g, o); GRU S = 4H: (r, z, n, hn) with
//     hn = h_{t-1} W_hn^T + b_hn.
//
// lengths (nullable, int32 (B,)): sequence b has lengths[b] valid steps (packed sequences). At an
// invalid step t >= lengths[b] the state of b is left unchanged, h_all[t, b] = 0, c_all[t, b] holds
// the unchanged c, and the backward gives zero gate gradients there. With `reverse` the layer runs
// t = T-1 ... 0, so each sequence starts at its own last valid step with (h0, c0), and h_all[t] is
// still the output at time t (torch's reverse direction of a bidirectional layer).
//
// Step math (accumulated in float; double for double), with gh = h_{t-1} W_hh^T:
//   LSTM: i, f, o = sigmoid(x_proj + gh)[i, f, o]; g = tanh(x_proj + gh)[g];
//         c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
//   GRU:  r, z = sigmoid(x_proj[r, z] + gh[r, z] + b_hh[r, z]);  hn = gh[n] + b_hh[n];
//         n = tanh(x_proj[n] + r * hn);  h_t = (1 - z) * n + z * h_{t-1}
// h_{t-1} is read back in the input dtype (as stored in h_all / h0) for the next step's GEMM, as
// cuDNN does; c stays in the accumulation dtype.
#pragma once

#include "dlk/common.h"

namespace dlk {

// Recurrent cell of an RnnParams: LSTM (4 gates) or GRU (3 gates).
enum class RnnCell : int { kLSTM = 0, kGRU = 1 };

struct RnnParams {
  RnnCell cell = RnnCell::kLSTM;
  int64_t steps = 0;   // T
  int64_t batch = 0;   // B
  int64_t hidden = 0;  // H
  bool reverse = false;
  const int* lengths = nullptr;  // nullable, (B,)
  const void* w_hh = nullptr;    // (G*H, H)
  const void* b_hh = nullptr;    // GRU only: (3H,) or null (zeros)
  const void* h0 = nullptr;      // (B, H)
  const void* c0 = nullptr;      // LSTM only: (B, H)
};

// Runs all T steps. Writes h_all, c_all (LSTM), h_n, c_n (the final states: for each b the state
// after its last valid step, in the input dtype), and saved when training.
struct RnnFwdParams : RnnParams {
  const void* x_proj = nullptr;
  void* h_all = nullptr;
  void* c_all = nullptr;  // LSTM only
  void* h_n = nullptr;    // (B, H) input dtype
  void* c_n = nullptr;    // LSTM only, (B, H) input dtype
  void* saved = nullptr;  // (T, B, 4H) accumulation dtype; nullable when not training
  bool training = false;
};

// Backpropagation through time. Inputs: the forward's h_all, c_all, saved, plus grad_h_all
// (T, B, H), grad_h_n and grad_c_n (B, H) (each nullable = zeros), all in the input dtype.
// Outputs, every element written:
//   grad_x_proj (T, B, G*H) accumulation dtype: d loss / d (pre-activation gates) as seen by x_proj
//     (= d/d x_proj; Python forms grad_x, grad_w_ih and grad_b_ih from it with GEMMs);
//   grad_gh (T, B, G*H) accumulation dtype: d loss / d (h_{t-1} W_hh^T + b_hh) (LSTM: equal to
//     grad_x_proj, so LSTM leaves it null; GRU: differs in the n gate: r * dn_pre); Python forms
//     grad_w_hh = sum_t grad_gh_t^T h_{t-1} and grad_b_hh from it;
//   grad_h0, grad_c0 (B, H) input dtype (grad_c0 LSTM only).
// Per step the recurrent GEMM dh_{t-1} += grad_gh_t W_hh is fused with the next step's pointwise
// gate gradients.
struct RnnBwdParams : RnnParams {
  const void* h_all = nullptr;
  const void* c_all = nullptr;  // LSTM only
  const void* saved = nullptr;
  const void* grad_h_all = nullptr;  // nullable
  const void* grad_h_n = nullptr;    // nullable
  const void* grad_c_n = nullptr;    // nullable, LSTM only
  void* grad_x_proj = nullptr;
  void* grad_gh = nullptr;  // GRU only
  void* grad_h0 = nullptr;
  void* grad_c0 = nullptr;  // LSTM only
};

DLK_HOST_DEVICE int rnn_gate_count(RnnCell cell) { return cell == RnnCell::kLSTM ? 4 : 3; }

// Whether batch element b runs at step t (every step when lengths is null).
DLK_HOST_DEVICE bool rnn_step_valid(const RnnParams& p, int64_t t, int64_t b) {
  return p.lengths == nullptr || t < p.lengths[b];
}

// The time index processed at iteration s (0 ... T-1) of the recurrence.
DLK_HOST_DEVICE int64_t rnn_time_at(const RnnParams& p, int64_t s) { return p.reverse ? p.steps - 1 - s : s; }

}  // namespace dlk
