// Fused BatchNorm (+ residual) (+ ReLU / LeakyReLU): parameters and per-element math shared by the CPU
// reference and the CUDA kernels. triton_kernels/batch_norm.py mirrors the same formulas.
//
// The input (N, C, H, W) is viewed as (N, C, S), S = H*W, contiguous in NCHW or NHWC. Per-channel
// tensors (mean, invstd, weight, bias, running stats, reductions) hold the "stat" type: float, or
// double when the input is double.
#pragma once

#include "dlk/activation.h"
#include "dlk/common.h"

namespace dlk {

struct BatchNormParams {
  int64_t batch = 0, channels = 0, spatial = 0;
  bool channels_last = false;
  // y = act(batch_norm(x) + residual): LeakyReLU(negative_slope) when set (slope 0: ReLU;
  // dlk/activation.h), else identity.
  bool activation = false;
  double negative_slope = 0;
};

struct BatchNormStatsParams : BatchNormParams {
  const void* input = nullptr;
  void* mean = nullptr;
  void* invstd = nullptr;
  void* running_mean = nullptr;  // nullable: updated in place when given
  void* running_var = nullptr;   // nullable: updated in place (unbiased variance) when given
  double momentum = 0.1;
  double eps = 1e-5;
};

struct BatchNormApplyParams : BatchNormParams {
  const void* input = nullptr;
  const void* mean = nullptr;
  const void* invstd = nullptr;
  const void* weight = nullptr;    // nullable: 1
  const void* bias = nullptr;      // nullable: 0
  const void* residual = nullptr;  // nullable
  void* output = nullptr;
};

struct BatchNormBwdReduceParams : BatchNormParams {
  const void* grad_output = nullptr;
  const void* output = nullptr;  // read only with the activation: its sign picks 1 or the slope
  const void* input = nullptr;
  const void* mean = nullptr;
  const void* invstd = nullptr;
  void* sum_dy = nullptr;
  void* sum_dy_xhat = nullptr;
};

struct BatchNormBwdApplyParams : BatchNormParams {
  const void* grad_output = nullptr;
  const void* output = nullptr;  // read only with the activation
  const void* input = nullptr;
  const void* mean = nullptr;
  const void* invstd = nullptr;
  const void* weight = nullptr;  // nullable: 1
  const void* sum_dy = nullptr;
  const void* sum_dy_xhat = nullptr;
  bool training = true;  // false: statistics were constants (eval), no mean/variance terms
  void* grad_input = nullptr;
  void* grad_residual = nullptr;  // nullable: written only when given
};

// Offset of element (n, c, s) of the (N, C, S) view.
DLK_HOST_DEVICE int64_t bn_offset(int64_t n, int64_t c, int64_t s, int64_t channels, int64_t spatial,
                                  bool channels_last) {
  return channels_last ? (n * spatial + s) * channels + c : (n * channels + c) * spatial + s;
}

// Welford's running mean and sum of squared deviations: stable when |mean| >> std, where the
// textbook E[x^2] - E[x]^2 cancels catastrophically in fp32.
template <typename Acc>
struct WelfordState {
  Acc mean = 0, m2 = 0;
  int64_t count = 0;
};

template <typename Acc>
DLK_HOST_DEVICE void welford_update(WelfordState<Acc>& s, Acc x) {
  s.count += 1;
  const Acc delta = x - s.mean;
  s.mean += delta / Acc(s.count);
  s.m2 += delta * (x - s.mean);
}

// Chan et al.'s pairwise combination of two partial states (used by tree and split reductions).
template <typename Acc>
DLK_HOST_DEVICE WelfordState<Acc> welford_merge(const WelfordState<Acc>& a, const WelfordState<Acc>& b) {
  if (a.count == 0) return b;
  if (b.count == 0) return a;
  WelfordState<Acc> out;
  out.count = a.count + b.count;
  const Acc delta = b.mean - a.mean;
  const Acc b_share = Acc(b.count) / Acc(out.count);
  out.mean = a.mean + delta * b_share;
  out.m2 = a.m2 + b.m2 + delta * delta * Acc(a.count) * b_share;
  return out;
}

// Running-statistics update, exactly as torch: the running variance uses the unbiased variance.
// An empty batch leaves them untouched, as torch does (its statistics would be 0/0).
template <typename Acc>
DLK_HOST_DEVICE void update_running_stats(Acc* running_mean, Acc* running_var, int64_t c, Acc mean,
                                          Acc biased_var, int64_t count, double momentum) {
  if (count == 0) return;
  const Acc m = Acc(momentum);
  if (running_mean) running_mean[c] = (Acc(1) - m) * running_mean[c] + m * mean;
  if (running_var) {
    const Acc unbiased = count > 1 ? biased_var * Acc(count) / Acc(count - 1) : biased_var;
    running_var[c] = (Acc(1) - m) * running_var[c] + m * unbiased;
  }
}

}  // namespace dlk
