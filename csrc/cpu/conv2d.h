// C++ CPU reference for 2-D convolution: the direct algorithm (forward, dgrad, wgrad) and
// Winograd F(2x2,3x3) / F(4x4,3x3) with the transforms shared with the CUDA kernels
// (dlk/winograd.h), written as plain loops. Torch-free.
#pragma once

#include "dlk/conv2d.h"
#include "dlk/winograd.h"

namespace dlk {

Status conv2d_forward_cpu(const Conv2dFwdParams& params, DType dtype);
Status conv2d_backward_input_cpu(const Conv2dDgradParams& params, DType dtype);
Status conv2d_backward_weight_cpu(const Conv2dWgradParams& params, DType dtype);

Status winograd_transform_weight_cpu(const WinogradWeightParams& params, DType dtype);
Status conv2d_winograd_cpu(const WinogradFwdParams& params, DType dtype);

}  // namespace dlk
