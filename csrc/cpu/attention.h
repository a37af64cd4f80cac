// C++ CPU reference for flash attention: the FlashAttention-2 algorithm (query tiles x key tiles,
// online softmax, backward recomputing P from lse) as plain loops, with the semantics of
// dlk/attention.h. Torch-free. Accumulates in float (double for double input).
#pragma once

#include "dlk/attention.h"

namespace dlk {

// Writes every element of params.out and params.lse.
Status attention_forward_cpu(const AttentionFwdParams& params, DType dtype);

// Writes every element of params.grad_q, grad_k and grad_v, deterministically (no shared
// accumulators between threads).
Status attention_backward_cpu(const AttentionBwdParams& params, DType dtype);

}  // namespace dlk
