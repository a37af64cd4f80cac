// CUDA launchers for the recurrent part of one LSTM/GRU layer and direction over all T steps
// (contract: dlk/rnn.h). Torch-free: the binding fills the params from tensors, allocates the
// workspace (uninitialised memory is fine; the launchers initialise what they use) and passes
// torch's current stream.
//
// Two paths, chosen per call (see rnn.cu, choose_path):
//   per-step    one launch per timestep; a CTA computes 16 hidden units (all G gates, so the cell
//               update stays local) for a tile of batch rows: gh = h_{t-1} W_hh^T on tensor cores
//               (mma.sync, fp32 accumulate) for fp16/bf16 and SIMT for fp32/fp64, fused with bias,
//               nonlinearities, state update and the stores of h_all[t], c_all[t], saved[t].
//   persistent  one cooperative launch for all steps; each CTA keeps its slice of W_hh (backward:
//               of W_hh^T) in shared memory, steps are separated by a grid-wide barrier and
//               h_{t-1} (backward: the previous step's gate gradients) is exchanged through L2.
//               Taken when the device supports cooperative launches and every CTA, with its
//               weight slice in shared memory, fits on the GPU at once; otherwise per-step.
// Batches of more than 65,535 batch tiles (grid.y) take the per-step path, each step launched once
// per chunk of tiles (dlk/launch_plan.h, plan_rnn_grid).
// The environment variable DLK_RNN_CUDA_PATH=step|persistent overrides the choice (tests and
// benchmarks); "persistent" still falls back to per-step where it cannot run.
//
// Deterministic: every sum runs in a fixed order, no atomics on data.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "dlk/rnn.h"

namespace dlk {

// The workspace depends on the params' shapes and the dtype only (not on the device or the path).
// Forward: a grid-barrier counter. Backward: W_hh^T, two buffers of gate gradients in the input
// dtype (B, G*H), the carried dh and dc in the accumulation dtype (B, H) each, and the counter.
size_t rnn_forward_workspace_bytes(const RnnFwdParams& params, DType dtype);
Status rnn_forward_cuda(const RnnFwdParams& params, DType dtype, void* workspace, size_t workspace_bytes,
                        cudaStream_t stream);

size_t rnn_backward_workspace_bytes(const RnnBwdParams& params, DType dtype);
Status rnn_backward_cuda(const RnnBwdParams& params, DType dtype, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream);

}  // namespace dlk
