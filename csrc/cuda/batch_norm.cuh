// CUDA launchers for fused BatchNorm (+ residual) (+ ReLU): the four steps of training and eval,
// forward and backward. Torch-free: the binding (csrc/bindings/batch_norm_cuda.cpp) fills the
// params from tensors, allocates the reductions' workspace and passes torch's current stream; the
// shared math is in dlk/batch_norm.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "dlk/batch_norm.h"

namespace dlk {

// The two reductions split each channel's N*S elements over several blocks so that few channels
// still fill the GPU; the blocks' partial results go to a caller-provided workspace and a second,
// small kernel combines them in a fixed order (deterministic, no atomics, no zero-fill). The size
// depends on the shape, dtype, the alignment of the tensors read (input; grad_output and output too
// for the backward) and the current device, so query it with the same params on the same device as
// the launch. It is 0 when one block per channel suffices; workspace may then be null.
size_t batch_norm_stats_workspace_bytes(const BatchNormStatsParams& params, DType dtype);
size_t batch_norm_backward_reduce_workspace_bytes(const BatchNormBwdReduceParams& params, DType dtype);

// Writes mean and invstd = 1/sqrt(biased var + eps) per channel and, when given, updates the running
// statistics in place. With N*S == 0 the mean is 0 and invstd NaN, as the CPU reference gives.
Status batch_norm_stats_cuda(const BatchNormStatsParams& params, DType dtype, void* workspace,
                             size_t workspace_bytes, cudaStream_t stream);

// output = act((x - mean) * invstd * weight + bias + residual).
Status batch_norm_apply_cuda(const BatchNormApplyParams& params, DType dtype, cudaStream_t stream);

// sum_dy = sum g, sum_dy_xhat = sum g * (x - mean) * invstd per channel, g = grad_output through the
// activation when it is on (scaled by 1 or negative_slope by the output's sign, dlk/activation.h).
Status batch_norm_backward_reduce_cuda(const BatchNormBwdReduceParams& params, DType dtype, void* workspace,
                                       size_t workspace_bytes, cudaStream_t stream);

// grad_input (and grad_residual = g when that pointer is given).
Status batch_norm_backward_apply_cuda(const BatchNormBwdApplyParams& params, DType dtype, cudaStream_t stream);

}  // namespace dlk
