// C++ CPU reference for fused BatchNorm (+ residual) (+ ReLU): the four steps of the CUDA and Triton
// implementations, as plain loops over the (N, C, S) view. Torch-free.
#pragma once

#include "dlk/batch_norm.h"

namespace dlk {

Status batch_norm_stats_cpu(const BatchNormStatsParams& params, DType dtype);
Status batch_norm_apply_cpu(const BatchNormApplyParams& params, DType dtype);
Status batch_norm_backward_reduce_cpu(const BatchNormBwdReduceParams& params, DType dtype);
Status batch_norm_backward_apply_cpu(const BatchNormBwdApplyParams& params, DType dtype);

}  // namespace dlk
