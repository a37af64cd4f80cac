// Schemas of the low-level flash attention ops (namespace dlk_C) and their CPU implementation (the
// C++ reference in csrc/cpu/attention.cpp). The CUDA implementation is registered from
// attention_cuda.cpp.
#include "attention_binding.h"

#include "../cpu/attention.h"

namespace dlk::binding {
namespace {

// The reference indexes with the cu_seqlens values, so on CPU they are checked here (cheap, and the
// data is on the host): offsets from 0 to the token count, never decreasing, lengths within
// max_seqlen. Python checks the same before calling; this keeps a direct call from reading out of
// bounds.
void check_cu_seqlens_values(const AttentionParams& p, int64_t total_k) {
  if (p.cu_seqlens_q == nullptr) return;
  TORCH_CHECK(p.cu_seqlens_q[0] == 0 && p.cu_seqlens_k[0] == 0 && p.cu_seqlens_q[p.batch] == p.total_q &&
                  p.cu_seqlens_k[p.batch] == total_k,
              "dlkernels attention: cu_seqlens must start at 0 and end at the number of tokens");
  for (int b = 0; b < p.batch; ++b) {
    const int64_t len_q = int64_t(p.cu_seqlens_q[b + 1]) - p.cu_seqlens_q[b];
    const int64_t len_k = int64_t(p.cu_seqlens_k[b + 1]) - p.cu_seqlens_k[b];
    TORCH_CHECK(len_q >= 0 && len_k >= 0 && len_q <= p.seqlen_q && len_k <= p.seqlen_k,
                "dlkernels attention: sequence ", b, " has ", len_q, " queries and ", len_k,
                " keys: cu_seqlens must not decrease and max_seqlen_q / max_seqlen_k (", p.seqlen_q, ", ",
                p.seqlen_k, ") must bound every length");
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               const OptionalTensor& bias, const OptionalTensor& cu_seqlens_q,
                                               const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q,
                                               int64_t max_seqlen_k, double scale, bool causal,
                                               bool causal_bottom_right, double dropout_p, int64_t seed,
                                               bool allow_tf32) {
  const OptionalTensor cu_q = contiguous_cu_seqlens(cu_seqlens_q), cu_k = contiguous_cu_seqlens(cu_seqlens_k);
  auto [out, lse, params] = prepare_attention_forward(q, k, v, bias, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale,
                                                      causal, causal_bottom_right, dropout_p, seed, allow_tf32);
  check_cu_seqlens_values(params, k.size(0));
  check_status(attention_forward_cpu(params, to_dlk_dtype(q)), "attention_forward (cpu)");
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const OptionalTensor& bias, const OptionalTensor& cu_seqlens_q,
    const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double scale, bool causal,
    bool causal_bottom_right, double dropout_p, int64_t seed, bool allow_tf32) {
  const OptionalTensor cu_q = contiguous_cu_seqlens(cu_seqlens_q), cu_k = contiguous_cu_seqlens(cu_seqlens_k);
  auto [grad_q, grad_k, grad_v, params] =
      prepare_attention_backward(grad_out, q, k, v, out, lse, bias, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale,
                                 causal, causal_bottom_right, dropout_p, seed, allow_tf32);
  check_cu_seqlens_values(params, k.size(0));
  check_status(attention_backward_cpu(params, to_dlk_dtype(q)), "attention_backward (cpu)");
  return {grad_q, grad_k, grad_v};
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_FRAGMENT(dlk_C, m) {
  m.def(
      "attention_forward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
      "int max_seqlen_q, int max_seqlen_k, float scale, bool causal, bool causal_bottom_right, float dropout_p, "
      "int seed, bool allow_tf32) -> (Tensor out, Tensor lse)");
  m.def(
      "attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? bias, "
      "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, int max_seqlen_q, int max_seqlen_k, float scale, bool causal, "
      "bool causal_bottom_right, float dropout_p, int seed, bool allow_tf32) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
}

TORCH_LIBRARY_IMPL(dlk_C, CPU, m) {
  m.impl("attention_forward", &dlk::binding::forward_cpu);
  m.impl("attention_backward", &dlk::binding::backward_cpu);
}
