// CUDA launchers for Winograd convolution F(2x2,3x3) and F(4x4,3x3): the weight transform and the
// forward pass (also used for the data gradient). Torch-free: the binding
// (csrc/bindings/conv2d_cuda.cpp) fills the params from tensors, allocates the workspace and passes
// torch's current stream; the transforms are the shared code in dlk/winograd.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "dlk/winograd.h"

namespace dlk {

// Writes U (alpha*alpha, K, C) in the weight's dtype. kInvalidArgument unless tile is 2 or 4; kOk
// without launching when K * C == 0.
Status winograd_transform_weight_cuda(const WinogradWeightParams& params, DType dtype, cudaStream_t stream);

// Scratch the forward needs for the transformed input (and, when U's rows cannot be read with
// 16-byte copies, a padded copy of U). Contents undefined on entry; 0 when nothing is needed.
size_t conv2d_winograd_workspace_bytes(const WinogradFwdParams& params, DType dtype);

// output = act(conv3x3(input, U) + bias + residual). kInvalidArgument unless tile is 2 or 4 and the
// geometry is 3x3 / stride 1 / dilation 1 / groups 1, or when the workspace is smaller than
// conv2d_winograd_workspace_bytes(params, dtype) or not 16-byte aligned; kOk without launching on an
// empty output.
Status conv2d_winograd_cuda(const WinogradFwdParams& params, DType dtype, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream);

}  // namespace dlk
