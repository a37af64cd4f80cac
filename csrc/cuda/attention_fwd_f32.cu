// Flash-attention forward kernels for exact fp32 (SIMT FMA), every head dim.
// One dtype per file so that the instantiations compile in parallel.
#include "attention_fwd_kernel.cuh"

namespace dlk {
namespace attn {

DLK_ATTENTION_FWD_INSTANTIATE(, float)

}  // namespace attn
}  // namespace dlk
