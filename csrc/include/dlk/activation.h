// The activation of the fused epilogues (conv2d, batch_norm_relu), shared by the CPU reference and
// the CUDA kernels; triton_kernels/conv2d.py and batch_norm.py mirror it. One formula serves ReLU and
// LeakyReLU: when the activation is on, y = y > 0 ? y : negative_slope * y, and ReLU is slope 0.
//
// Slope 0 keeps torch.relu's exact zeros (also for -inf, where -inf * 0 would be NaN) and its NaN
// propagation. The backward scales the gradient by 1 or the slope, decided from the saved output,
// which has the input's sign for any slope >= 0 (the ops refuse negative slopes). NaN outputs follow
// torch: threshold_backward (ReLU) lets the gradient through, leaky_relu_backward scales it.
#pragma once

#include "dlk/common.h"

namespace dlk {

template <typename Acc>
DLK_HOST_DEVICE Acc leaky_relu(Acc y, Acc negative_slope) {
  if (y > Acc(0)) return y;
  if (negative_slope != Acc(0)) return y * negative_slope;
  return y != y ? y : Acc(0);
}

template <typename Acc>
DLK_HOST_DEVICE Acc leaky_relu_backward(Acc grad, Acc output, Acc negative_slope) {
  if (output > Acc(0)) return grad;
  if (negative_slope != Acc(0)) return grad * negative_slope;
  return output != output ? grad : Acc(0);
}

// The epilogue's activation switch: identity when off.
template <typename Acc>
DLK_HOST_DEVICE Acc activate(Acc y, bool activation, Acc negative_slope) {
  return activation ? leaky_relu(y, negative_slope) : y;
}

}  // namespace dlk
