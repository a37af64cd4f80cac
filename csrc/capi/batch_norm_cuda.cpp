// C exports of the CUDA fused BatchNorm launchers (csrc/cuda/batch_norm.cuh): libdlk_cuda.so. The caller
// makes the tensors' device current, passes its stream (a cudaStream_t) and, for the two reductions,
// provides the workspace sized by the matching _workspace_bytes query (same arguments, same device).
#include "batch_norm_params.h"

#include "../cuda/batch_norm.cuh"

using namespace dlk::capi;

DLK_API int dlk_batch_norm_stats_workspace_bytes_cuda(DLK_BN_STATS_ARGS, int64_t* workspace_bytes) {
  const char* what = "batch_norm_stats workspace (cuda)";
  dlk::BatchNormStatsParams p;
  if (!fill_bn_stats(p, what, DLK_BN_STATS_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(dlk::batch_norm_stats_workspace_bytes(p, dlk::DType(dtype)));
    return dlk::Status::kOk;
  });
}

DLK_API int dlk_batch_norm_stats_cuda(DLK_BN_STATS_ARGS, void* workspace, int64_t workspace_bytes, void* stream) {
  const char* what = "batch_norm_stats (cuda)";
  dlk::BatchNormStatsParams p;
  if (!fill_bn_stats(p, what, DLK_BN_STATS_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return dlk::batch_norm_stats_cuda(p, dlk::DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                                      static_cast<cudaStream_t>(stream));
  });
}

DLK_API int dlk_batch_norm_apply_cuda(DLK_BN_APPLY_ARGS, void* stream) {
  const char* what = "batch_norm_apply (cuda)";
  dlk::BatchNormApplyParams p;
  if (!fill_bn_apply(p, what, DLK_BN_APPLY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] {
    return dlk::batch_norm_apply_cuda(p, dlk::DType(dtype), static_cast<cudaStream_t>(stream));
  });
}

DLK_API int dlk_batch_norm_backward_reduce_workspace_bytes_cuda(DLK_BN_BACKWARD_REDUCE_ARGS,
                                                                int64_t* workspace_bytes) {
  const char* what = "batch_norm_backward_reduce workspace (cuda)";
  dlk::BatchNormBwdReduceParams p;
  if (!fill_bn_backward_reduce(p, what, DLK_BN_BACKWARD_REDUCE_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(dlk::batch_norm_backward_reduce_workspace_bytes(p, dlk::DType(dtype)));
    return dlk::Status::kOk;
  });
}

DLK_API int dlk_batch_norm_backward_reduce_cuda(DLK_BN_BACKWARD_REDUCE_ARGS, void* workspace, int64_t workspace_bytes,
                                                void* stream) {
  const char* what = "batch_norm_backward_reduce (cuda)";
  dlk::BatchNormBwdReduceParams p;
  if (!fill_bn_backward_reduce(p, what, DLK_BN_BACKWARD_REDUCE_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return dlk::batch_norm_backward_reduce_cuda(p, dlk::DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                                                static_cast<cudaStream_t>(stream));
  });
}

DLK_API int dlk_batch_norm_backward_apply_cuda(DLK_BN_BACKWARD_APPLY_ARGS, void* stream) {
  const char* what = "batch_norm_backward_apply (cuda)";
  dlk::BatchNormBwdApplyParams p;
  if (!fill_bn_backward_apply(p, what, DLK_BN_BACKWARD_APPLY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  return guarded(what, [&] {
    return dlk::batch_norm_backward_apply_cuda(p, dlk::DType(dtype), static_cast<cudaStream_t>(stream));
  });
}
