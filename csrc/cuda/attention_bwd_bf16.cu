// Flash-attention backward kernels for __nv_bfloat16 (see attention_bwd_kernel.cuh): one dtype per file so
// that the instantiations compile in parallel.
#include "attention_bwd_kernel.cuh"

namespace dlk {
namespace attention_bwd {

template Status run_attention_backward<__nv_bfloat16>(const AttentionBwdParams&, float*, bool, cudaStream_t);
template size_t attention_backward_smem_bytes<__nv_bfloat16>(int, bool);

}  // namespace attention_bwd
}  // namespace dlk
