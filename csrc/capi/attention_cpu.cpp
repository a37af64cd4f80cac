// attention family of libdlk_cpu.so: the C ABI of attention_api.h over the C++ reference
// (csrc/cpu/attention.h).
#include <string>

#include "../cpu/attention.h"

#include "attention_api.h"
#include "attention_params.h"

using namespace dlk;
using namespace dlk::capi;

namespace {

// The reference indexes with the cu_seqlens values, which live on the host here: offsets from 0 to
// the token counts, never decreasing, every length within max_seqlen (as the old CPU binding checked).
int check_cu_seqlens_values(const char* what, const AttentionParams& p, int64_t total_k) {
  if (p.cu_seqlens_q == nullptr) return DLK_OK;
  if (p.cu_seqlens_q[0] != 0 || p.cu_seqlens_k[0] != 0 || p.cu_seqlens_q[p.batch] != p.total_q ||
      p.cu_seqlens_k[p.batch] != total_k)
    return invalid_argument(what, "cu_seqlens must start at 0 and end at the number of tokens");
  for (int b = 0; b < p.batch; ++b) {
    const int64_t len_q = int64_t(p.cu_seqlens_q[b + 1]) - p.cu_seqlens_q[b];
    const int64_t len_k = int64_t(p.cu_seqlens_k[b + 1]) - p.cu_seqlens_k[b];
    if (len_q < 0 || len_k < 0 || len_q > p.seqlen_q || len_k > p.seqlen_k)
      return invalid_argument(what, "sequence " + std::to_string(b) + " has " + std::to_string(len_q) +
                                        " queries and " + std::to_string(len_k) +
                                        " keys: cu_seqlens must not decrease and max_seqlen_q / max_seqlen_k must "
                                        "bound every length");
  }
  return DLK_OK;
}

}  // namespace

DLK_API int dlk_attention_forward_cpu(DLK_ATTENTION_FORWARD_PARAMS) {
  constexpr const char* what = "attention_forward (cpu)";
  const AttentionFwdParams p = attention_forward_params(DLK_ATTENTION_ARGS, out, out_batch_stride, out_head_stride,
                                                        out_row_stride, lse, dtype);
  if (const int status = check_attention(what, p, dtype)) return status;
  if (const int status = check_cu_seqlens_values(what, p, total_k)) return status;
  return guarded(what, [&] { return attention_forward_cpu(p, DType(dtype)); });
}

DLK_API int dlk_attention_backward_cpu(DLK_ATTENTION_BACKWARD_PARAMS) {
  constexpr const char* what = "attention_backward (cpu)";
  const AttentionBwdParams p = attention_backward_params(DLK_ATTENTION_BACKWARD_ARGS);
  if (const int status = check_attention(what, p, dtype)) return status;
  if (const int status = check_cu_seqlens_values(what, p, total_k)) return status;
  return guarded(what, [&] { return attention_backward_cpu(p, DType(dtype)); });
}
