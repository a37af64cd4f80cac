// Flat C arguments -> AttentionFwdParams / AttentionBwdParams, shared by attention_cpu.cpp and
// attention_cuda.cpp. The checks are the cheap ones the kernels rely on; the Python caller has
// checked the tensors (shapes, dtypes, devices, unit head-dim strides) before.
#pragma once

#include <algorithm>
#include <iterator>
#include <string>

#include "attention_api.h"
#include "common.h"
#include "dlk/attention.h"

// The backward's argument list, forwarded whole to attention_backward_params.
#define DLK_ATTENTION_BACKWARD_ARGS                                                                                  \
  DLK_ATTENTION_ARGS, out, out_batch_stride, out_head_stride, out_row_stride, grad_out, grad_out_batch_stride,       \
      grad_out_head_stride, grad_out_row_stride, lse, grad_q, grad_q_batch_stride, grad_q_head_stride,              \
      grad_q_row_stride, grad_k, grad_k_batch_stride, grad_k_head_stride, grad_k_row_stride, grad_v,                \
      grad_v_batch_stride, grad_v_head_stride, grad_v_row_stride, dtype

namespace dlk::capi {

inline void set_attention_params(AttentionParams& p, DLK_ATTENTION_PARAMS) {
  (void)total_k;  // only the CPU wrapper's cu_seqlens check reads it
  p.batch = batch;
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.head_dim = head_dim;
  p.seqlen_q = seqlen_q;
  p.seqlen_k = seqlen_k;
  p.total_q = total_q;
  p.cu_seqlens_q = cu_seqlens_q;
  p.cu_seqlens_k = cu_seqlens_k;
  p.q = q;
  p.k = k;
  p.v = v;
  p.q_batch_stride = q_batch_stride; p.q_head_stride = q_head_stride; p.q_row_stride = q_row_stride;
  p.k_batch_stride = k_batch_stride; p.k_head_stride = k_head_stride; p.k_row_stride = k_row_stride;
  p.v_batch_stride = v_batch_stride; p.v_head_stride = v_head_stride; p.v_row_stride = v_row_stride;
  p.bias = bias;
  p.bias_batch_stride = bias_batch_stride; p.bias_head_stride = bias_head_stride;
  p.bias_row_stride = bias_row_stride;
  // lse is contiguous: (B, Hq, Nq) dense, (Hq, total_q) varlen.
  const bool varlen = cu_seqlens_q != nullptr;
  p.lse_batch_stride = varlen ? 0 : int64_t(heads_q) * seqlen_q;
  p.lse_head_stride = varlen ? total_q : seqlen_q;
  p.scale = float(scale);
  p.scale_f64 = scale;
  p.causal = causal != 0;
  p.causal_bottom_right = causal_bottom_right != 0;
  p.dropout_p = dropout_p;
  p.seed = seed;                   // read by the kernels (device memory for CUDA), only when dropping
  p.allow_tf32 = allow_tf32 != 0;  // the wrappers keep it only for float32
}

// DLK_OK, or the failure code with "<what>: <why>" as the last error.
inline int check_attention(const char* what, const AttentionParams& p, int dtype) {
  if (!valid_dtype(dtype)) {
    set_last_error(std::string(what) + ": unknown dtype code " + std::to_string(dtype));
    return DLK_ERR_UNSUPPORTED_DTYPE;
  }
  if (std::find(std::begin(kAttentionHeadDims), std::end(kAttentionHeadDims), p.head_dim) ==
      std::end(kAttentionHeadDims))
    return invalid_argument(what, "unsupported head dim " + std::to_string(p.head_dim));
  if (p.heads_kv < 1 || p.heads_q % p.heads_kv != 0)
    return invalid_argument(what, "the query heads must be a multiple of the key/value heads");
  if (p.batch < 0 || p.seqlen_q < 0 || p.seqlen_k < 0 || p.total_q < 0)
    return invalid_argument(what, "sizes must not be negative");
  if (!(p.dropout_p >= 0.0 && p.dropout_p < 1.0)) return invalid_argument(what, "dropout_p must be in [0, 1)");
  if (p.dropout_p > 0.0 && p.seed == nullptr) return invalid_argument(what, "dropout needs a seed");
  if ((p.cu_seqlens_q == nullptr) != (p.cu_seqlens_k == nullptr))
    return invalid_argument(what, "give both cu_seqlens_q and cu_seqlens_k, or neither");
  if (p.cu_seqlens_q != nullptr && p.bias != nullptr)
    return invalid_argument(what, "bias is not supported with cu_seqlens");
  return DLK_OK;
}

inline AttentionFwdParams attention_forward_params(DLK_ATTENTION_FORWARD_PARAMS) {
  AttentionFwdParams p;
  set_attention_params(p, DLK_ATTENTION_ARGS);
  p.allow_tf32 = p.allow_tf32 && DType(dtype) == DType::kFloat32;
  p.out = out;
  p.out_batch_stride = out_batch_stride; p.out_head_stride = out_head_stride; p.out_row_stride = out_row_stride;
  p.lse = lse;
  return p;
}

inline AttentionBwdParams attention_backward_params(DLK_ATTENTION_BACKWARD_PARAMS) {
  AttentionBwdParams p;
  set_attention_params(p, DLK_ATTENTION_ARGS);
  p.allow_tf32 = p.allow_tf32 && DType(dtype) == DType::kFloat32;
  p.out = out;
  p.out_batch_stride = out_batch_stride; p.out_head_stride = out_head_stride; p.out_row_stride = out_row_stride;
  p.grad_out = grad_out;
  p.grad_out_batch_stride = grad_out_batch_stride;
  p.grad_out_head_stride = grad_out_head_stride;
  p.grad_out_row_stride = grad_out_row_stride;
  p.lse = const_cast<void*>(lse);  // AttentionParams::lse is the forward's output; the backward only reads it
  p.grad_q = grad_q;
  p.grad_q_batch_stride = grad_q_batch_stride;
  p.grad_q_head_stride = grad_q_head_stride;
  p.grad_q_row_stride = grad_q_row_stride;
  p.grad_k = grad_k;
  p.grad_k_batch_stride = grad_k_batch_stride;
  p.grad_k_head_stride = grad_k_head_stride;
  p.grad_k_row_stride = grad_k_row_stride;
  p.grad_v = grad_v;
  p.grad_v_batch_stride = grad_v_batch_stride;
  p.grad_v_head_stride = grad_v_head_stride;
  p.grad_v_row_stride = grad_v_row_stride;
  return p;
}

}  // namespace dlk::capi
