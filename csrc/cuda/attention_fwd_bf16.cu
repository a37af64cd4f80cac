// Flash-attention forward kernels for bf16 on tensor cores (mma.sync m16n8k16), every head dim.
// One dtype per file so that the instantiations compile in parallel.
#include "attention_fwd_kernel.cuh"

namespace dlk {
namespace attn {

DLK_ATTENTION_FWD_INSTANTIATE(, __nv_bfloat16)

}  // namespace attn
}  // namespace dlk
