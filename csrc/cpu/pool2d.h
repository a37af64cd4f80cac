// C++ CPU reference for 2-D pooling: the same window math as the CUDA and Triton kernels
// (dlk/pool2d.h), written as plain loops. Torch-free.
#pragma once

#include "dlk/pool2d.h"

namespace dlk {

Status pool2d_forward_cpu(const Pool2dFwdParams& params, DType dtype);
Status pool2d_backward_cpu(const Pool2dBwdParams& params, DType dtype);

}  // namespace dlk
