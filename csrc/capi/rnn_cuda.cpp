// rnn family of libdlk_cuda.so: the C ABI of rnn_api.h over the CUDA launchers (csrc/cuda/rnn.cuh).
// The caller makes the tensors' device current, passes its stream and provides the workspace sized by
// the _workspace_bytes query (uninitialised memory is fine). lengths live on the GPU here, so their
// values are the Python caller's to check.
#include "../cuda/rnn.cuh"

#include "rnn_api.h"
#include "rnn_params.h"

using namespace dlk;
using namespace dlk::capi;

DLK_API int dlk_rnn_layer_forward_workspace_bytes_cuda(DLK_RNN_LAYER_FORWARD_PARAMS, int64_t* workspace_bytes) {
  constexpr const char* what = "rnn_layer_forward workspace (cuda)";
  const RnnFwdParams p = rnn_layer_forward_params(DLK_RNN_LAYER_FORWARD_ARGS);
  if (const int status = check_rnn_layer_forward(what, cell, p, b_hh, dtype)) return status;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(rnn_forward_workspace_bytes(p, DType(dtype)));
    return Status::kOk;
  });
}

DLK_API int dlk_rnn_layer_forward_cuda(DLK_RNN_LAYER_FORWARD_PARAMS, void* workspace, int64_t workspace_bytes,
                                       void* stream) {
  constexpr const char* what = "rnn_layer_forward (cuda)";
  const RnnFwdParams p = rnn_layer_forward_params(DLK_RNN_LAYER_FORWARD_ARGS);
  if (const int status = check_rnn_layer_forward(what, cell, p, b_hh, dtype)) return status;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return rnn_forward_cuda(p, DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                            static_cast<cudaStream_t>(stream));
  });
}

DLK_API int dlk_rnn_layer_backward_workspace_bytes_cuda(DLK_RNN_LAYER_BACKWARD_PARAMS, int64_t* workspace_bytes) {
  constexpr const char* what = "rnn_layer_backward workspace (cuda)";
  const RnnBwdParams p = rnn_layer_backward_params(DLK_RNN_LAYER_BACKWARD_ARGS);
  if (const int status = check_rnn_layer_backward(what, cell, p, dtype)) return status;
  return guarded(what, [&] {
    *workspace_bytes = static_cast<int64_t>(rnn_backward_workspace_bytes(p, DType(dtype)));
    return Status::kOk;
  });
}

DLK_API int dlk_rnn_layer_backward_cuda(DLK_RNN_LAYER_BACKWARD_PARAMS, void* workspace, int64_t workspace_bytes,
                                        void* stream) {
  constexpr const char* what = "rnn_layer_backward (cuda)";
  const RnnBwdParams p = rnn_layer_backward_params(DLK_RNN_LAYER_BACKWARD_ARGS);
  if (const int status = check_rnn_layer_backward(what, cell, p, dtype)) return status;
  if (workspace_bytes < 0) return invalid_argument(what, "workspace_bytes must not be negative");
  return guarded(what, [&] {
    return rnn_backward_cuda(p, DType(dtype), workspace, static_cast<size_t>(workspace_bytes),
                             static_cast<cudaStream_t>(stream));
  });
}
