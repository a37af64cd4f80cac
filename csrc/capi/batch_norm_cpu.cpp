// C exports of the CPU reference fused BatchNorm (csrc/cpu/batch_norm.h): libdlk_cpu.so.
#include "batch_norm_params.h"

#include "../cpu/batch_norm.h"

using namespace dlk::capi;

DLK_API int dlk_batch_norm_stats_cpu(DLK_BN_STATS_ARGS) {
  const char* what = "batch_norm_stats (cpu)";
  dlk::BatchNormStatsParams p;
  if (!fill_bn_stats(p, what, DLK_BN_STATS_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] { return dlk::batch_norm_stats_cpu(p, dlk::DType(dtype)); });
}

DLK_API int dlk_batch_norm_apply_cpu(DLK_BN_APPLY_ARGS) {
  const char* what = "batch_norm_apply (cpu)";
  dlk::BatchNormApplyParams p;
  if (!fill_bn_apply(p, what, DLK_BN_APPLY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] { return dlk::batch_norm_apply_cpu(p, dlk::DType(dtype)); });
}

DLK_API int dlk_batch_norm_backward_reduce_cpu(DLK_BN_BACKWARD_REDUCE_ARGS) {
  const char* what = "batch_norm_backward_reduce (cpu)";
  dlk::BatchNormBwdReduceParams p;
  if (!fill_bn_backward_reduce(p, what, DLK_BN_BACKWARD_REDUCE_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] { return dlk::batch_norm_backward_reduce_cpu(p, dlk::DType(dtype)); });
}

DLK_API int dlk_batch_norm_backward_apply_cpu(DLK_BN_BACKWARD_APPLY_ARGS) {
  const char* what = "batch_norm_backward_apply (cpu)";
  dlk::BatchNormBwdApplyParams p;
  if (!fill_bn_backward_apply(p, what, DLK_BN_BACKWARD_APPLY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] { return dlk::batch_norm_backward_apply_cpu(p, dlk::DType(dtype)); });
}
