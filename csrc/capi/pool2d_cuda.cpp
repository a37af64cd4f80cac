// C exports of the CUDA pooling launchers (csrc/cuda/pool2d.cuh): libdlk_cuda.so. The caller makes
// the tensors' device current and passes its stream (a cudaStream_t).
#include "pool2d_params.h"

#include "../cuda/pool2d.cuh"

using dlk::capi::fill_pool2d_geometry;
using dlk::capi::guarded;

DLK_API int dlk_pool2d_forward_cuda(DLK_POOL2D_FORWARD_ARGS, void* stream) {
  const char* what = "pool2d_forward (cuda)";
  dlk::Pool2dFwdParams p;
  if (!fill_pool2d_geometry(p, what, DLK_POOL2D_GEOMETRY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  p.input = input;
  p.output = output;
  p.indices = p.mode == dlk::PoolMode::kMax ? indices : nullptr;
  return guarded(what, [&] {
    return dlk::pool2d_forward_cuda(p, static_cast<dlk::DType>(dtype), static_cast<cudaStream_t>(stream));
  });
}

DLK_API int dlk_pool2d_backward_cuda(DLK_POOL2D_BACKWARD_ARGS, void* stream) {
  const char* what = "pool2d_backward (cuda)";
  dlk::Pool2dBwdParams p;
  if (!fill_pool2d_geometry(p, what, DLK_POOL2D_GEOMETRY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  p.grad_output = grad_output;
  p.indices = p.mode == dlk::PoolMode::kMax ? indices : nullptr;
  p.grad_input = grad_input;
  return guarded(what, [&] {
    return dlk::pool2d_backward_cuda(p, static_cast<dlk::DType>(dtype), static_cast<cudaStream_t>(stream));
  });
}
