// CUDA flash-attention forward: argument checks, the host-side constants (log2-domain scale,
// dropout threshold), and the dispatch onto the kernels of attention_fwd_kernel.cuh, instantiated
// per dtype in attention_fwd_{f16,bf16,f32}.cu. Design notes (tiles per head dim, pipeline,
// softmax) are at the top of attention_fwd_kernel.cuh. On Hopper, fp16 / bf16 inputs the wgmma
// kernel handles may go to attention_fwd_sm90_kernel.cuh instead (opt-in for now:
// DLK_ATTENTION_WGMMA=1; see that header).
#include "attention.cuh"

#include <cstdint>
#include <type_traits>

#include "attention_fwd_kernel.cuh"
#include "attention_fwd_sm90_kernel.cuh"

namespace dlk {
namespace attn {

namespace {

// cp.async and the 16-byte output stores need every row start of q, k, v and out on a 16-byte
// boundary (fp16/bf16; fp32 never takes the 16-byte paths).
bool rows_are_16_byte_aligned(const AttentionFwdParams& p, int element_bytes) {
  return rows_16_byte_aligned(p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride, element_bytes) &&
         rows_16_byte_aligned(p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride, element_bytes) &&
         rows_16_byte_aligned(p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride, element_bytes) &&
         rows_16_byte_aligned(p.out, p.out_batch_stride, p.out_head_stride, p.out_row_stride, element_bytes);
}

bool is_supported_head_dim(int d) {
  return dispatch_int(AttentionHeadDimList{}, d, false, [](auto) { return true; });
}

// Python validates the inputs; this only refuses what would make the kernels misbehave.
bool params_are_valid(const AttentionFwdParams& p) {
  constexpr int kMaxGridY = 65535;
  const bool varlen = p.cu_seqlens_q != nullptr;
  return p.batch >= 0 && p.heads_q > 0 && p.heads_q <= kMaxGridY && p.heads_kv > 0 && p.heads_q % p.heads_kv == 0 &&
         is_supported_head_dim(p.head_dim) && p.seqlen_q >= 0 && p.seqlen_k >= 0 && p.total_q >= 0 &&
         varlen == (p.cu_seqlens_k != nullptr) && !(varlen && p.bias != nullptr) && p.dropout_p >= 0.0 &&
         p.dropout_p < 1.0 && p.q != nullptr && p.k != nullptr && p.v != nullptr && p.out != nullptr &&
         p.lse != nullptr;
}

template <typename T>
Status dispatch_head_dim(const ForwardArgs& args, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    if (attention_forward_sm90_supported(args) && attention_forward_sm90_available()) {
      return dispatch_int(AttentionSm90HeadDimList{}, args.params.head_dim, Status::kInvalidArgument, [&](auto d) {
        return launch_attention_forward_sm90<T, decltype(d)::value>(args, stream);
      });
    }
  }
  return dispatch_int(AttentionHeadDimList{}, args.params.head_dim, Status::kInvalidArgument,
                      [&](auto d) { return launch_attention_forward<T, decltype(d)::value>(args, stream); });
}

}  // namespace
}  // namespace attn

Status attention_forward_cuda(const AttentionFwdParams& params, DType dtype, cudaStream_t stream) {
  using namespace attn;
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16 && dtype != DType::kFloat32) {
    return Status::kUnsupportedDType;  // fp64 runs on the CPU reference only
  }
  if (!params_are_valid(params)) return Status::kInvalidArgument;
  if (params.batch == 0 || params.seqlen_q == 0) return Status::kOk;  // nothing to write

  ForwardArgs args;
  args.params = params;
  args.scale_log2 = params.scale * kLog2e;
  args.dropout = params.dropout_p > 0.0;
  args.dropout_threshold = dropout_threshold(params.dropout_p);
  args.dropout_scale = args.dropout ? static_cast<float>(1.0 / (1.0 - params.dropout_p)) : 1.0f;
  args.group_size = params.heads_q / params.heads_kv;
  switch (dtype) {
    case DType::kFloat16:
      args.aligned = rows_are_16_byte_aligned(params, 2);
      return dispatch_head_dim<__half>(args, stream);
    case DType::kBFloat16:
      args.aligned = rows_are_16_byte_aligned(params, 2);
      return dispatch_head_dim<__nv_bfloat16>(args, stream);
    default:
      return dispatch_head_dim<float>(args, stream);  // exact SIMT kernel, also when allow_tf32
  }
}

}  // namespace dlk
