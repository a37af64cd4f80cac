// Implicit-GEMM convolution kernels for fp32, TF32 tensor cores (m16n8k8) with allow_tf32 and exact
// SIMT FMA otherwise: forward, dgrad and wgrad in every layout, loader and tile shape the launchers
// in conv2d.cu can pick. One dtype per file so that the instantiations compile in parallel.
#include "conv2d_kernels.cuh"

namespace dlk {
namespace conv {

DLK_CONV_GEMM_ENTRY_POINTS(, float)

}  // namespace conv
}  // namespace dlk
