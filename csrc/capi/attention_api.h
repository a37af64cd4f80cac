// C ABI of the attention family (flash attention forward and backward), exported by libdlk_cpu.so
// (_cpu) and libdlk_cuda.so (_cuda). Conventions: csrc/capi/capi.h. dlkernels/_native/attention.py is
// the caller: it allocates out / lse / gradients and checks the tensors as
// csrc/bindings/attention_binding.h did; semantics, shapes and the stride rule are dlk/attention.h's.
//
// Names: dlk_attention_ + the dlk_C op's name without "attention_". Argument order: the shared
// AttentionParams fields (pointers, sizes, strides of q / k / v / bias, softmax and dropout), then the
// entry's own tensors with their (batch, head, row) strides, dtype (dlk::DType as int), then for CUDA
// the workspace (backward) and the stream. Strides are in elements; dense batch strides are 0 for
// varlen inputs (cu_seqlens given). lse is contiguous, so its strides are derived, not passed. The
// dropout seed is the address of one int64 beside the tensors (on the GPU for CUDA), null without dropout.
#pragma once

#include "capi.h"

#define DLK_ATTENTION_PARAMS                                                                                     \
  const void *q, const void *k, const void *v, const void *bias, const int *cu_seqlens_q, const int *cu_seqlens_k, \
      int batch, int heads_q, int heads_kv, int head_dim, int seqlen_q, int seqlen_k, int64_t total_q,             \
      int64_t total_k, int64_t q_batch_stride, int64_t q_head_stride, int64_t q_row_stride, int64_t k_batch_stride, \
      int64_t k_head_stride, int64_t k_row_stride, int64_t v_batch_stride, int64_t v_head_stride,                  \
      int64_t v_row_stride, int64_t bias_batch_stride, int64_t bias_head_stride, int64_t bias_row_stride,          \
      double scale, int causal, int causal_bottom_right, double dropout_p, const int64_t *seed, int allow_tf32
#define DLK_ATTENTION_ARGS                                                                                         \
  q, k, v, bias, cu_seqlens_q, cu_seqlens_k, batch, heads_q, heads_kv, head_dim, seqlen_q, seqlen_k, total_q,      \
      total_k, q_batch_stride, q_head_stride, q_row_stride, k_batch_stride, k_head_stride, k_row_stride,          \
      v_batch_stride, v_head_stride, v_row_stride, bias_batch_stride, bias_head_stride, bias_row_stride, scale,    \
      causal, causal_bottom_right, dropout_p, seed, allow_tf32

// Writes out (like q, its own strides) and lse ((B, Hq, Nq) dense, (Hq, total_q) varlen, float or double).
#define DLK_ATTENTION_FORWARD_PARAMS                                                                           \
  DLK_ATTENTION_PARAMS, void *out, int64_t out_batch_stride, int64_t out_head_stride, int64_t out_row_stride,   \
      void *lse, int dtype
// Reads out, grad_out and lse; writes grad_q, grad_k and grad_v (like q, k and v, each its own strides).
#define DLK_ATTENTION_BACKWARD_PARAMS                                                                          \
  DLK_ATTENTION_PARAMS, const void *out, int64_t out_batch_stride, int64_t out_head_stride,                    \
      int64_t out_row_stride, const void *grad_out, int64_t grad_out_batch_stride, int64_t grad_out_head_stride, \
      int64_t grad_out_row_stride, const void *lse, void *grad_q, int64_t grad_q_batch_stride,                 \
      int64_t grad_q_head_stride, int64_t grad_q_row_stride, void *grad_k, int64_t grad_k_batch_stride,        \
      int64_t grad_k_head_stride, int64_t grad_k_row_stride, void *grad_v, int64_t grad_v_batch_stride,        \
      int64_t grad_v_head_stride, int64_t grad_v_row_stride, int dtype

DLK_API int dlk_attention_forward_cpu(DLK_ATTENTION_FORWARD_PARAMS);
DLK_API int dlk_attention_backward_cpu(DLK_ATTENTION_BACKWARD_PARAMS);

DLK_API int dlk_attention_forward_cuda(DLK_ATTENTION_FORWARD_PARAMS, void* stream);
// 1 when attention_forward_cuda would run the Hopper (wgmma) kernel on the current device for fp16 / bf16
// inputs it handles (DLK_ATTENTION_WGMMA=1, sm_90a code in the build, a 9.0 device), else 0.
DLK_API int dlk_attention_forward_wgmma_available_cuda(void);
// Stores in *workspace_bytes what the backward needs on the current device (same arguments as the launch).
DLK_API int dlk_attention_backward_workspace_bytes_cuda(DLK_ATTENTION_BACKWARD_PARAMS, int64_t* workspace_bytes);
DLK_API int dlk_attention_backward_cuda(DLK_ATTENTION_BACKWARD_PARAMS, void* workspace, int64_t workspace_bytes,
                                        void* stream);
