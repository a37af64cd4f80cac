// C++ CPU reference for the LSTM / GRU layer recurrence (dlk/rnn.h): one layer, one direction, all
// T steps, as plain loops with OpenMP over (batch, hidden) within a step. Torch-free.
#pragma once

#include "dlk/rnn.h"

namespace dlk {

Status rnn_forward_cpu(const RnnFwdParams& params, DType dtype);
Status rnn_backward_cpu(const RnnBwdParams& params, DType dtype);

}  // namespace dlk
