// CUDA implementation of the dlk_C flash attention ops (schemas in attention.cpp). Thin: tensors ->
// params via attention_binding.h, the backward's workspace from torch's allocator, then the
// torch-free launchers of csrc/cuda/attention.cuh on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "attention_binding.h"

#include "../cuda/attention.cuh"

namespace dlk::binding {
namespace {

void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), "dlkernels ", op, " (cuda): ", name, " must be a CUDA tensor");
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const OptionalTensor& bias, const OptionalTensor& cu_seqlens_q,
                                                const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q,
                                                int64_t max_seqlen_k, double scale, bool causal,
                                                bool causal_bottom_right, double dropout_p, int64_t seed,
                                                bool allow_tf32) {
  check_cuda(q, "attention_forward", "q");
  const c10::cuda::CUDAGuard device_guard(q.device());
  const OptionalTensor cu_q = contiguous_cu_seqlens(cu_seqlens_q), cu_k = contiguous_cu_seqlens(cu_seqlens_k);
  auto [out, lse, params] = prepare_attention_forward(q, k, v, bias, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale,
                                                      causal, causal_bottom_right, dropout_p, seed, allow_tf32);
  check_status(attention_forward_cuda(params, to_dlk_dtype(q), at::cuda::getCurrentCUDAStream()),
               "attention_forward (cuda)");
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const OptionalTensor& bias, const OptionalTensor& cu_seqlens_q,
    const OptionalTensor& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double scale, bool causal,
    bool causal_bottom_right, double dropout_p, int64_t seed, bool allow_tf32) {
  check_cuda(q, "attention_backward", "q");
  const c10::cuda::CUDAGuard device_guard(q.device());
  const OptionalTensor cu_q = contiguous_cu_seqlens(cu_seqlens_q), cu_k = contiguous_cu_seqlens(cu_seqlens_k);
  auto [grad_q, grad_k, grad_v, params] =
      prepare_attention_backward(grad_out, q, k, v, out, lse, bias, cu_q, cu_k, max_seqlen_q, max_seqlen_k, scale,
                                 causal, causal_bottom_right, dropout_p, seed, allow_tf32);
  const DType dtype = to_dlk_dtype(q);
  const Workspace ws = make_workspace(q, attention_backward_workspace_bytes(params, dtype));
  check_status(attention_backward_cuda(params, dtype, ws.data, ws.bytes, at::cuda::getCurrentCUDAStream()),
               "attention_backward (cuda)");
  return {grad_q, grad_k, grad_v};
}

}  // namespace
}  // namespace dlk::binding

TORCH_LIBRARY_IMPL(dlk_C, CUDA, m) {
  m.impl("attention_forward", &dlk::binding::forward_cuda);
  m.impl("attention_backward", &dlk::binding::backward_cuda);
}
