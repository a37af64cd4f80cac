#include "batch_norm.h"

#include <cmath>

#include "dispatch.h"
#include "dlk/half.h"

namespace dlk {
namespace {

// Reductions run in double whatever the input: this is the reference the GPU kernels' fp32
// partial sums are judged against. Elementwise math runs in the kernels' accumulate type.
template <typename Stat>
const Stat* stat_ptr(const void* p) { return static_cast<const Stat*>(p); }

template <typename T, typename Fn>
void for_each_in_channel(const BatchNormParams& p, int64_t c, Fn&& fn) {
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t s = 0; s < p.spatial; ++s) fn(bn_offset(n, c, s, p.channels, p.spatial, p.channels_last));
}

template <typename T>
void stats(const BatchNormStatsParams& p) {
  using Stat = typename AccType<T>::type;
  const T* in = static_cast<const T*>(p.input);
  const int64_t count = p.batch * p.spatial;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < p.channels; ++c) {
    WelfordState<double> state;
    for_each_in_channel<T>(p, c, [&](int64_t i) { welford_update(state, double(to_acc(in[i]))); });
    const double biased_var = state.m2 / double(count);
    static_cast<Stat*>(p.mean)[c] = Stat(state.mean);
    static_cast<Stat*>(p.invstd)[c] = Stat(1.0 / std::sqrt(biased_var + p.eps));
    update_running_stats(static_cast<Stat*>(p.running_mean), static_cast<Stat*>(p.running_var), c,
                         Stat(state.mean), Stat(biased_var), count, p.momentum);
  }
}

template <typename T>
void apply(const BatchNormApplyParams& p) {
  using Acc = typename AccType<T>::type;
  const T* in = static_cast<const T*>(p.input);
  const T* residual = static_cast<const T*>(p.residual);
  T* out = static_cast<T*>(p.output);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < p.channels; ++c) {
    const Acc weight = p.weight ? stat_ptr<Acc>(p.weight)[c] : Acc(1);
    const Acc bias = p.bias ? stat_ptr<Acc>(p.bias)[c] : Acc(0);
    const Acc scale = stat_ptr<Acc>(p.invstd)[c] * weight;
    const Acc shift = bias - stat_ptr<Acc>(p.mean)[c] * scale;
    for_each_in_channel<T>(p, c, [&](int64_t i) {
      Acc y = to_acc(in[i]) * scale + shift;
      if (residual) y += to_acc(residual[i]);
      y = activate(y, p.activation, Acc(p.negative_slope));
      out[i] = from_acc<T>(y);
    });
  }
}

// The gradient reaching the normalisation: through the activation, decided from the saved output.
template <typename T, typename Acc>
Acc activation_grad(const T* grad_output, const T* output, const BatchNormParams& p, int64_t i) {
  const Acc g = Acc(to_acc(grad_output[i]));
  return p.activation ? leaky_relu_backward(g, Acc(to_acc(output[i])), Acc(p.negative_slope)) : g;
}

template <typename T>
void backward_reduce(const BatchNormBwdReduceParams& p) {
  using Stat = typename AccType<T>::type;
  const T* grad_output = static_cast<const T*>(p.grad_output);
  const T* output = static_cast<const T*>(p.output);
  const T* in = static_cast<const T*>(p.input);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < p.channels; ++c) {
    const double mean = stat_ptr<Stat>(p.mean)[c], invstd = stat_ptr<Stat>(p.invstd)[c];
    double sum_dy = 0, sum_dy_xhat = 0;
    for_each_in_channel<T>(p, c, [&](int64_t i) {
      const double g = activation_grad<T, double>(grad_output, output, p, i);
      sum_dy += g;
      sum_dy_xhat += g * (double(to_acc(in[i])) - mean) * invstd;
    });
    static_cast<Stat*>(p.sum_dy)[c] = Stat(sum_dy);
    static_cast<Stat*>(p.sum_dy_xhat)[c] = Stat(sum_dy_xhat);
  }
}

template <typename T>
void backward_apply(const BatchNormBwdApplyParams& p) {
  using Acc = typename AccType<T>::type;
  const T* grad_output = static_cast<const T*>(p.grad_output);
  const T* output = static_cast<const T*>(p.output);
  const T* in = static_cast<const T*>(p.input);
  T* grad_input = static_cast<T*>(p.grad_input);
  T* grad_residual = static_cast<T*>(p.grad_residual);
  const Acc count = Acc(p.batch * p.spatial);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < p.channels; ++c) {
    const Acc mean = stat_ptr<Acc>(p.mean)[c], invstd = stat_ptr<Acc>(p.invstd)[c];
    const Acc weight = p.weight ? stat_ptr<Acc>(p.weight)[c] : Acc(1);
    // grad_input = g * scale + x * x_coef + constant: the batch-statistics terms folded per channel.
    const Acc scale = weight * invstd;
    const Acc mean_dy = p.training ? stat_ptr<Acc>(p.sum_dy)[c] / count : Acc(0);
    const Acc mean_dy_xhat = p.training ? stat_ptr<Acc>(p.sum_dy_xhat)[c] / count : Acc(0);
    for_each_in_channel<T>(p, c, [&](int64_t i) {
      const Acc g = activation_grad<T, Acc>(grad_output, output, p, i);
      const Acc xhat = (to_acc(in[i]) - mean) * invstd;
      grad_input[i] = from_acc<T>(scale * (g - mean_dy - xhat * mean_dy_xhat));
      if (grad_residual) grad_residual[i] = from_acc<T>(g);
    });
  }
}

template <typename T> struct Stats { static void run(const BatchNormStatsParams& p) { stats<T>(p); } };
template <typename T> struct Apply { static void run(const BatchNormApplyParams& p) { apply<T>(p); } };
template <typename T> struct BwdReduce { static void run(const BatchNormBwdReduceParams& p) { backward_reduce<T>(p); } };
template <typename T> struct BwdApply { static void run(const BatchNormBwdApplyParams& p) { backward_apply<T>(p); } };

}  // namespace

Status batch_norm_stats_cpu(const BatchNormStatsParams& p, DType dtype) { return dispatch_cpu<Stats>(dtype, p); }
Status batch_norm_apply_cpu(const BatchNormApplyParams& p, DType dtype) { return dispatch_cpu<Apply>(dtype, p); }
Status batch_norm_backward_reduce_cpu(const BatchNormBwdReduceParams& p, DType dtype) {
  return dispatch_cpu<BwdReduce>(dtype, p);
}
Status batch_norm_backward_apply_cpu(const BatchNormBwdApplyParams& p, DType dtype) {
  return dispatch_cpu<BwdApply>(dtype, p);
}

}  // namespace dlk
