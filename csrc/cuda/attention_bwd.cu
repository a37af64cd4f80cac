// Flash-attention backward launcher: argument checks, workspace, and the choice between the
// tensor-core kernels and the SIMT kernels. The kernels are in attention_bwd_kernel.cuh, instantiated
// per dtype in attention_bwd_{f16,bf16,f32}.cu.
//
// Paths:
//   fp16 / bf16  tensor cores (mma.sync m16n8k16, fp32 accumulation) when every tile pointer and
//                row / head / batch stride is a multiple of 16 bytes and the configuration fits the
//                device's shared memory; otherwise the SIMT kernels (fp32 math, any alignment).
//   fp32         SIMT kernels, exact fp32 FMAs. allow_tf32 is accepted and ignored (no TF32 path yet).
//   fp64         kUnsupportedDType (the CPU reference covers it).
//
// Tile configurations (4 warps per CTA, 16 resident rows per warp; fp16 = bf16). Registers of the
// fp16 kernels from ptxas -v for sm_80 / sm_90a (the larger pass at head dim 256; checked against
// ptxas by tests/test_cuda_resources.py), no spills in any tensor-core kernel; shared memory is dynamic:
//   head dim  dkdv keys x queries  regs     smem      dq queries x keys  regs     smem
//   32        64 x 64              166/166  25 KiB    64 x 64            128/126  24 KiB
//   64        64 x 64              227/232  49 KiB    64 x 64            196/168  48 KiB
//   96        64 x 32              229/231  48.5 KiB  64 x 64            168/167  72 KiB
//   128       64 x 32              248/252  64.5 KiB  64 x 64            242/232  96 KiB
//   256       64 x 32, two passes  250/254  128.5 KiB 64 x 32            246/249  128 KiB
// The streamed block shrinks as head_dim grows because dK + dV (D floats per thread) or dQ (D / 2)
// plus S and dP (streamed / 4 floats) must stay under 255 registers; head dim 256 computes dV and
// dK in two passes of the dkdv kernel (2 x 128 accumulators cannot fit one), recomputing S.
#include "attention.cuh"
#include "attention_bwd_kernel.cuh"

namespace dlk {
namespace attention_bwd {

namespace {

bool head_dim_supported(int head_dim) {
  return dispatch_int(AttentionHeadDimList{}, head_dim, false, [](auto) { return true; });
}

bool params_are_valid(const AttentionBwdParams& p) {
  if (!head_dim_supported(p.head_dim)) return false;
  if (p.batch < 0 || p.heads_q <= 0 || p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0) return false;
  // Grid y carries heads (at most 65,535); grid z sequences, split over launches past 65,535
  // (attention_bwd_kernel.cuh, launch_kernel).
  if (p.heads_q > plan::kMaxGridYZ) return false;
  if (p.seqlen_q < 0 || p.seqlen_k < 0 || p.total_q < 0) return false;
  if ((p.cu_seqlens_q == nullptr) != (p.cu_seqlens_k == nullptr)) return false;
  if (p.cu_seqlens_q != nullptr && p.bias != nullptr) return false;  // bias is dense only
  if (!(p.dropout_p >= 0.0 && p.dropout_p < 1.0)) return false;
  return true;
}

// The tensor-core kernels move 16-byte chunks with cp.async and 16-byte stores: every tile base and
// every stride must be a multiple of 16 bytes.
bool aligned_for_tensor_cores(const AttentionBwdParams& p, size_t element_bytes) {
  const auto bytes = static_cast<int64_t>(element_bytes);
  return rows_16_byte_aligned(p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride, bytes) &&
         rows_16_byte_aligned(p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride, bytes) &&
         rows_16_byte_aligned(p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride, bytes) &&
         rows_16_byte_aligned(p.grad_out, p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride,
                              bytes) &&
         rows_16_byte_aligned(p.grad_q, p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride, bytes) &&
         rows_16_byte_aligned(p.grad_k, p.grad_k_batch_stride, p.grad_k_head_stride, p.grad_k_row_stride, bytes) &&
         rows_16_byte_aligned(p.grad_v, p.grad_v_batch_stride, p.grad_v_head_stride, p.grad_v_row_stride, bytes);
}

template <typename T>
Status run_for_dtype(const AttentionBwdParams& p, float* row_terms, cudaStream_t stream) {
  bool tensor_cores = sizeof(T) == 2 && aligned_for_tensor_cores(p, sizeof(T));
  const size_t limit = size_t(current_device_facts().max_smem_optin);
  if (tensor_cores && attention_backward_smem_bytes<T>(p.head_dim, true) > limit) tensor_cores = false;
  if (attention_backward_smem_bytes<T>(p.head_dim, tensor_cores) > limit) return Status::kInvalidArgument;
  return run_attention_backward<T>(p, row_terms, tensor_cores, stream);
}

}  // namespace
}  // namespace attention_bwd

size_t attention_backward_workspace_bytes(const AttentionBwdParams& params, DType /*dtype*/) {
  const int64_t elements = attention_bwd::row_terms_layout(params).elements;
  return elements > 0 ? static_cast<size_t>(elements) * sizeof(float) : 0;
}

Status attention_backward_cuda(const AttentionBwdParams& params, DType dtype, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream) {
  using namespace attention_bwd;
  if (dtype == DType::kFloat64) return Status::kUnsupportedDType;
  if (!params_are_valid(params)) return Status::kInvalidArgument;
  if (params.batch == 0) return Status::kOk;  // no sequences: the gradients have no elements
  if (workspace_bytes < attention_backward_workspace_bytes(params, dtype) ||
      (workspace == nullptr && workspace_bytes > 0)) {
    return Status::kInvalidArgument;
  }
  float* row_terms = static_cast<float*>(workspace);
  switch (dtype) {
    case DType::kFloat16: return run_for_dtype<__half>(params, row_terms, stream);
    case DType::kBFloat16: return run_for_dtype<__nv_bfloat16>(params, row_terms, stream);
    case DType::kFloat32: return run_for_dtype<float>(params, row_terms, stream);
    case DType::kFloat64: break;
  }
  return Status::kUnsupportedDType;
}

}  // namespace dlk
