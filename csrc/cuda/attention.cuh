// CUDA launchers for flash attention (FlashAttention-2 algorithm): the forward writes out and lse;
// the backward recomputes P from lse. Torch-free: the binding (csrc/bindings/attention_cuda.cpp)
// fills the params from tensors, allocates the workspace and passes torch's current stream; the
// semantics, layouts and the dropout rule are those of dlk/attention.h.
//
// fp16 / bf16 run on tensor cores (mma.sync, fp32 accumulation); fp32 runs exactly unless
// params.allow_tf32 (then TF32 tensor cores may be used).
// On compute capability 9.0, with sm_90a code in the build, the fp16 / bf16 forward may run a
// wgmma kernel instead (attention_fwd_sm90_kernel.cuh: head dims 64 / 128 / 256, 16-byte-aligned
// rows, no bias or dropout); opt-in with DLK_ATTENTION_WGMMA=1, read at every call, until verified
// on a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "dlk/attention.h"

namespace dlk {

// Writes every element of params.out and params.lse. Returns kOk without launching when empty.
Status attention_forward_cuda(const AttentionFwdParams& params, DType dtype, cudaStream_t stream);

// Whether attention_forward_cuda runs the Hopper (wgmma) kernel, on the current device, for the fp16 /
// bf16 inputs that kernel handles: DLK_ATTENTION_WGMMA=1, a build holding sm_90a code, a 9.0 device.
// Lets tests and benchmarks tell which kernel they measured.
bool attention_forward_wgmma_available();

// Scratch the backward needs (fp32 row terms D_i = rowsum(dO * O), dq accumulators, ...); its
// contents are undefined on entry. Query with the same params on the same device as the launch; 0
// means workspace may be null.
size_t attention_backward_workspace_bytes(const AttentionBwdParams& params, DType dtype);

// Writes every element of grad_q, grad_k and grad_v, deterministically (no floating-point atomics:
// the same inputs give bitwise the same gradients).
Status attention_backward_cuda(const AttentionBwdParams& params, DType dtype, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream);

}  // namespace dlk
