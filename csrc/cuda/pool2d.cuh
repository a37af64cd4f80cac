// CUDA launchers for 2-D pooling (max, average, adaptive average), forward and backward.
// Torch-free: the C ABI (csrc/capi/pool2d_cuda.cpp) fills the params from flat arguments and passes
// the caller's stream; the window math is the shared code in dlk/pool2d.h.
#pragma once

#include <cuda_runtime.h>

#include "dlk/pool2d.h"

namespace dlk {

// Writes params.output, and params.indices for PoolMode::kMax unless they are null (inference: no
// gradient will be asked for, so the 8-byte indices are not written). Returns kOk without launching
// when the output is empty.
Status pool2d_forward_cuda(const Pool2dFwdParams& params, DType dtype, cudaStream_t stream);

// Writes every element of params.grad_input (no zero-fill needed beforehand). Deterministic.
Status pool2d_backward_cuda(const Pool2dBwdParams& params, DType dtype, cudaStream_t stream);

}  // namespace dlk
