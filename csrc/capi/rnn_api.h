// C ABI of the rnn family (the recurrence of one LSTM / GRU layer and direction), exported by
// libdlk_cpu.so (_cpu) and libdlk_cuda.so (_cuda). Conventions: csrc/capi/capi.h.
// dlkernels/_native/rnn.py is the caller: it allocates the outputs and checks the tensors as
// csrc/bindings/rnn_binding.h did; shapes and semantics are those of dlk/rnn.h.
//
// Names: dlk_rnn_ + the dlk_C op's name without "rnn_" (rnn_layer_forward -> dlk_rnn_layer_forward_cpu).
// Arguments follow the params structs' field order; cell is dlk::RnnCell as int (0 LSTM, 1 GRU), dtype
// dlk::DType as int; CUDA adds the workspace and the stream.
#pragma once

#include "capi.h"

#define DLK_RNN_PARAMS                                                                                        \
  int cell, int64_t steps, int64_t batch, int64_t hidden, int reverse, const int *lengths, const void *w_hh, \
      const void *h0, const void *c0
#define DLK_RNN_ARGS cell, steps, batch, hidden, reverse, lengths, w_hh, h0, c0

// b_hh: GRU only, nullable. c_all, c_n: LSTM only. saved: written when training.
#define DLK_RNN_LAYER_FORWARD_PARAMS                                                                          \
  DLK_RNN_PARAMS, const void *b_hh, const void *x_proj, void *h_all, void *c_all, void *h_n, void *c_n,     \
      void *saved, int training, int dtype
#define DLK_RNN_LAYER_FORWARD_ARGS DLK_RNN_ARGS, b_hh, x_proj, h_all, c_all, h_n, c_n, saved, training, dtype
// grad_h_all, grad_h_n, grad_c_n nullable (zeros); grad_gh GRU only, grad_c0 LSTM only.
#define DLK_RNN_LAYER_BACKWARD_PARAMS                                                                         \
  DLK_RNN_PARAMS, const void *h_all, const void *c_all, const void *saved, const void *grad_h_all,          \
      const void *grad_h_n, const void *grad_c_n, void *grad_x_proj, void *grad_gh, void *grad_h0,          \
      void *grad_c0, int dtype
#define DLK_RNN_LAYER_BACKWARD_ARGS                                                                        \
  DLK_RNN_ARGS, h_all, c_all, saved, grad_h_all, grad_h_n, grad_c_n, grad_x_proj, grad_gh, grad_h0, grad_c0, \
      dtype

DLK_API int dlk_rnn_layer_forward_cpu(DLK_RNN_LAYER_FORWARD_PARAMS);
DLK_API int dlk_rnn_layer_backward_cpu(DLK_RNN_LAYER_BACKWARD_PARAMS);

// Workspace queries take the launcher's arguments and store its need in *workspace_bytes.
DLK_API int dlk_rnn_layer_forward_workspace_bytes_cuda(DLK_RNN_LAYER_FORWARD_PARAMS, int64_t* workspace_bytes);
DLK_API int dlk_rnn_layer_forward_cuda(DLK_RNN_LAYER_FORWARD_PARAMS, void* workspace, int64_t workspace_bytes,
                                       void* stream);
DLK_API int dlk_rnn_layer_backward_workspace_bytes_cuda(DLK_RNN_LAYER_BACKWARD_PARAMS, int64_t* workspace_bytes);
DLK_API int dlk_rnn_layer_backward_cuda(DLK_RNN_LAYER_BACKWARD_PARAMS, void* workspace, int64_t workspace_bytes,
                                        void* stream);
