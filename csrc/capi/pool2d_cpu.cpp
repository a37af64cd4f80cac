// C exports of the CPU reference pooling (csrc/cpu/pool2d.h): libdlk_cpu.so.
#include "pool2d_params.h"

#include "../cpu/pool2d.h"

using dlk::capi::fill_pool2d_geometry;
using dlk::capi::guarded;

DLK_API int dlk_pool2d_forward_cpu(DLK_POOL2D_FORWARD_ARGS) {
  const char* what = "pool2d_forward (cpu)";
  dlk::Pool2dFwdParams p;
  if (!fill_pool2d_geometry(p, what, DLK_POOL2D_GEOMETRY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  p.input = input;
  p.output = output;
  p.indices = p.mode == dlk::PoolMode::kMax ? indices : nullptr;
  return guarded(what, [&] { return dlk::pool2d_forward_cpu(p, static_cast<dlk::DType>(dtype)); });
}

DLK_API int dlk_pool2d_backward_cpu(DLK_POOL2D_BACKWARD_ARGS) {
  const char* what = "pool2d_backward (cpu)";
  dlk::Pool2dBwdParams p;
  if (!fill_pool2d_geometry(p, what, DLK_POOL2D_GEOMETRY_NAMES)) return DLK_ERR_INVALID_ARGUMENT;
  p.grad_output = grad_output;
  p.indices = p.mode == dlk::PoolMode::kMax ? indices : nullptr;
  p.grad_input = grad_input;
  return guarded(what, [&] { return dlk::pool2d_backward_cpu(p, static_cast<dlk::DType>(dtype)); });
}
