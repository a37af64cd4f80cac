// Flash attention: parameters and per-element rules shared by every implementation (the C++ CPU
// reference, the CUDA kernels, and mirrored by triton_kernels/attention.py).
//
//   S = scale * Q K^T (+ bias),  masked by causality,   P = softmax(S) (then dropout),   O = P V
//   lse[row] = log(sum_j exp(S[row, j]))  over the visible keys (natural log, float32; float64 for
//   float64 inputs). Backward recomputes P from lse.
//
// Shapes. Dense: q (B, Hq, Nq, D), k and v (B, Hk, Nk, D), any strides with a unit stride on D.
// Varlen (cu_seqlens given): q (total_q, Hq, D), k and v (total_k, Hk, D); sequence b holds query
// tokens [cu_seqlens_q[b], cu_seqlens_q[b+1]) and key tokens [cu_seqlens_k[b], cu_seqlens_k[b+1]);
// both cu_seqlens are int32 (B + 1). The params describe both cases with one indexing rule:
//   element (b, h, i, d) of q is at  q + b * q_batch_stride + (seq_start_q(b) + i) * q_row_stride
//                                        + h * q_head_stride + d
// with batch strides 0 and seq_start from cu_seqlens for varlen, seq_start 0 for dense. The same
// for k, v, out, grad tensors (each with its own strides) and lse (row stride 1).
//
// GQA / MQA: Hq is a multiple of Hk; query head h reads key/value head h / (Hq / Hk). Backward sums
// dk and dv over the query heads of a group (in a fixed order: deterministic).
//
// Visibility of key j to query i of a sequence with len_q queries and len_k keys:
//   causal == false: every key;
//   causal == true:  j <= i + causal_shift, causal_shift = len_k - len_q when causal_bottom_right
//                    (FlashAttention >= 2.1, dlkernels.attention) else 0 (SDPA's is_causal, top-left).
// A row with no visible key, or whose visible keys all have bias -inf, outputs 0 and has
// lse = -inf; its backward contributes nothing (implementations must not compute exp(-inf - -inf)).
//
// Bias (dense only, nullable): additive, in the dtype of q, element (b, h, i, j) at
//   bias + b * bias_batch_stride + h * bias_head_stride + i * bias_row_stride + j
// (strides may be 0 to broadcast; Python turns boolean masks into 0 / -inf). Not differentiated.
//
// Dropout: applied to P after softmax, as torch does: P' = P * keep / (1 - p). keep for element
// (b, h, i, j) is decided by Philox-4x32-10 (Triton's tl.randint: key = seed, counter c0:c1 =
// the 64-bit dropout_counter below, c2 = c3 = 0, first output word r):
//   keep = r >= dropout_threshold(p)   (unsigned 32-bit compare)
// so the CPU reference, CUDA and Triton drop exactly the same elements and backward recomputes them.
#pragma once

#include <cmath>

#include "dlk/common.h"

namespace dlk {

// Head dims every backend supports (validated in Python; the kernels may assume one of them).
constexpr int kAttentionHeadDims[] = {32, 64, 96, 128, 256};

struct AttentionParams {
  int batch = 0;         // B (number of sequences)
  int heads_q = 0;       // Hq
  int heads_kv = 0;      // Hk, divides Hq
  int head_dim = 0;      // D, one of kAttentionHeadDims
  int seqlen_q = 0;      // dense: Nq; varlen: max_seqlen_q (an upper bound on every len_q)
  int seqlen_k = 0;      // dense: Nk; varlen: max_seqlen_k
  int64_t total_q = 0;   // dense: B * Nq; varlen: cu_seqlens_q[B] (used by the dropout counter)
  const int* cu_seqlens_q = nullptr;  // nullable: dense when null (both are null or both given)
  const int* cu_seqlens_k = nullptr;

  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_batch_stride = 0, q_head_stride = 0, q_row_stride = 0;
  int64_t k_batch_stride = 0, k_head_stride = 0, k_row_stride = 0;
  int64_t v_batch_stride = 0, v_head_stride = 0, v_row_stride = 0;

  const void* bias = nullptr;  // nullable; dense only
  int64_t bias_batch_stride = 0, bias_head_stride = 0, bias_row_stride = 0;

  // lse: dense (B, Hq, Nq) contiguous; varlen (Hq, total_q). lse_batch_stride is Hq * Nq (dense)
  // or 0 (varlen); lse_head_stride Nq (dense) or total_q (varlen); row stride 1.
  void* lse = nullptr;  // written by the forward, read by the backward
  int64_t lse_batch_stride = 0, lse_head_stride = 0;

  float scale = 1.0f;       // softmax scale, usually 1/sqrt(D), rounded to float: what fp16/bf16/fp32 use
  double scale_f64 = 1.0;   // the same scale unrounded: what float64 inputs (the CPU reference) use
  bool causal = false;
  bool causal_bottom_right = true;
  double dropout_p = 0.0;  // in [0, 1); 0 disables dropout (double: the threshold must match Python's)
  uint64_t seed = 0;       // Philox key; the op draws it from torch's generator per forward
  // fp32 inputs only: the matmuls may use TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32).
  // The CPU reference is always exact.
  bool allow_tf32 = false;
};

struct AttentionFwdParams : AttentionParams {
  void* out = nullptr;  // like q (its own strides); every element written
  int64_t out_batch_stride = 0, out_head_stride = 0, out_row_stride = 0;
};

// Inputs: grad_out, q, k, v, out, lse (from the forward). dq like q, dk like k, dv like v (each its
// own strides), every element written (no zero-fill needed beforehand).
struct AttentionBwdParams : AttentionParams {
  const void* out = nullptr;
  int64_t out_batch_stride = 0, out_head_stride = 0, out_row_stride = 0;
  const void* grad_out = nullptr;
  int64_t grad_out_batch_stride = 0, grad_out_head_stride = 0, grad_out_row_stride = 0;
  void* grad_q = nullptr;
  int64_t grad_q_batch_stride = 0, grad_q_head_stride = 0, grad_q_row_stride = 0;
  void* grad_k = nullptr;
  int64_t grad_k_batch_stride = 0, grad_k_head_stride = 0, grad_k_row_stride = 0;
  void* grad_v = nullptr;
  int64_t grad_v_batch_stride = 0, grad_v_head_stride = 0, grad_v_row_stride = 0;
};

// ------------------------------------------------------------------ per-element rules

// First key index hidden from query i (exclusive bound of the visible keys), given the sequence's
// lengths: len_k without causality.
DLK_HOST_DEVICE int attention_key_end(const AttentionParams& p, int i, int len_q, int len_k) {
  if (!p.causal) return len_k;
  const int shift = p.causal_bottom_right ? len_k - len_q : 0;
  const int end = i + shift + 1;
  return end < 0 ? 0 : (end > len_k ? len_k : end);
}

// Keep iff the Philox word is at least this: floor(p * 2^32), so P(keep) = 1 - p to within 2^-32.
DLK_HOST_DEVICE uint32_t dropout_threshold(double p) {
  const double t = floor(p * 4294967296.0);
  return t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t);
}

// Counter of element (head h, query token q_token, key j): q_token = cu_seqlens_q[b] + i in varlen
// mode and b * Nq + i in dense mode (the token's index among all B * Nq queries). seqlen_k is the
// params' (max) key length, total_q the params' total_q: unique per element of the batch.
DLK_HOST_DEVICE uint64_t dropout_counter(int h, int64_t total_q, int64_t q_token, int seqlen_k, int j) {
  return (static_cast<uint64_t>(h) * static_cast<uint64_t>(total_q) + static_cast<uint64_t>(q_token)) *
             static_cast<uint64_t>(seqlen_k) +
         static_cast<uint64_t>(j);
}

DLK_HOST_DEVICE uint32_t mul_hi_u32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Philox-4x32-10, first output word, exactly as triton.language.randint(seed, counter) for a
// 64-bit counter (round and key constants from Salmon et al. 2011, as in Triton).
DLK_HOST_DEVICE uint32_t philox_first_word(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint32_t old_c0 = c0, old_c2 = c2;
    c0 = mul_hi_u32(0xCD9E8D57u, old_c2) ^ c1 ^ k0;
    c2 = mul_hi_u32(0xD2511F53u, old_c0) ^ c3 ^ k1;
    c1 = 0xCD9E8D57u * old_c2;
    c3 = 0xD2511F53u * old_c0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

DLK_HOST_DEVICE bool dropout_keep(uint64_t seed, uint64_t counter, uint32_t threshold) {
  return philox_first_word(seed, counter) >= threshold;
}

}  // namespace dlk
