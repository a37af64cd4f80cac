// Launchers for the LSTM/GRU step kernels (rnn_kernels.cuh): argument checks, the choice between
// the per-step and the persistent path, workspace layout and dtype/cell/tile dispatch.
#include "rnn.cuh"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "common.cuh"
#include "dlk/launch_plan.h"
#include "rnn_kernels.cuh"

namespace dlk {
namespace {

using rnn::ceil_div;
using rnn::kHiddenTile;
using rnn::kThreads;
using rnn::StepArgs;
using rnn::StepTile;

constexpr size_t kWorkspaceAlign = 256;

size_t align_up(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

size_t element_bytes(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}
size_t accumulate_bytes(DType dtype) { return dtype == DType::kFloat64 ? 8 : 4; }

bool known_dtype(DType dtype) { return element_bytes(dtype) != 0; }

bool aligned4(const void* p) { return is_aligned(p, 4); }

// Batch rows per CTA: one n-tile of 8 for small batches (inference, B <= 8), else 4 (2 for fp64,
// whose SIMT partials and staging would not fit in 48 KB of shared memory).
int n_tiles_for(int64_t batch, DType dtype) {
  if (batch <= 8) return 1;
  return dtype == DType::kFloat64 ? 2 : 4;
}

template <typename T, typename Fn>
Status dispatch_cell_and_tiles(RnnCell cell, int n_tiles, Fn&& fn) {
  constexpr int kLargeTiles = std::is_same_v<T, double> ? 2 : 4;
  const bool small = n_tiles == 1;
  if (cell == RnnCell::kLSTM) {
    return small ? fn(std::integral_constant<RnnCell, RnnCell::kLSTM>{}, std::integral_constant<int, 1>{})
                 : fn(std::integral_constant<RnnCell, RnnCell::kLSTM>{}, std::integral_constant<int, kLargeTiles>{});
  }
  return small ? fn(std::integral_constant<RnnCell, RnnCell::kGRU>{}, std::integral_constant<int, 1>{})
               : fn(std::integral_constant<RnnCell, RnnCell::kGRU>{}, std::integral_constant<int, kLargeTiles>{});
}

// ---------------------------------------------------------------------------------------------
// Path choice.

enum class PathRequest { kAuto, kStep, kPersistent };

// DLK_RNN_CUDA_PATH=step|persistent (see rnn.cuh); anything else means automatic.
PathRequest path_request() {
  const char* env = std::getenv("DLK_RNN_CUDA_PATH");
  if (env == nullptr) return PathRequest::kAuto;
  if (std::strcmp(env, "step") == 0) return PathRequest::kStep;
  if (std::strcmp(env, "persistent") == 0) return PathRequest::kPersistent;
  return PathRequest::kAuto;
}

// The persistent heuristic: take it whenever it can run, i.e. the device supports cooperative
// launches and all CTAs, each holding its weight slice in shared memory, are resident at once.
// Weights then stay on-chip across steps and a grid barrier (~1-2 us) replaces a kernel launch
// (~3-5 us) per step; when the slices do not fit (large H, large B x H grids) the per-step path
// streams W_hh from L2 every step instead.
template <typename Kernel>
bool persistent_fits(Kernel* kernel, dim3 grid, size_t smem_bytes, int64_t launches_guarded) {
  if (path_request() == PathRequest::kStep) return false;
  const DeviceFacts facts = current_device_facts();
  if (!facts.cooperative_launch || smem_bytes > size_t(facts.max_smem_optin)) return false;
  const int64_t ctas = int64_t(grid.x) * grid.y;
  // The barrier counter reaches (launches_guarded - 1) * ctas.
  if (launches_guarded * ctas >= int64_t(UINT32_MAX)) return false;
  if (!allow_dynamic_smem(kernel, smem_bytes)) return false;
  return int64_t(resident_blocks_per_sm(kernel, kThreads, smem_bytes)) * facts.sm_count >= ctas;
}

// One cooperative launch; false (error cleared) when the runtime refuses it, e.g. too large after
// all, so that the caller can fall back to the per-step path.
template <typename Kernel, typename... Args>
bool launch_cooperative(Kernel* kernel, dim3 grid, size_t smem_bytes, cudaStream_t stream, Args... args) {
  void* arg_pointers[] = {static_cast<void*>(&args)...};
  if (cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, dim3(kThreads), arg_pointers,
                                  smem_bytes, stream) == cudaSuccess) {
    return true;
  }
  clear_query_error();
  return false;
}

// One step of a per-step kernel: launch(grid, first batch tile) per chunk of at most 65,535 batch
// tiles (grid.y). A step's batch rows are independent of each other, so the chunks may run in any order.
template <typename Launch>
Status launch_over_batch_tiles(const plan::RnnGrid& plan, dim3 grid, Launch&& launch) {
  for (int64_t chunk = 0; chunk < plan.batch_tiles.launches; ++chunk) {
    grid.y = unsigned(plan.batch_tiles.size(chunk));
    launch(grid, plan.batch_tiles.first(chunk));
    if (const Status status = check_launch(); status != Status::kOk) return status;
  }
  return Status::kOk;
}

// dst = src (same dtype, `bytes` long), or zeros when src is null: the T = 0 cases, where the final
// state is the initial one and the initial state's gradient the final one's.
Status copy_or_zero(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  const cudaError_t error = src != nullptr ? cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)
                                           : cudaMemsetAsync(dst, 0, bytes, stream);
  return error == cudaSuccess ? Status::kOk : Status::kLaunchFailed;
}

// ---------------------------------------------------------------------------------------------
// Argument checks; kOk means "launch".

// Batch tiles beyond grid.y's 65,535 are split over launches (plan::plan_rnn_grid); W_hh^T's
// transpose puts H / 32 column tiles on grid.y.
bool geometry_is_valid(const RnnParams& p) {
  return (p.cell == RnnCell::kLSTM || p.cell == RnnCell::kGRU) && p.steps >= 0 && p.batch >= 0 && p.hidden >= 0 &&
         plan::plan_rnn_grid(p.hidden, kHiddenTile, p.batch, 8).valid() && ceil_div(p.hidden, 32) <= plan::kMaxGridYZ &&
         ceil_div(int64_t(rnn::kMaxGates) * p.hidden, 32) <= plan::kMaxGridX;
}

bool has_work(const RnnParams& p) { return p.batch > 0 && p.hidden > 0; }

Status check_forward_args(const RnnFwdParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (!geometry_is_valid(p)) return Status::kInvalidArgument;
  if (!has_work(p)) return Status::kOk;
  const bool lstm = p.cell == RnnCell::kLSTM;
  const bool per_step = p.steps > 0;  // tensors with a T dimension are empty (maybe null) when T = 0
  if (p.h0 == nullptr || p.h_n == nullptr || (lstm && (p.c0 == nullptr || p.c_n == nullptr)) ||
      (per_step && (p.x_proj == nullptr || p.w_hh == nullptr || p.h_all == nullptr ||
                    (lstm && p.c_all == nullptr) || (p.training && p.saved == nullptr)))) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

Status check_backward_args(const RnnBwdParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (!geometry_is_valid(p)) return Status::kInvalidArgument;
  if (!has_work(p)) return Status::kOk;
  const bool lstm = p.cell == RnnCell::kLSTM;
  const bool per_step = p.steps > 0;
  if (p.grad_h0 == nullptr || (lstm && p.grad_c0 == nullptr) ||
      (per_step && (p.w_hh == nullptr || p.h0 == nullptr || p.h_all == nullptr || p.saved == nullptr ||
                    p.grad_x_proj == nullptr || (lstm && (p.c0 == nullptr || p.c_all == nullptr)) ||
                    (!lstm && p.grad_gh == nullptr)))) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

// ---------------------------------------------------------------------------------------------
// Workspaces (every piece 256-byte aligned).

// Forward: the persistent path's barrier counter.
constexpr size_t kForwardWorkspaceBytes = kWorkspaceAlign;

struct BackwardLayout {
  size_t barrier = 0, weight_t = 0, gate_grads[2] = {0, 0}, dh_carry = 0, dc_carry = 0, total = 0;
};

BackwardLayout backward_layout(const RnnParams& p, DType dtype) {
  const size_t elem = element_bytes(dtype), acc = accumulate_bytes(dtype);
  const size_t gate_rows = size_t(rnn_gate_count(p.cell)) * size_t(p.hidden);
  BackwardLayout layout;
  size_t offset = kWorkspaceAlign;  // barrier at 0
  layout.weight_t = offset;
  offset += align_up(gate_rows * size_t(p.hidden) * elem);
  for (size_t& buffer : layout.gate_grads) {
    buffer = offset;
    offset += align_up(size_t(p.batch) * gate_rows * elem);
  }
  layout.dh_carry = offset;
  offset += align_up(size_t(p.batch) * size_t(p.hidden) * acc);
  layout.dc_carry = offset;
  offset += align_up(size_t(p.batch) * size_t(p.hidden) * acc);
  layout.total = offset;
  return layout;
}

// ---------------------------------------------------------------------------------------------
// Launches.

template <typename T, RnnCell kCell, int kNTiles>
Status launch_forward(const RnnFwdParams& p, void* workspace, cudaStream_t stream) {
  using Tile = StepTile<T, kCell, false, kNTiles>;
  const plan::RnnGrid plan = plan::plan_rnn_grid(p.hidden, kHiddenTile, p.batch, Tile::kBatchTile);
  const dim3 grid(unsigned(plan.hidden_tiles), unsigned(plan.batch_tiles.per_chunk));
  StepArgs args;
  const bool even_rows = p.hidden % 2 == 0;
  args.weights_aligned = even_rows && aligned4(p.w_hh);
  args.batch_aligned = even_rows && aligned4(p.h_all) && aligned4(p.h0);
  args.barrier = static_cast<unsigned int*>(workspace);

  auto* persistent = rnn::rnn_forward_kernel<T, kCell, kNTiles, true>;
  const size_t persistent_smem = Tile::persistent_smem_bytes(p.hidden);
  if (plan.single_launch() && persistent_fits(persistent, grid, persistent_smem, p.steps)) {
    args.first_step = 0;
    args.num_steps = p.steps;
    if (cudaMemsetAsync(args.barrier, 0, sizeof(unsigned int), stream) != cudaSuccess) return Status::kLaunchFailed;
    if (launch_cooperative(persistent, grid, persistent_smem, stream, p, args)) return check_launch();
  }

  auto* step = rnn::rnn_forward_kernel<T, kCell, kNTiles, false>;
  if (!allow_dynamic_smem(step, Tile::kStepSmemBytes)) return Status::kLaunchFailed;
  args.num_steps = 1;
  for (int64_t s = 0; s < p.steps; ++s) {
    args.first_step = s;
    const Status status = launch_over_batch_tiles(plan, grid, [&](dim3 chunk_grid, int64_t first_tile) {
      args.batch_tile_offset = first_tile;
      step<<<chunk_grid, kThreads, Tile::kStepSmemBytes, stream>>>(p, args);
    });
    if (status != Status::kOk) return status;
  }
  return Status::kOk;
}

template <typename T, RnnCell kCell, int kNTiles>
Status launch_backward(const RnnBwdParams& p, const BackwardLayout& layout, void* workspace, cudaStream_t stream) {
  using Tile = StepTile<T, kCell, true, kNTiles>;
  using Acc = AccumulateType<T>;
  const int64_t gate_rows = int64_t(Tile::kGates) * p.hidden;
  unsigned char* base = static_cast<unsigned char*>(workspace);
  rnn::BwdScratch<T> ws;
  ws.barrier = reinterpret_cast<unsigned int*>(base + layout.barrier);
  ws.weight_t = reinterpret_cast<T*>(base + layout.weight_t);
  ws.gate_grads[0] = reinterpret_cast<T*>(base + layout.gate_grads[0]);
  ws.gate_grads[1] = reinterpret_cast<T*>(base + layout.gate_grads[1]);
  ws.dh_carry = reinterpret_cast<Acc*>(base + layout.dh_carry);
  ws.dc_carry = reinterpret_cast<Acc*>(base + layout.dc_carry);

  // W_hh^T, so that both GEMM operands of dh = grad_gh W_hh are read along k.
  const dim3 transpose_grid(unsigned(ceil_div(gate_rows, 32)), unsigned(ceil_div(p.hidden, 32)));
  rnn::rnn_transpose_kernel<T><<<transpose_grid, dim3(32, 8), 0, stream>>>(static_cast<const T*>(p.w_hh), ws.weight_t,
                                                                          gate_rows, p.hidden);
  if (const Status status = check_launch(); status != Status::kOk) return status;

  const plan::RnnGrid plan = plan::plan_rnn_grid(p.hidden, kHiddenTile, p.batch, Tile::kBatchTile);
  const dim3 grid(unsigned(plan.hidden_tiles), unsigned(plan.batch_tiles.per_chunk));
  StepArgs args;
  args.weights_aligned = gate_rows % 2 == 0;  // the workspace is aligned
  args.batch_aligned = gate_rows % 2 == 0;
  args.barrier = ws.barrier;
  const int64_t launches = p.steps + 1;  // T iterations + grad_h0 / grad_c0

  auto* persistent = rnn::rnn_backward_kernel<T, kCell, kNTiles, true>;
  const size_t persistent_smem = Tile::persistent_smem_bytes(gate_rows);
  if (plan.single_launch() && persistent_fits(persistent, grid, persistent_smem, launches)) {
    args.first_step = 0;
    args.num_steps = launches;
    if (cudaMemsetAsync(args.barrier, 0, sizeof(unsigned int), stream) != cudaSuccess) return Status::kLaunchFailed;
    if (launch_cooperative(persistent, grid, persistent_smem, stream, p, ws, args)) return check_launch();
  }

  auto* step = rnn::rnn_backward_kernel<T, kCell, kNTiles, false>;
  if (!allow_dynamic_smem(step, Tile::kStepSmemBytes)) return Status::kLaunchFailed;
  args.num_steps = 1;
  for (int64_t s = 0; s < launches; ++s) {
    args.first_step = s;
    const Status status = launch_over_batch_tiles(plan, grid, [&](dim3 chunk_grid, int64_t first_tile) {
      args.batch_tile_offset = first_tile;
      step<<<chunk_grid, kThreads, Tile::kStepSmemBytes, stream>>>(p, ws, args);
    });
    if (status != Status::kOk) return status;
  }
  return Status::kOk;
}

}  // namespace

size_t rnn_forward_workspace_bytes(const RnnFwdParams&, DType) { return kForwardWorkspaceBytes; }

Status rnn_forward_cuda(const RnnFwdParams& p, DType dtype, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  const Status args = check_forward_args(p, dtype);
  if (args != Status::kOk || !has_work(p)) return args;
  if (p.steps == 0) {
    const size_t state_bytes = size_t(p.batch) * size_t(p.hidden) * element_bytes(dtype);
    const Status h = copy_or_zero(p.h_n, p.h0, state_bytes, stream);
    return h != Status::kOk || p.cell != RnnCell::kLSTM ? h : copy_or_zero(p.c_n, p.c0, state_bytes, stream);
  }
  if (workspace == nullptr || workspace_bytes < kForwardWorkspaceBytes) return Status::kInvalidArgument;
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    return dispatch_cell_and_tiles<T>(p.cell, n_tiles_for(p.batch, dtype), [&](auto cell, auto n_tiles) {
      return launch_forward<T, decltype(cell)::value, decltype(n_tiles)::value>(p, workspace, stream);
    });
  });
}

size_t rnn_backward_workspace_bytes(const RnnBwdParams& p, DType dtype) {
  if (!known_dtype(dtype) || !geometry_is_valid(p) || !has_work(p)) return 0;
  return backward_layout(p, dtype).total;
}

Status rnn_backward_cuda(const RnnBwdParams& p, DType dtype, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream) {
  const Status args = check_backward_args(p, dtype);
  if (args != Status::kOk || !has_work(p)) return args;
  if (p.steps == 0) {
    const size_t state_bytes = size_t(p.batch) * size_t(p.hidden) * element_bytes(dtype);
    const Status h = copy_or_zero(p.grad_h0, p.grad_h_n, state_bytes, stream);
    return h != Status::kOk || p.cell != RnnCell::kLSTM ? h : copy_or_zero(p.grad_c0, p.grad_c_n, state_bytes, stream);
  }
  const BackwardLayout layout = backward_layout(p, dtype);
  if (workspace == nullptr || workspace_bytes < layout.total) return Status::kInvalidArgument;
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    return dispatch_cell_and_tiles<T>(p.cell, n_tiles_for(p.batch, dtype), [&](auto cell, auto n_tiles) {
      return launch_backward<T, decltype(cell)::value, decltype(n_tiles)::value>(p, layout, workspace, stream);
    });
  });
}

}  // namespace dlk
