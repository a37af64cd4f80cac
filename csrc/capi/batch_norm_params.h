// Flat C arguments -> dlk::BatchNorm*Params, shared by batch_norm_cpu.cpp and batch_norm_cuda.cpp.
// The argument lists are declared once here (macros) so that the CPU and CUDA exports cannot drift.
// Per-channel pointers (mean, invstd, weight, bias, running stats, sums) hold float, or double when
// dtype is float64; null optional pointers mean "absent" as in dlk/batch_norm.h.
#pragma once

#include <cstdint>
#include <string>

#include "common.h"
#include "dlk/batch_norm.h"

// The (N, C, S) view of the input, S = H * W; channels_last: NHWC, else NCHW.
#define DLK_BN_GEOMETRY_ARGS int dtype, int64_t batch, int64_t channels, int64_t spatial, int channels_last
#define DLK_BN_GEOMETRY_NAMES dtype, batch, channels, spatial, channels_last

#define DLK_BN_STATS_ARGS                                                                                 \
  const void *input, void *mean, void *invstd, void *running_mean, void *running_var, double momentum, \
      double eps, DLK_BN_GEOMETRY_ARGS
#define DLK_BN_APPLY_ARGS                                                                             \
  const void *input, const void *mean, const void *invstd, const void *weight, const void *bias,   \
      const void *residual, void *output, int activation, double negative_slope, DLK_BN_GEOMETRY_ARGS
#define DLK_BN_BACKWARD_REDUCE_ARGS                                                                     \
  const void *grad_output, const void *output, const void *input, const void *mean, const void *invstd, \
      void *sum_dy, void *sum_dy_xhat, int activation, double negative_slope, DLK_BN_GEOMETRY_ARGS
#define DLK_BN_BACKWARD_APPLY_ARGS                                                                      \
  const void *grad_output, const void *output, const void *input, const void *mean, const void *invstd, \
      const void *weight, const void *sum_dy, const void *sum_dy_xhat, void *grad_input, void *grad_residual, \
      int training, int activation, double negative_slope, DLK_BN_GEOMETRY_ARGS

#define DLK_BN_STATS_NAMES \
  input, mean, invstd, running_mean, running_var, momentum, eps, DLK_BN_GEOMETRY_NAMES
#define DLK_BN_APPLY_NAMES input, mean, invstd, weight, bias, residual, output, activation, negative_slope, \
      DLK_BN_GEOMETRY_NAMES
#define DLK_BN_BACKWARD_REDUCE_NAMES \
  grad_output, output, input, mean, invstd, sum_dy, sum_dy_xhat, activation, negative_slope, DLK_BN_GEOMETRY_NAMES
#define DLK_BN_BACKWARD_APPLY_NAMES                                                                  \
  grad_output, output, input, mean, invstd, weight, sum_dy, sum_dy_xhat, grad_input, grad_residual, \
      training, activation, negative_slope, DLK_BN_GEOMETRY_NAMES

namespace dlk::capi {

inline bool fill_bn_geometry(BatchNormParams& p, const char* what, int activation, double negative_slope,
                             DLK_BN_GEOMETRY_ARGS) {
  if (!valid_dtype(dtype)) return invalid_argument(what, "unknown dtype " + std::to_string(dtype)), false;
  if (check_activation(what, activation != 0, negative_slope) != DLK_OK) return false;
  if (batch < 0 || channels < 0 || spatial < 0) return invalid_argument(what, "sizes must be non-negative"), false;
  p.batch = batch;
  p.channels = channels;
  p.spatial = spatial;
  p.channels_last = channels_last != 0;
  p.activation = activation != 0;
  p.negative_slope = negative_slope;
  return true;
}

inline bool fill_bn_stats(BatchNormStatsParams& p, const char* what, DLK_BN_STATS_ARGS) {
  if (!fill_bn_geometry(p, what, /*activation=*/0, /*negative_slope=*/0, DLK_BN_GEOMETRY_NAMES)) return false;
  p.input = input;
  p.mean = mean;
  p.invstd = invstd;
  p.running_mean = running_mean;
  p.running_var = running_var;
  p.momentum = momentum;
  p.eps = eps;
  return true;
}

inline bool fill_bn_apply(BatchNormApplyParams& p, const char* what, DLK_BN_APPLY_ARGS) {
  if (!fill_bn_geometry(p, what, activation, negative_slope, DLK_BN_GEOMETRY_NAMES)) return false;
  p.input = input;
  p.mean = mean;
  p.invstd = invstd;
  p.weight = weight;
  p.bias = bias;
  p.residual = residual;
  p.output = output;
  return true;
}

inline bool fill_bn_backward_reduce(BatchNormBwdReduceParams& p, const char* what, DLK_BN_BACKWARD_REDUCE_ARGS) {
  if (!fill_bn_geometry(p, what, activation, negative_slope, DLK_BN_GEOMETRY_NAMES)) return false;
  if (activation && output == nullptr)
    return invalid_argument(what, "output is needed with the activation (its sign picks the gradient's scale)"), false;
  p.grad_output = grad_output;
  p.output = activation ? output : nullptr;
  p.input = input;
  p.mean = mean;
  p.invstd = invstd;
  p.sum_dy = sum_dy;
  p.sum_dy_xhat = sum_dy_xhat;
  return true;
}

inline bool fill_bn_backward_apply(BatchNormBwdApplyParams& p, const char* what, DLK_BN_BACKWARD_APPLY_ARGS) {
  if (!fill_bn_geometry(p, what, activation, negative_slope, DLK_BN_GEOMETRY_NAMES)) return false;
  if (activation && output == nullptr)
    return invalid_argument(what, "output is needed with the activation (its sign picks the gradient's scale)"), false;
  p.grad_output = grad_output;
  p.output = activation ? output : nullptr;
  p.input = input;
  p.mean = mean;
  p.invstd = invstd;
  p.weight = weight;
  p.sum_dy = sum_dy;
  p.sum_dy_xhat = sum_dy_xhat;
  p.training = training != 0;
  p.grad_input = grad_input;
  p.grad_residual = grad_residual;
  return true;
}

}  // namespace dlk::capi
