// attention family of libdlk_cuda.so: the C ABI of attention_api.h over the CUDA launchers
// (csrc/cuda/attention.cuh). The caller makes the tensors' device current, passes its stream and
// provides the backward's workspace sized by dlk_attention_backward_workspace_bytes_cuda. cu_seqlens
// live on the GPU here, so their values are the Python caller's to check.
#include "../cuda/attention.cuh"

#include "attention_api.h"
#include "attention_params.h"

using namespace dlk;
using namespace dlk::capi;

DLK_API int dlk_attention_forward_cuda(DLK_ATTENTION_FORWARD_PARAMS, void* stream) {
  constexpr const char* what = "attention_forward (cuda)";
  const AttentionFwdParams p = attention_forward_params(DLK_ATTENTION_ARGS, out, out_batch_stride, out_head_stride,
                                                        out_row_stride, lse, dtype);
  if (const int status = check_attention(what, p, dtype)) return status;
  return guarded(what, [&] { return attention_forward_cuda(p, DType(dtype), static_cast<cudaStream_t>(stream)); });
}

DLK_API int dlk_attention_forward_wgmma_available_cuda(void) {
  try {
    return attention_forward_wgmma_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

DLK_API int dlk_attention_backward_workspace_bytes_cuda(DLK_ATTENTION_BACKWARD_PARAMS, int64_t* workspace_bytes) {
  constexpr const char* what = "attention_backward workspace (cuda)";
  const AttentionBwdParams p = attention_backward_params(DLK_ATTENTION_BACKWARD_ARGS);
  if (const int status = check_attention(what, p, dtype)) return status;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(attention_backward_workspace_bytes(p, DType(dtype)));
    return Status::kOk;
  });
}

DLK_API int dlk_attention_backward_cuda(DLK_ATTENTION_BACKWARD_PARAMS, void* workspace, int64_t workspace_bytes,
                                        void* stream) {
  constexpr const char* what = "attention_backward (cuda)";
  const AttentionBwdParams p = attention_backward_params(DLK_ATTENTION_BACKWARD_ARGS);
  if (const int status = check_attention(what, p, dtype)) return status;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return attention_backward_cuda(p, DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                                   static_cast<cudaStream_t>(stream));
  });
}
