// Tensor -> params plumbing shared by the CPU and CUDA bindings of flash attention. Kernels see only
// AttentionFwdParams / AttentionBwdParams (dlk/attention.h). dlkernels/ops/attention.py validates
// arguments with friendlier messages; the checks here keep a direct torch.ops.dlk_C call from
// reaching a kernel with tensors it would misread. They never read tensor data (cu_seqlens may live
// on the GPU): the CPU binding checks the cu_seqlens values itself.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <optional>
#include <tuple>

#include "binding_common.h"
#include "dlk/attention.h"

namespace dlk::binding {

using OptionalTensor = std::optional<at::Tensor>;

inline bool is_given(const OptionalTensor& t) { return t.has_value() && t->defined(); }

// cu_seqlens as the kernels read them (a plain int32 array); a strided view would be misread.
inline OptionalTensor contiguous_cu_seqlens(const OptionalTensor& cu_seqlens) {
  if (!is_given(cu_seqlens)) return std::nullopt;
  return cu_seqlens->contiguous();
}

inline at::ScalarType attention_stat_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Batch, head and row strides of a q/k/v-like tensor: dense (B, H, N, D) or varlen (total, H, D).
inline void head_strides(const at::Tensor& t, bool varlen, int64_t& batch, int64_t& head, int64_t& row) {
  batch = varlen ? 0 : t.stride(0);
  head = t.stride(1);
  row = t.stride(varlen ? 0 : 2);
}

inline void check_head_tensor(const at::Tensor& t, const char* name, bool varlen, const at::Tensor& q) {
  TORCH_CHECK(t.dim() == (varlen ? 3 : 4), "dlkernels attention: ", name, " must be ",
              varlen ? "3-D (total, heads, head_dim)" : "4-D (batch, heads, seq, head_dim)", ", got shape ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == q.scalar_type() && t.device() == q.device(), "dlkernels attention: ", name,
              " must have q's dtype and device");
  TORCH_CHECK(t.size(-1) == q.size(-1) && t.stride(-1) == 1, "dlkernels attention: ", name,
              " must have q's head dim and a unit stride on it, got shape ", t.sizes(), " and strides ",
              t.strides());
}

inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() && t.device() == like.device() &&
                  t.stride(-1) == 1,
              "dlkernels attention: ", name, " must have the shape, dtype and device of ", like_name,
              " and a unit stride on the head dim");
}

inline std::vector<int64_t> lse_shape(const AttentionParams& p, bool varlen) {
  if (varlen) return {p.heads_q, p.total_q};
  return {p.batch, p.heads_q, p.seqlen_q};
}

// Everything the forward and backward share: geometry, q / k / v, bias, masking and dropout.
inline bool fill_attention_params(AttentionParams& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const OptionalTensor& bias, const OptionalTensor& cu_seqlens_q,
                                  const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                                  double scale, bool causal, bool causal_bottom_right, double dropout_p, int64_t seed,
                                  bool allow_tf32) {
  TORCH_CHECK(is_given(cu_seqlens_q) == is_given(cu_seqlens_k),
              "dlkernels attention: give both cu_seqlens_q and cu_seqlens_k, or neither");
  const bool varlen = is_given(cu_seqlens_q);
  check_head_tensor(q, "q", varlen, q);
  check_head_tensor(k, "k", varlen, q);
  check_head_tensor(v, "v", varlen, q);
  TORCH_CHECK(k.sizes() == v.sizes(), "dlkernels attention: k and v must have the same shape, got ", k.sizes(),
              " and ", v.sizes());
  const int64_t head_dim = q.size(-1);
  TORCH_CHECK(std::find(std::begin(kAttentionHeadDims), std::end(kAttentionHeadDims), head_dim) !=
                  std::end(kAttentionHeadDims),
              "dlkernels attention: unsupported head dim ", head_dim);
  const int64_t heads_q = q.size(1), heads_kv = k.size(1);  // the head axis is 1 in both layouts
  TORCH_CHECK(heads_kv >= 1 && heads_q % heads_kv == 0, "dlkernels attention: the query heads (", heads_q,
              ") must be a multiple of the key/value heads (", heads_kv, ")");
  TORCH_CHECK(dropout_p >= 0.0 && dropout_p < 1.0, "dlkernels attention: dropout_p must be in [0, 1), got ",
              dropout_p);

  if (varlen) {
    for (const at::Tensor& cu : {*cu_seqlens_q, *cu_seqlens_k}) {
      TORCH_CHECK(cu.scalar_type() == at::kInt && cu.dim() == 1 && cu.numel() >= 1 && cu.is_contiguous() &&
                      cu.device() == q.device(),
                  "dlkernels attention: cu_seqlens must be contiguous 1-D int32 tensors on q's device");
    }
    TORCH_CHECK(cu_seqlens_q->numel() == cu_seqlens_k->numel(),
                "dlkernels attention: cu_seqlens_q and cu_seqlens_k must have the same length");
    TORCH_CHECK(!is_given(bias), "dlkernels attention: bias is not supported with cu_seqlens");
    TORCH_CHECK(max_seqlen_q >= 0 && max_seqlen_k >= 0, "dlkernels attention: max_seqlen must not be negative");
    p.batch = int(cu_seqlens_q->numel() - 1);
    p.total_q = q.size(0);  // == cu_seqlens_q[B] (checked in Python; reading it here would sync the GPU)
    p.cu_seqlens_q = cu_seqlens_q->data_ptr<int>();
    p.cu_seqlens_k = cu_seqlens_k->data_ptr<int>();
  } else {
    TORCH_CHECK(k.size(0) == q.size(0), "dlkernels attention: q and k must have the same batch size");
    TORCH_CHECK(max_seqlen_q == q.size(2) && max_seqlen_k == k.size(2),
                "dlkernels attention: dense inputs need max_seqlen_q = q.size(2) and max_seqlen_k = k.size(2), got ",
                max_seqlen_q, " and ", max_seqlen_k);
    p.batch = int(q.size(0));
    p.total_q = q.size(0) * q.size(2);
  }
  TORCH_CHECK(max_seqlen_q <= INT_MAX && max_seqlen_k <= INT_MAX && q.size(0) <= INT_MAX,
              "dlkernels attention: sequence lengths must fit in 32 bits");
  p.heads_q = int(heads_q);
  p.heads_kv = int(heads_kv);
  p.head_dim = int(head_dim);
  p.seqlen_q = int(max_seqlen_q);
  p.seqlen_k = int(max_seqlen_k);

  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  head_strides(q, varlen, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
  head_strides(k, varlen, p.k_batch_stride, p.k_head_stride, p.k_row_stride);
  head_strides(v, varlen, p.v_batch_stride, p.v_head_stride, p.v_row_stride);

  if (is_given(bias)) {
    const std::vector<int64_t> full{p.batch, heads_q, p.seqlen_q, p.seqlen_k};
    TORCH_CHECK(bias->sizes() == at::IntArrayRef(full) && bias->scalar_type() == q.scalar_type() &&
                    bias->device() == q.device() && (bias->stride(3) == 1 || p.seqlen_k <= 1),
                "dlkernels attention: bias must be a (B, Hq, Nq, Nk) = ", at::IntArrayRef(full),
                " tensor of q's dtype and device with a unit stride on the key axis (broadcast by expand), got "
                "shape ", bias->sizes(), " and strides ", bias->strides());
    p.bias = bias->data_ptr();
    p.bias_batch_stride = bias->stride(0);
    p.bias_head_stride = bias->stride(1);
    p.bias_row_stride = bias->stride(2);
  }

  // lse is allocated contiguous in lse_shape(): (B, Hq, Nq) dense, (Hq, total_q) varlen.
  p.lse_batch_stride = varlen ? 0 : int64_t(p.heads_q) * p.seqlen_q;
  p.lse_head_stride = varlen ? p.total_q : p.seqlen_q;

  p.scale = float(scale);
  p.scale_f64 = scale;
  p.causal = causal;
  p.causal_bottom_right = causal_bottom_right;
  p.dropout_p = dropout_p;
  p.seed = static_cast<uint64_t>(seed);  // Python's int64 seed, reinterpreted as Philox's 64-bit key
  p.allow_tf32 = allow_tf32 && q.scalar_type() == at::kFloat;
  return varlen;
}

inline std::tuple<at::Tensor, at::Tensor, AttentionFwdParams> prepare_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptionalTensor& bias,
    const OptionalTensor& cu_seqlens_q, const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q,
    int64_t max_seqlen_k, double scale, bool causal, bool causal_bottom_right, double dropout_p, int64_t seed,
    bool allow_tf32) {
  AttentionFwdParams p;
  const bool varlen = fill_attention_params(p, q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                            scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32);
  at::Tensor out = at::empty_like(q);  // keeps q's dense permuted layout (e.g. from a transpose)
  at::Tensor lse = at::empty(lse_shape(p, varlen), q.options().dtype(attention_stat_dtype(q)));
  p.out = out.data_ptr();
  head_strides(out, varlen, p.out_batch_stride, p.out_head_stride, p.out_row_stride);
  p.lse = lse.data_ptr();
  return {out, lse, p};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, AttentionBwdParams> prepare_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const OptionalTensor& bias, const OptionalTensor& cu_seqlens_q,
    const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double scale, bool causal,
    bool causal_bottom_right, double dropout_p, int64_t seed, bool allow_tf32) {
  AttentionBwdParams p;
  const bool varlen = fill_attention_params(p, q, k, v, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                            scale, causal, causal_bottom_right, dropout_p, seed, allow_tf32);
  check_like(grad_out, "grad_out", q, "q");
  check_like(out, "out", q, "q");
  TORCH_CHECK(lse.sizes() == at::IntArrayRef(lse_shape(p, varlen)) && lse.is_contiguous() &&
                  lse.scalar_type() == attention_stat_dtype(q) && lse.device() == q.device(),
              "dlkernels attention: lse must be the forward's contiguous ", attention_stat_dtype(q), " tensor of shape ",
              at::IntArrayRef(lse_shape(p, varlen)), ", got ", lse.scalar_type(), " of shape ", lse.sizes());
  p.lse = lse.data_ptr();  // read only by the backward
  p.out = out.data_ptr();
  head_strides(out, varlen, p.out_batch_stride, p.out_head_stride, p.out_row_stride);
  p.grad_out = grad_out.data_ptr();
  head_strides(grad_out, varlen, p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride);

  at::Tensor grad_q = at::empty_like(q), grad_k = at::empty_like(k), grad_v = at::empty_like(v);
  p.grad_q = grad_q.data_ptr();
  p.grad_k = grad_k.data_ptr();
  p.grad_v = grad_v.data_ptr();
  head_strides(grad_q, varlen, p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride);
  head_strides(grad_k, varlen, p.grad_k_batch_stride, p.grad_k_head_stride, p.grad_k_row_stride);
  head_strides(grad_v, varlen, p.grad_v_batch_stride, p.grad_v_head_stride, p.grad_v_row_stride);
  return {grad_q, grad_k, grad_v, p};
}

}  // namespace dlk::binding
