// rnn family of libdlk_cpu.so: the C ABI of rnn_api.h over the C++ reference (csrc/cpu/rnn.h).
#include <string>

#include "../cpu/rnn.h"

#include "rnn_api.h"
#include "rnn_params.h"

using namespace dlk;
using namespace dlk::capi;

namespace {

// The reference indexes with the lengths, which live on the host here (the GPU library trusts the
// Python caller's check).
int check_lengths(const char* what, const RnnParams& p) {
  if (p.lengths == nullptr) return DLK_OK;
  for (int64_t b = 0; b < p.batch; ++b)
    if (p.lengths[b] < 1 || p.lengths[b] > p.steps)
      return invalid_argument(what, "lengths[" + std::to_string(b) + "] = " + std::to_string(p.lengths[b]) +
                                        " is outside [1, " + std::to_string(p.steps) + "]");
  return DLK_OK;
}

}  // namespace

DLK_API int dlk_rnn_layer_forward_cpu(DLK_RNN_LAYER_FORWARD_PARAMS) {
  constexpr const char* what = "rnn_layer_forward (cpu)";
  const RnnFwdParams p = rnn_layer_forward_params(DLK_RNN_LAYER_FORWARD_ARGS);
  if (const int status = check_rnn_layer_forward(what, cell, p, b_hh, dtype)) return status;
  if (const int status = check_lengths(what, p)) return status;
  return guarded(what, [&] { return rnn_forward_cpu(p, DType(dtype)); });
}

DLK_API int dlk_rnn_layer_backward_cpu(DLK_RNN_LAYER_BACKWARD_PARAMS) {
  constexpr const char* what = "rnn_layer_backward (cpu)";
  const RnnBwdParams p = rnn_layer_backward_params(DLK_RNN_LAYER_BACKWARD_ARGS);
  if (const int status = check_rnn_layer_backward(what, cell, p, dtype)) return status;
  if (const int status = check_lengths(what, p)) return status;
  return guarded(what, [&] { return rnn_backward_cpu(p, DType(dtype)); });
}
