// CUDA launchers for direct 2-D convolution: forward (with the fused bias + residual + ReLU
// epilogue), the data gradient (dgrad) and the weight gradient (wgrad), as implicit GEMMs computed in
// the kernel without materialising im2col; depthwise convolutions (groups == C == K) take dedicated
// per-channel kernels. Torch-free: the binding fills the params from tensors and passes torch's
// current stream; the semantics and layouts are those of dlk/conv2d.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "dlk/conv2d.h"

namespace dlk {

// Writes params.output. Returns kOk without launching when the output is empty.
Status conv2d_forward_cuda(const Conv2dFwdParams& params, DType dtype, cudaStream_t stream);

// Writes every element of params.grad_input (no zero-fill needed beforehand).
Status conv2d_backward_input_cuda(const Conv2dDgradParams& params, DType dtype, cudaStream_t stream);

// The weight gradient reduces over N*P*Q, which is split over blocks so that few output channels
// still fill the GPU. The blocks' fp32 (fp64 for double) partial sums go to a caller-provided
// workspace, whose contents are undefined on entry, and a second kernel adds them in a fixed order
// (deterministic, no atomics). The size depends on the shape, dtype and the current device, so query
// it with the same params on the same device as the launch; it is 0 when no split is needed, and
// workspace may then be null.
size_t conv2d_backward_weight_workspace_bytes(const Conv2dWgradParams& params, DType dtype);

// Writes every element of params.grad_weight, zeros when N*P*Q == 0.
Status conv2d_backward_weight_cuda(const Conv2dWgradParams& params, DType dtype, void* workspace,
                                   size_t workspace_bytes, cudaStream_t stream);

}  // namespace dlk
