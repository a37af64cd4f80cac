// CUDA kernels for fused BatchNorm (+ residual) (+ ReLU / LeakyReLU). Every kernel is memory-bound, so the
// design is about passes and access patterns:
//  - Reductions (stats, backward_reduce) read each element once. A channel's N*S elements are split
//    over several blocks (grid.y) so that a handful of channels with huge planes still fills every
//    SM; each block leaves an fp32 (fp64) partial in a workspace and a second tiny kernel, one warp
//    per channel, combines the partials in a fixed order. Deterministic, no atomics, no zero-fill.
//  - Elementwise (apply, backward_apply) are single passes with 16-byte accesses; the per-channel
//    statistics are folded into a few coefficients so that each element costs one or two FMAs.
//  - channels_last: channel c is column c of an (N*S, C) row-major matrix. Each thread owns kVec
//    adjacent channels (one 16-byte access per row) and walks down the rows, keeping its channels'
//    state or coefficients in registers; neighbouring threads cover neighbouring columns, so a warp
//    reads whole rows.
//  - NCHW: a channel is N runs of S contiguous elements. Threads walk a flat index over those runs
//    (reductions) or over the whole tensor (elementwise), dividing by S with a multiply-shift.
#include "batch_norm.cuh"

#include "common.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace dlk {
namespace {

constexpr int kBlockThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
// Grids are one wave of resident blocks (see residency()). Elementwise kernels use the full wave;
// this is only the guess when no device can be queried.
constexpr int kElementwiseBlocksPerSM = 2048 / kBlockThreads;
// Reductions stop at half occupancy: with kLoadsInFlight 16-byte loads per thread that already keeps
// ~64 KB per SM in flight, more than DRAM latency x bandwidth needs, and fewer blocks leave fewer
// partials to combine afterwards.
constexpr int kReduceBlocksPerSM = 4;
// A block's slice of a channel should give each thread at least this many loads; below that the
// partial bookkeeping costs more than the parallelism gains.
constexpr int kMinItemsPerThread = 8;
// Loads issued back to back before any is used: one dependent load-then-use chain per thread would
// leave too few bytes in flight to saturate DRAM.
constexpr int kLoadsInFlight = 4;
constexpr unsigned kFullWarp = 0xffffffffu;

DLK_HOST_DEVICE float square_root(float v) { return sqrtf(v); }
DLK_HOST_DEVICE double square_root(double v) { return sqrt(v); }

template <typename T> constexpr int kMaxVec = kMaxVectorBytes / int(sizeof(T));

template <typename T, int N>
DLK_HOST_DEVICE Vector<T, N> load_vector(const T* base, int64_t offset) {
  return *reinterpret_cast<const Vector<T, N>*>(base + offset);
}

template <typename T, int N>
DLK_HOST_DEVICE void store_vector(T* base, int64_t offset, const Vector<T, N>& v) {
  *reinterpret_cast<Vector<T, N>*>(base + offset) = v;
}

template <typename Acc>
DLK_HOST_DEVICE const Acc* stat_ptr(const void* p) {
  return static_cast<const Acc*>(p);
}

// Visits i = first, first + step, ... < end, issuing kLoadsInFlight loads before using any of them.
// load(i) only reads; use(i, item) consumes the items in visiting order, which fixes the order of
// every accumulation.
template <typename Index, typename Load, typename Use>
DLK_HOST_DEVICE void strided_for(Index first, Index end, Index step, Load&& load, Use&& use) {
  using Item = decltype(load(first));
  Index i = first;
  for (; i < end && end - i > Index(kLoadsInFlight - 1) * step; i += Index(kLoadsInFlight) * step) {
    Item items[kLoadsInFlight];
    DLK_UNROLL
    for (int u = 0; u < kLoadsInFlight; ++u) items[u] = load(i + Index(u) * step);
    DLK_UNROLL
    for (int u = 0; u < kLoadsInFlight; ++u) use(i + Index(u) * step, items[u]);
  }
  for (; i < end; i += step) use(i, load(i));
}

// ---------------------------------------------------------------------------------------------
// Per-thread reduction states. Plain aggregates without initializers: they also live in __shared__.

// kLanes Welford states (adjacent channels in channels_last, or the lanes of one channel's vector
// in NCHW) that always see the same number of elements, so that one reciprocal of the count serves
// all lanes instead of one division per element as in dlk::welford_update.
template <typename Acc, int kLanes>
struct WelfordLanes {
  Acc mean[kLanes];
  Acc m2[kLanes];
  int64_t count;
};

template <typename Acc, int kLanes>
struct SumLanes {
  Acc dy[kLanes];       // sum of g
  Acc dy_xmu[kLanes];   // sum of g * (x - mean); invstd is applied once per channel at the end
};

template <typename Acc, int kLanes>
DLK_HOST_DEVICE void clear(WelfordLanes<Acc, kLanes>& s) {
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) s.mean[j] = s.m2[j] = Acc(0);
  s.count = 0;
}

template <typename Acc, int kLanes>
DLK_HOST_DEVICE void clear(SumLanes<Acc, kLanes>& s) {
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) s.dy[j] = s.dy_xmu[j] = Acc(0);
}

template <typename Acc, int kLanes>
DLK_HOST_DEVICE void welford_add(WelfordLanes<Acc, kLanes>& s, const Acc (&x)[kLanes]) {
  s.count += 1;
  const Acc inv_count = Acc(1) / Acc(s.count);
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) {
    const Acc delta = x[j] - s.mean[j];
    s.mean[j] += delta * inv_count;
    s.m2[j] += delta * (x[j] - s.mean[j]);
  }
}

// a := a combined with b, b holding the later elements. Not commutative bit for bit, so every caller
// combines in a fixed order. This is dlk::welford_merge term for term, with its early returns and
// its division taken out of the lane loop: called per lane, the compiler keeps kLanes divisions.
template <typename Acc, int kLanes>
DLK_HOST_DEVICE void combine(WelfordLanes<Acc, kLanes>& a, const WelfordLanes<Acc, kLanes>& b) {
  if (b.count == 0) return;
  if (a.count == 0) {
    a = b;
    return;
  }
  const int64_t count = a.count + b.count;
  const Acc b_share = Acc(b.count) / Acc(count);
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) {
    const Acc delta = b.mean[j] - a.mean[j];
    a.mean[j] += delta * b_share;
    a.m2[j] = a.m2[j] + b.m2[j] + delta * delta * Acc(a.count) * b_share;
  }
  a.count = count;
}

template <typename Acc, int kLanes>
DLK_HOST_DEVICE void combine(SumLanes<Acc, kLanes>& a, const SumLanes<Acc, kLanes>& b) {
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) {
    a.dy[j] += b.dy[j];
    a.dy_xmu[j] += b.dy_xmu[j];
  }
}

// NCHW: a thread's lanes all belong to one channel.
template <typename Acc, int kLanes>
DLK_HOST_DEVICE WelfordLanes<Acc, 1> collapse_lanes(const WelfordLanes<Acc, kLanes>& s) {
  WelfordLanes<Acc, 1> out{{s.mean[0]}, {s.m2[0]}, s.count};
  DLK_UNROLL
  for (int j = 1; j < kLanes; ++j) combine(out, WelfordLanes<Acc, 1>{{s.mean[j]}, {s.m2[j]}, s.count});
  return out;
}

template <typename Acc, int kLanes>
DLK_HOST_DEVICE SumLanes<Acc, 1> collapse_lanes(const SumLanes<Acc, kLanes>& s) {
  SumLanes<Acc, 1> out{{s.dy[0]}, {s.dy_xmu[0]}};
  DLK_UNROLL
  for (int j = 1; j < kLanes; ++j) combine(out, SumLanes<Acc, 1>{{s.dy[j]}, {s.dy_xmu[j]}});
  return out;
}

template <typename Acc, int kLanes>
__device__ __forceinline__ WelfordLanes<Acc, kLanes> shuffle_down(const WelfordLanes<Acc, kLanes>& s, int delta) {
  WelfordLanes<Acc, kLanes> out;
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) {
    out.mean[j] = __shfl_down_sync(kFullWarp, s.mean[j], delta);
    out.m2[j] = __shfl_down_sync(kFullWarp, s.m2[j], delta);
  }
  out.count = static_cast<int64_t>(__shfl_down_sync(kFullWarp, static_cast<long long>(s.count), delta));
  return out;
}

template <typename Acc, int kLanes>
__device__ __forceinline__ SumLanes<Acc, kLanes> shuffle_down(const SumLanes<Acc, kLanes>& s, int delta) {
  SumLanes<Acc, kLanes> out;
  DLK_UNROLL
  for (int j = 0; j < kLanes; ++j) {
    out.dy[j] = __shfl_down_sync(kFullWarp, s.dy[j], delta);
    out.dy_xmu[j] = __shfl_down_sync(kFullWarp, s.dy_xmu[j], delta);
  }
  return out;
}

// Combines the states of the threads that share a column over the block's rows. The block is
// (columns x rows) with linear id tid = row * columns + column and columns a power of two <= 32, so
// a warp holds 32 / columns rows of every column: a shuffle tree folds those, then warp 0 folds the
// warps' results in warp order. The result is valid in the threads of row 0 (tid < columns).
template <typename State>
__device__ __forceinline__ State reduce_block_columns(State s, int tid, int columns) {
  __shared__ State warp_results[kWarpsPerBlock][kWarpSize];
  const int lane = tid % kWarpSize, warp = tid / kWarpSize;
  for (int offset = kWarpSize / 2; offset >= columns; offset /= 2) combine(s, shuffle_down(s, offset));
  if (lane < columns) warp_results[warp][lane] = s;
  __syncthreads();
  if (warp == 0 && lane < columns) {
    for (int w = 1; w < kWarpsPerBlock; ++w) combine(s, warp_results[w][lane]);
  }
  return s;
}

template <typename State>
__device__ __forceinline__ State reduce_warp(State s) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) combine(s, shuffle_down(s, offset));
  return s;
}

// How the reduced dimension of every channel (rows in channels_last, vectors of kVec elements in
// NCHW) is cut into `splits` contiguous slices, one per block along grid.y. Both the partial kernels
// and the combining kernel derive each slice's element count from it, so counts are not stored.
struct ReduceGrid {
  int64_t items = 0, items_per_split = 0, splits = 0, elements_per_item = 1;
  DLK_HOST_DEVICE int64_t begin(int64_t k) const { return k * items_per_split; }
  DLK_HOST_DEVICE int64_t end(int64_t k) const {
    return items - begin(k) < items_per_split ? items : begin(k) + items_per_split;
  }
  DLK_HOST_DEVICE int64_t count(int64_t k) const { return (end(k) - begin(k)) * elements_per_item; }
};

// Partials of channel c are contiguous over the splits so that the combining warp reads them
// coalesced: first array [C][splits], second array [C][splits] right after it.
template <typename Acc>
DLK_HOST_DEVICE void store_partial(Acc* partials, const ReduceGrid& g, int64_t channels, int64_t c, int64_t k,
                                   Acc first, Acc second) {
  partials[c * g.splits + k] = first;
  partials[(channels + c) * g.splits + k] = second;
}

// ---------------------------------------------------------------------------------------------
// Statistics.

template <typename Acc>
DLK_HOST_DEVICE void finish_stats(const BatchNormStatsParams& p, int64_t c, Acc mean, Acc m2) {
  const int64_t count = p.batch * p.spatial;
  const Acc biased_var = m2 / Acc(count);
  static_cast<Acc*>(p.mean)[c] = mean;
  static_cast<Acc*>(p.invstd)[c] = Acc(1) / square_root(biased_var + Acc(p.eps));
  update_running_stats(static_cast<Acc*>(p.running_mean), static_cast<Acc*>(p.running_var), c, mean, biased_var,
                       count, p.momentum);
}

// Rows first_row, first_row + row_step, ... < end_row of channels column * kVec ... + kVec - 1.
template <typename T, int kVec>
DLK_HOST_DEVICE void accumulate_stats_channels_last(const BatchNormStatsParams& p, int64_t column, int64_t first_row,
                                                    int64_t end_row, int64_t row_step,
                                                    WelfordLanes<AccumulateType<T>, kVec>& s) {
  using Acc = AccumulateType<T>;
  const T* __restrict__ input = static_cast<const T*>(p.input) + column * kVec;
  const int64_t row_stride = p.channels;
  strided_for(
      first_row, end_row, row_step, [&](int64_t r) { return load_vector<T, kVec>(input, r * row_stride); },
      [&](int64_t, const Vector<T, kVec>& v) {
        Acc x[kVec];
        DLK_UNROLL
        for (int j = 0; j < kVec; ++j) x[j] = to_accumulate(v.val[j]);
        welford_add(s, x);
      });
}

// Vectors first, first + step, ... < end of channel c; vector j is at (n, s) = (j / (S/kVec), j % (S/kVec)).
template <typename T, int kVec, typename IndexT>
DLK_HOST_DEVICE void accumulate_stats_nchw(const BatchNormStatsParams& p, int64_t c, IndexT first, IndexT end,
                                           IndexT step, const Divider<IndexT>& spatial_vectors,
                                           WelfordLanes<AccumulateType<T>, kVec>& s) {
  using Acc = AccumulateType<T>;
  const T* __restrict__ input = static_cast<const T*>(p.input) + c * p.spatial;
  const int64_t batch_stride = p.channels * p.spatial;
  strided_for(
      first, end, step,
      [&](IndexT j) {
        IndexT n, v;
        spatial_vectors.divmod(j, n, v);
        return load_vector<T, kVec>(input, static_cast<int64_t>(n) * batch_stride + static_cast<int64_t>(v) * kVec);
      },
      [&](IndexT, const Vector<T, kVec>& v) {
        Acc x[kVec];
        DLK_UNROLL
        for (int j = 0; j < kVec; ++j) x[j] = to_accumulate(v.val[j]);
        welford_add(s, x);
      });
}

// ---------------------------------------------------------------------------------------------
// Backward reduction.

template <typename Acc>
DLK_HOST_DEVICE void finish_backward_reduce(const BatchNormBwdReduceParams& p, int64_t c, Acc sum_dy, Acc sum_dy_xmu) {
  static_cast<Acc*>(p.sum_dy)[c] = sum_dy;
  static_cast<Acc*>(p.sum_dy_xhat)[c] = sum_dy_xmu * stat_ptr<Acc>(p.invstd)[c];
}

// The gradient reaching the normalisation: through the activation, decided from the saved output
// (dlk/activation.h; NaN outputs as torch).
template <typename Acc, bool kActivation>
DLK_HOST_DEVICE Acc activation_grad(Acc grad, Acc output, Acc negative_slope) {
  return kActivation ? leaky_relu_backward(grad, output, negative_slope) : grad;
}

template <typename T, int kVec>
struct BackwardItem {
  Vector<T, kVec> grad_output, output, input;
};

template <typename T, int kVec, bool kActivation>
DLK_HOST_DEVICE void add_backward_item(SumLanes<AccumulateType<T>, kVec>& s, const BackwardItem<T, kVec>& item,
                                       const AccumulateType<T> (&mean)[kVec], AccumulateType<T> negative_slope) {
  using Acc = AccumulateType<T>;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) {
    const Acc g = activation_grad<Acc, kActivation>(to_accumulate(item.grad_output.val[j]), to_accumulate(item.output.val[j]),
                                              negative_slope);
    s.dy[j] += g;
    s.dy_xmu[j] += g * (to_accumulate(item.input.val[j]) - mean[j]);
  }
}

template <typename T, int kVec, bool kActivation>
DLK_HOST_DEVICE BackwardItem<T, kVec> load_backward_item(const BatchNormBwdReduceParams& p, int64_t offset) {
  BackwardItem<T, kVec> item{};
  item.grad_output = load_vector<T, kVec>(static_cast<const T*>(p.grad_output), offset);
  if constexpr (kActivation) item.output = load_vector<T, kVec>(static_cast<const T*>(p.output), offset);
  item.input = load_vector<T, kVec>(static_cast<const T*>(p.input), offset);
  return item;
}

template <typename T, int kVec, bool kActivation>
DLK_HOST_DEVICE void accumulate_backward_channels_last(const BatchNormBwdReduceParams& p, int64_t column,
                                                       int64_t first_row, int64_t end_row, int64_t row_step,
                                                       SumLanes<AccumulateType<T>, kVec>& s) {
  using Acc = AccumulateType<T>;
  Acc mean[kVec];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) mean[j] = stat_ptr<Acc>(p.mean)[column * kVec + j];
  const Acc slope = Acc(p.negative_slope);
  const int64_t row_stride = p.channels;
  strided_for(
      first_row, end_row, row_step,
      [&](int64_t r) { return load_backward_item<T, kVec, kActivation>(p, r * row_stride + column * kVec); },
      [&](int64_t, const BackwardItem<T, kVec>& item) { add_backward_item<T, kVec, kActivation>(s, item, mean, slope); });
}

template <typename T, int kVec, bool kActivation, typename IndexT>
DLK_HOST_DEVICE void accumulate_backward_nchw(const BatchNormBwdReduceParams& p, int64_t c, IndexT first, IndexT end,
                                              IndexT step, const Divider<IndexT>& spatial_vectors,
                                              SumLanes<AccumulateType<T>, kVec>& s) {
  using Acc = AccumulateType<T>;
  Acc mean[kVec];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) mean[j] = stat_ptr<Acc>(p.mean)[c];
  const Acc slope = Acc(p.negative_slope);
  const int64_t batch_stride = p.channels * p.spatial;
  strided_for(
      first, end, step,
      [&](IndexT j) {
        IndexT n, v;
        spatial_vectors.divmod(j, n, v);
        return load_backward_item<T, kVec, kActivation>(
            p, static_cast<int64_t>(n) * batch_stride + c * p.spatial + static_cast<int64_t>(v) * kVec);
      },
      [&](IndexT, const BackwardItem<T, kVec>& item) { add_backward_item<T, kVec, kActivation>(s, item, mean, slope); });
}

// ---------------------------------------------------------------------------------------------
// Reduction epilogues and kernels. Block (columns x rows) in channels_last, 256 x 1 in NCHW; grid
// (column blocks or channels, splits).

// A block's result for channel c: final when the block is the channel's only one, else a partial.
template <typename Acc>
DLK_HOST_DEVICE void stats_block_result(const BatchNormStatsParams& p, const ReduceGrid& g, Acc* partials, int64_t c,
                                        int64_t split, Acc mean, Acc m2) {
  if (g.splits == 1) finish_stats(p, c, mean, m2);
  else store_partial(partials, g, p.channels, c, split, mean, m2);
}

template <typename Acc>
DLK_HOST_DEVICE void backward_reduce_block_result(const BatchNormBwdReduceParams& p, const ReduceGrid& g,
                                                  Acc* partials, int64_t c, int64_t split, Acc sum_dy, Acc sum_dy_xmu) {
  if (g.splits == 1) finish_backward_reduce(p, c, sum_dy, sum_dy_xmu);
  else store_partial(partials, g, p.channels, c, split, sum_dy, sum_dy_xmu);
}

// Lane `lane` of the warp that combines channel c folds splits lane, lane + 32, ... in order. With
// no splits at all (N*S == 0) the empty state gives mean 0 / invstd NaN and zero sums.
template <typename Acc>
DLK_HOST_DEVICE WelfordLanes<Acc, 1> gather_stats_partials(const ReduceGrid& g, const Acc* partials,
                                                           int64_t channels, int64_t c, int lane) {
  WelfordLanes<Acc, 1> s;
  clear(s);
  for (int64_t k = lane; k < g.splits; k += kWarpSize) {
    combine(s, WelfordLanes<Acc, 1>{{partials[c * g.splits + k]}, {partials[(channels + c) * g.splits + k]},
                                    g.count(k)});
  }
  return s;
}

template <typename Acc>
DLK_HOST_DEVICE SumLanes<Acc, 1> gather_backward_partials(const ReduceGrid& g, const Acc* partials, int64_t channels,
                                                          int64_t c, int lane) {
  SumLanes<Acc, 1> s;
  clear(s);
  for (int64_t k = lane; k < g.splits; k += kWarpSize) {
    combine(s, SumLanes<Acc, 1>{{partials[c * g.splits + k]}, {partials[(channels + c) * g.splits + k]}});
  }
  return s;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kBlockThreads)
    stats_channels_last_kernel(const BatchNormStatsParams p, const ReduceGrid g, AccumulateType<T>* partials) {
  using Acc = AccumulateType<T>;
  const int64_t column = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = column * kVec < p.channels;
  const int64_t split = blockIdx.y;
  WelfordLanes<Acc, kVec> s;
  clear(s);
  // Inactive columns (C not a multiple of the block width) still take part in the block reduction.
  if (active) {
    accumulate_stats_channels_last<T, kVec>(p, column, g.begin(split) + threadIdx.y, g.end(split), blockDim.y, s);
  }
  s = reduce_block_columns(s, static_cast<int>(threadIdx.y * blockDim.x + threadIdx.x), static_cast<int>(blockDim.x));
  if (threadIdx.y != 0 || !active) return;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) stats_block_result(p, g, partials, column * kVec + j, split, s.mean[j], s.m2[j]);
}

template <typename T, int kVec, typename IndexT>
__global__ void __launch_bounds__(kBlockThreads)
    stats_nchw_kernel(const BatchNormStatsParams p, const ReduceGrid g, const Divider<IndexT> spatial_vectors,
                      AccumulateType<T>* partials) {
  using Acc = AccumulateType<T>;
  const int64_t c = blockIdx.x, split = blockIdx.y;
  WelfordLanes<Acc, kVec> s;
  clear(s);
  accumulate_stats_nchw<T, kVec, IndexT>(p, c, static_cast<IndexT>(g.begin(split) + threadIdx.x),
                                         static_cast<IndexT>(g.end(split)), IndexT(kBlockThreads), spatial_vectors, s);
  const WelfordLanes<Acc, 1> total = reduce_block_columns(collapse_lanes(s), static_cast<int>(threadIdx.x), 1);
  if (threadIdx.x == 0) stats_block_result(p, g, partials, c, split, total.mean[0], total.m2[0]);
}

template <typename T, int kVec, bool kActivation>
__global__ void __launch_bounds__(kBlockThreads)
    backward_reduce_channels_last_kernel(const BatchNormBwdReduceParams p, const ReduceGrid g,
                                         AccumulateType<T>* partials) {
  using Acc = AccumulateType<T>;
  const int64_t column = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = column * kVec < p.channels;
  const int64_t split = blockIdx.y;
  SumLanes<Acc, kVec> s;
  clear(s);
  if (active) {
    accumulate_backward_channels_last<T, kVec, kActivation>(p, column, g.begin(split) + threadIdx.y, g.end(split),
                                                      blockDim.y, s);
  }
  s = reduce_block_columns(s, static_cast<int>(threadIdx.y * blockDim.x + threadIdx.x), static_cast<int>(blockDim.x));
  if (threadIdx.y != 0 || !active) return;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) {
    backward_reduce_block_result(p, g, partials, column * kVec + j, split, s.dy[j], s.dy_xmu[j]);
  }
}

template <typename T, int kVec, bool kActivation, typename IndexT>
__global__ void __launch_bounds__(kBlockThreads)
    backward_reduce_nchw_kernel(const BatchNormBwdReduceParams p, const ReduceGrid g,
                                const Divider<IndexT> spatial_vectors, AccumulateType<T>* partials) {
  using Acc = AccumulateType<T>;
  const int64_t c = blockIdx.x, split = blockIdx.y;
  SumLanes<Acc, kVec> s;
  clear(s);
  accumulate_backward_nchw<T, kVec, kActivation, IndexT>(p, c, static_cast<IndexT>(g.begin(split) + threadIdx.x),
                                                   static_cast<IndexT>(g.end(split)), IndexT(kBlockThreads),
                                                   spatial_vectors, s);
  const SumLanes<Acc, 1> total = reduce_block_columns(collapse_lanes(s), static_cast<int>(threadIdx.x), 1);
  if (threadIdx.x == 0) backward_reduce_block_result(p, g, partials, c, split, total.dy[0], total.dy_xmu[0]);
}

// One warp per channel; whole warps leave together, so the shuffles stay full-warp.
template <typename Acc>
__global__ void __launch_bounds__(kBlockThreads)
    stats_combine_kernel(const BatchNormStatsParams p, const ReduceGrid g, const Acc* partials) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (c >= p.channels) return;
  const int lane = threadIdx.x % kWarpSize;
  const WelfordLanes<Acc, 1> s = reduce_warp(gather_stats_partials(g, partials, p.channels, c, lane));
  if (lane == 0) finish_stats(p, c, s.mean[0], s.m2[0]);
}

template <typename Acc>
__global__ void __launch_bounds__(kBlockThreads)
    backward_reduce_combine_kernel(const BatchNormBwdReduceParams p, const ReduceGrid g, const Acc* partials) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (c >= p.channels) return;
  const int lane = threadIdx.x % kWarpSize;
  const SumLanes<Acc, 1> s = reduce_warp(gather_backward_partials(g, partials, p.channels, c, lane));
  if (lane == 0) finish_backward_reduce(p, c, s.dy[0], s.dy_xmu[0]);
}

// ---------------------------------------------------------------------------------------------
// Elementwise: apply. y = x * scale + shift (+ residual), scale = invstd * weight,
// shift = bias - mean * scale.

template <typename Acc>
struct ApplyCoefficients {
  Acc scale, shift;
};

template <typename Acc>
DLK_HOST_DEVICE ApplyCoefficients<Acc> apply_coefficients(const BatchNormApplyParams& p, int64_t c) {
  const Acc weight = p.weight ? stat_ptr<Acc>(p.weight)[c] : Acc(1);
  const Acc bias = p.bias ? stat_ptr<Acc>(p.bias)[c] : Acc(0);
  const Acc scale = stat_ptr<Acc>(p.invstd)[c] * weight;
  return {scale, bias - stat_ptr<Acc>(p.mean)[c] * scale};
}

// NaN propagates, as in torch (dlk/activation.h).
template <bool kActivation, typename Acc>
DLK_HOST_DEVICE Acc apply_activation(Acc y, Acc negative_slope) {
  return kActivation ? leaky_relu(y, negative_slope) : y;
}

template <typename T, int kVec>
struct ApplyItem {
  Vector<T, kVec> input, residual;
};

template <typename T, int kVec, bool kResidual>
DLK_HOST_DEVICE ApplyItem<T, kVec> load_apply_item(const BatchNormApplyParams& p, int64_t offset) {
  ApplyItem<T, kVec> item{};
  item.input = load_vector<T, kVec>(static_cast<const T*>(p.input), offset);
  if constexpr (kResidual) item.residual = load_vector<T, kVec>(static_cast<const T*>(p.residual), offset);
  return item;
}

// coef[j] belongs to lane j: its own channel in channels_last; in NCHW the vector's plane, or the
// next plane's for the lanes past a plane boundary.
template <typename T, int kVec, bool kResidual, bool kActivation>
DLK_HOST_DEVICE Vector<T, kVec> apply_item(const ApplyItem<T, kVec>& item,
                                           const ApplyCoefficients<AccumulateType<T>> (&coef)[kVec],
                                           AccumulateType<T> negative_slope) {
  using Acc = AccumulateType<T>;
  Vector<T, kVec> out;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) {
    Acc y = to_accumulate(item.input.val[j]) * coef[j].scale + coef[j].shift;
    if constexpr (kResidual) y += to_accumulate(item.residual.val[j]);
    out.val[j] = from_accumulate<T>(apply_activation<kActivation>(y, negative_slope));
  }
  return out;
}

// Channels column * kVec ... + kVec - 1 of rows first_row, first_row + row_step, ... < rows.
template <typename T, int kVec, bool kResidual, bool kActivation>
DLK_HOST_DEVICE void apply_channels_last(const BatchNormApplyParams& p, int64_t column, int64_t first_row,
                                         int64_t rows, int64_t row_step) {
  using Acc = AccumulateType<T>;
  if (column * kVec >= p.channels) return;
  ApplyCoefficients<Acc> coef[kVec];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) coef[j] = apply_coefficients<Acc>(p, column * kVec + j);
  T* __restrict__ output = static_cast<T*>(p.output);
  const int64_t row_stride = p.channels;
  strided_for(
      first_row, rows, row_step,
      [&](int64_t r) { return load_apply_item<T, kVec, kResidual>(p, r * row_stride + column * kVec); },
      [&](int64_t r, const ApplyItem<T, kVec>& item) {
        store_vector(output, r * row_stride + column * kVec, apply_item<T, kVec, kResidual, kActivation>(item, coef, Acc(p.negative_slope)));
      });
}

// Splits the first element of NCHW vector i into (plane, s) and the plane into its channel.
template <typename IndexT>
struct PlaneSplitter {
  Divider<IndexT> spatial, channels;
};

template <typename IndexT>
DLK_HOST_DEVICE void locate(const PlaneSplitter<IndexT>& split, IndexT element, IndexT& channel, IndexT& lanes_in_plane) {
  IndexT plane, s, unused;
  split.spatial.divmod(element, plane, s);
  split.channels.divmod(plane, unused, channel);
  lanes_in_plane = split.spatial.divisor - s;
}

// Per-lane coefficient slots for an NCHW vector starting at `element`: a vector of kVec <= S
// elements spans at most two planes, so at most two channels' coefficients are computed.
template <int kVec, typename IndexT, typename Coefficients, typename Compute>
DLK_HOST_DEVICE void nchw_coefficients(const PlaneSplitter<IndexT>& split, IndexT element, Compute&& compute,
                                       Coefficients (&coef)[kVec]) {
  IndexT c, lanes_in_plane;
  locate(split, element, c, lanes_in_plane);
  const Coefficients first = compute(static_cast<int64_t>(c));
  Coefficients second = first;
  if (lanes_in_plane < IndexT(kVec)) {
    second = compute(c + 1 == split.channels.divisor ? int64_t(0) : static_cast<int64_t>(c) + 1);
  }
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) coef[j] = IndexT(j) < lanes_in_plane ? first : second;
}

template <typename T, int kVec, bool kResidual, bool kActivation, typename IndexT>
DLK_HOST_DEVICE void apply_nchw_vector(const BatchNormApplyParams& p, IndexT i, const ApplyItem<T, kVec>& item,
                                       const PlaneSplitter<IndexT>& split) {
  using Acc = AccumulateType<T>;
  ApplyCoefficients<Acc> coef[kVec];
  nchw_coefficients<kVec>(split, i * IndexT(kVec), [&](int64_t c) { return apply_coefficients<Acc>(p, c); },
                               coef);
  store_vector(static_cast<T*>(p.output), static_cast<int64_t>(i) * kVec,
               apply_item<T, kVec, kResidual, kActivation>(item, coef, Acc(p.negative_slope)));
}

// Thread `thread` of `threads` walks the NCHW vectors grid-stride, then takes one of the elements past
// the last whole vector (numel % kVec of them, only when S % kVec != 0).
template <typename T, int kVec, bool kResidual, bool kActivation, typename IndexT>
DLK_HOST_DEVICE void apply_nchw(const BatchNormApplyParams& p, IndexT thread, IndexT threads, IndexT vectors,
                                IndexT numel, const PlaneSplitter<IndexT>& split) {
  strided_for(
      thread, vectors, threads,
      [&](IndexT i) { return load_apply_item<T, kVec, kResidual>(p, static_cast<int64_t>(i) * kVec); },
      [&](IndexT i, const ApplyItem<T, kVec>& item) {
        apply_nchw_vector<T, kVec, kResidual, kActivation, IndexT>(p, i, item, split);
      });
  if (kVec > 1 && thread < numel - vectors * IndexT(kVec)) {
    const IndexT e = vectors * IndexT(kVec) + thread;
    apply_nchw_vector<T, 1, kResidual, kActivation, IndexT>(p, e, load_apply_item<T, 1, kResidual>(p, static_cast<int64_t>(e)),
                                                      split);
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise: backward_apply. grad_input = g * scale + (x - mean) * x_coef + constant with
// scale = weight * invstd and, in training, x_coef = -scale * invstd * sum_dy_xhat / M,
// constant = -scale * sum_dy / M. (x - mean) is kept rather than folded into the constant so that
// |mean| >> std does not cancel.

template <typename Acc>
struct BackwardCoefficients {
  Acc mean, scale, x_coef, constant;
};

template <typename Acc, bool kTraining>
DLK_HOST_DEVICE BackwardCoefficients<Acc> backward_coefficients(const BatchNormBwdApplyParams& p, int64_t c,
                                                                Acc inv_count) {
  const Acc invstd = stat_ptr<Acc>(p.invstd)[c];
  const Acc weight = p.weight ? stat_ptr<Acc>(p.weight)[c] : Acc(1);
  BackwardCoefficients<Acc> k{Acc(0), weight * invstd, Acc(0), Acc(0)};
  if constexpr (kTraining) {
    k.mean = stat_ptr<Acc>(p.mean)[c];
    k.x_coef = -k.scale * invstd * (stat_ptr<Acc>(p.sum_dy_xhat)[c] * inv_count);
    k.constant = -k.scale * (stat_ptr<Acc>(p.sum_dy)[c] * inv_count);
  }
  return k;
}

template <typename T, int kVec>
struct BackwardApplyItem {
  Vector<T, kVec> grad_output, output, input;
};

template <typename T, int kVec, bool kTraining, bool kActivation>
DLK_HOST_DEVICE BackwardApplyItem<T, kVec> load_backward_apply_item(const BatchNormBwdApplyParams& p, int64_t offset) {
  BackwardApplyItem<T, kVec> item{};
  item.grad_output = load_vector<T, kVec>(static_cast<const T*>(p.grad_output), offset);
  if constexpr (kActivation) item.output = load_vector<T, kVec>(static_cast<const T*>(p.output), offset);
  if constexpr (kTraining) item.input = load_vector<T, kVec>(static_cast<const T*>(p.input), offset);
  return item;
}

template <typename T, int kVec, bool kTraining, bool kActivation, bool kGradResidual>
DLK_HOST_DEVICE void backward_apply_item(const BatchNormBwdApplyParams& p, int64_t offset,
                                         const BackwardApplyItem<T, kVec>& item,
                                         const BackwardCoefficients<AccumulateType<T>> (&k)[kVec]) {
  using Acc = AccumulateType<T>;
  Vector<T, kVec> grad_input, grad_residual;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) {
    const Acc g = activation_grad<Acc, kActivation>(to_accumulate(item.grad_output.val[j]), to_accumulate(item.output.val[j]),
                                              Acc(p.negative_slope));
    Acc gi = g * k[j].scale;
    if constexpr (kTraining) gi += (to_accumulate(item.input.val[j]) - k[j].mean) * k[j].x_coef + k[j].constant;
    grad_input.val[j] = from_accumulate<T>(gi);
    if constexpr (kGradResidual) grad_residual.val[j] = from_accumulate<T>(g);
  }
  store_vector(static_cast<T*>(p.grad_input), offset, grad_input);
  if constexpr (kGradResidual) store_vector(static_cast<T*>(p.grad_residual), offset, grad_residual);
}

template <typename Acc>
DLK_HOST_DEVICE Acc inverse_count(const BatchNormParams& p) {
  return Acc(1) / Acc(p.batch * p.spatial);
}

template <typename T, int kVec, bool kTraining, bool kActivation, bool kGradResidual>
DLK_HOST_DEVICE void backward_apply_channels_last(const BatchNormBwdApplyParams& p, int64_t column, int64_t first_row,
                                                  int64_t rows, int64_t row_step) {
  using Acc = AccumulateType<T>;
  if (column * kVec >= p.channels) return;
  const Acc inv_count = inverse_count<Acc>(p);
  BackwardCoefficients<Acc> k[kVec];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) k[j] = backward_coefficients<Acc, kTraining>(p, column * kVec + j, inv_count);
  const int64_t row_stride = p.channels;
  strided_for(
      first_row, rows, row_step,
      [&](int64_t r) {
        return load_backward_apply_item<T, kVec, kTraining, kActivation>(p, r * row_stride + column * kVec);
      },
      [&](int64_t r, const BackwardApplyItem<T, kVec>& item) {
        backward_apply_item<T, kVec, kTraining, kActivation, kGradResidual>(p, r * row_stride + column * kVec, item, k);
      });
}

template <typename T, int kVec, bool kTraining, bool kActivation, bool kGradResidual, typename IndexT>
DLK_HOST_DEVICE void backward_apply_nchw_vector(const BatchNormBwdApplyParams& p, IndexT i,
                                                const BackwardApplyItem<T, kVec>& item,
                                                const PlaneSplitter<IndexT>& split,
                                                AccumulateType<T> inv_count) {
  using Acc = AccumulateType<T>;
  BackwardCoefficients<Acc> k[kVec];
  nchw_coefficients<kVec>(
      split, i * IndexT(kVec), [&](int64_t c) { return backward_coefficients<Acc, kTraining>(p, c, inv_count); }, k);
  backward_apply_item<T, kVec, kTraining, kActivation, kGradResidual>(p, static_cast<int64_t>(i) * kVec, item, k);
}

template <typename T, int kVec, bool kTraining, bool kActivation, bool kGradResidual, typename IndexT>
DLK_HOST_DEVICE void backward_apply_nchw(const BatchNormBwdApplyParams& p, IndexT thread, IndexT threads,
                                         IndexT vectors, IndexT numel, const PlaneSplitter<IndexT>& split) {
  using Acc = AccumulateType<T>;
  const Acc inv_count = inverse_count<Acc>(p);
  strided_for(
      thread, vectors, threads,
      [&](IndexT i) { return load_backward_apply_item<T, kVec, kTraining, kActivation>(p, static_cast<int64_t>(i) * kVec); },
      [&](IndexT i, const BackwardApplyItem<T, kVec>& item) {
        backward_apply_nchw_vector<T, kVec, kTraining, kActivation, kGradResidual, IndexT>(p, i, item, split, inv_count);
      });
  if (kVec > 1 && thread < numel - vectors * IndexT(kVec)) {
    const IndexT e = vectors * IndexT(kVec) + thread;
    backward_apply_nchw_vector<T, 1, kTraining, kActivation, kGradResidual, IndexT>(
        p, e, load_backward_apply_item<T, 1, kTraining, kActivation>(p, static_cast<int64_t>(e)), split, inv_count);
  }
}
// ---------------------------------------------------------------------------------------------
// Elementwise kernels. channels_last: block (columns x rows), grid (column blocks, row blocks), each
// thread walks down its rows. NCHW: a 1-D grid-stride walk over vectors.

template <typename T, int kVec, bool kResidual, bool kActivation>
__global__ void __launch_bounds__(kBlockThreads) apply_channels_last_kernel(const BatchNormApplyParams p) {
  apply_channels_last<T, kVec, kResidual, kActivation>(p, static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                                                 static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y,
                                                 p.batch * p.spatial, static_cast<int64_t>(gridDim.y) * blockDim.y);
}

template <typename T, int kVec, bool kResidual, bool kActivation, typename IndexT>
__global__ void __launch_bounds__(kBlockThreads)
    apply_nchw_kernel(const BatchNormApplyParams p, const IndexT vectors, const IndexT numel,
                      const PlaneSplitter<IndexT> split) {
  apply_nchw<T, kVec, kResidual, kActivation, IndexT>(p, static_cast<IndexT>(blockIdx.x) * kBlockThreads + threadIdx.x,
                                                static_cast<IndexT>(gridDim.x) * kBlockThreads, vectors, numel, split);
}

template <typename T, int kVec, bool kTraining, bool kActivation, bool kGradResidual>
__global__ void __launch_bounds__(kBlockThreads) backward_apply_channels_last_kernel(const BatchNormBwdApplyParams p) {
  backward_apply_channels_last<T, kVec, kTraining, kActivation, kGradResidual>(
      p, static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
      static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y, p.batch * p.spatial,
      static_cast<int64_t>(gridDim.y) * blockDim.y);
}

template <typename T, int kVec, bool kTraining, bool kActivation, bool kGradResidual, typename IndexT>
__global__ void __launch_bounds__(kBlockThreads)
    backward_apply_nchw_kernel(const BatchNormBwdApplyParams p, const IndexT vectors, const IndexT numel,
                               const PlaneSplitter<IndexT> split) {
  backward_apply_nchw<T, kVec, kTraining, kActivation, kGradResidual, IndexT>(
      p, static_cast<IndexT>(blockIdx.x) * kBlockThreads + threadIdx.x, static_cast<IndexT>(gridDim.x) * kBlockThreads,
      vectors, numel, split);
}

// ---------------------------------------------------------------------------------------------
// Host side: launch plans and one dispatch per launch. Each dispatch_* hands its launch lambda
// everything the kernels are templated on plus the plan, so that a host harness can drive the
// per-thread code through exactly the launchers' choices.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool geometry_is_valid(const BatchNormParams& p) { return p.batch >= 0 && p.channels >= 0 && p.spatial >= 0; }

bool known_dtype(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32 ||
         dtype == DType::kFloat64;
}

// How many blocks of `kernel` (kBlockThreads threads) are resident on the current device at once.
// The grids below are one such wave looping over their work: a fixed guess of blocks per SM would
// leave a partial second wave whenever register use allows fewer (ptxas gives these kernels 40 to
// 126 registers). Both queries are cached (launch.cuh): small BatchNorm shapes are launch-bound.
// Without an answer from the device it assumes `fallback_per_sm`; the launch reports the error.
struct Residency {
  int64_t sm_count = 1, blocks_per_sm = 1;
};

Residency residency(const void* kernel, int fallback_per_sm) {
  const int per_sm = resident_blocks_per_sm(kernel, kBlockThreads, 0);
  return Residency{sm_count(), per_sm > 0 ? per_sm : fallback_per_sm};
}

// Elementwise kernels: a full wave.
int64_t elementwise_blocks(const void* kernel) {
  const Residency r = residency(kernel, kElementwiseBlocksPerSM);
  return r.sm_count * r.blocks_per_sm;
}

// Reductions: at most kReduceBlocksPerSM per SM, fewer if fewer fit.
int64_t reduce_blocks(const void* kernel) {
  const Residency r = residency(kernel, kReduceBlocksPerSM);
  return r.sm_count * std::min<int64_t>(r.blocks_per_sm, kReduceBlocksPerSM);
}

template <typename Kernel>
const void* kernel_address(Kernel* kernel) {
  return reinterpret_cast<const void*>(kernel);
}

// channels_last blocks: `columns` channel vectors side by side (a power of two up to a warp, so that
// a warp covers whole rows when C is small) times kBlockThreads / columns rows.
struct ColumnTiling {
  int block_x = 1, block_y = kBlockThreads;
  int64_t grid_x = 0;
};

ColumnTiling column_tiling(int64_t columns) {
  ColumnTiling t;
  while (t.block_x < columns && t.block_x < kWarpSize) t.block_x *= 2;
  t.block_y = kBlockThreads / t.block_x;
  t.grid_x = ceil_div(columns, t.block_x);
  return t;
}

// The widest vector (kMaxVec<T> or 1: other widths are not instantiated) whose accesses stay
// aligned. Reductions and channels_last need `extent` (C, or S for NCHW) to be a multiple of it;
// NCHW elementwise kernels only need extent >= width, since they handle vectors across planes.
template <typename T>
int vector_width(int64_t extent, bool must_divide, std::initializer_list<const void*> tensors) {
  constexpr int kWide = kMaxVec<T>;
  const bool fits = must_divide ? extent % kWide == 0 : extent >= kWide;
  return fits && all_aligned(tensors, kWide * sizeof(T)) ? kWide : 1;
}

template <typename T>
int reduce_vector_width(const BatchNormParams& p, std::initializer_list<const void*> tensors) {
  return vector_width<T>(p.channels_last ? p.channels : p.spatial, true, tensors);
}

// NCHW reductions index a channel's vectors (plus a block's worth of overshoot) with IndexT.
bool reduce_fits_32bit(const BatchNormParams& p, int vec) {
  return p.batch * p.spatial / vec + kBlockThreads <= INT32_MAX;
}

struct ReducePlan {
  ReduceGrid grid;
  dim3 grid_dim, block_dim;
  size_t workspace_bytes(size_t acc_bytes, int64_t channels) const {
    return grid.splits > 1 ? size_t(2) * size_t(channels) * size_t(grid.splits) * acc_bytes : 0;
  }
};

// Splits so that (blocks along x) * splits is about `target_blocks` (one wave), but no slice gives a
// thread fewer than kMinItemsPerThread loads.
ReducePlan plan_reduction(const BatchNormParams& p, int vec, int64_t target_blocks) {
  ReducePlan plan;
  const int64_t per_channel = p.batch * p.spatial;
  int64_t blocks_x, threads_per_slice;
  if (p.channels_last) {
    const ColumnTiling t = column_tiling(p.channels / vec);
    blocks_x = t.grid_x;
    threads_per_slice = t.block_y;
    plan.block_dim = dim3(t.block_x, t.block_y);
    plan.grid.items = per_channel;
    plan.grid.elements_per_item = 1;
  } else {
    blocks_x = p.channels;
    threads_per_slice = kBlockThreads;
    plan.block_dim = dim3(kBlockThreads);
    plan.grid.items = per_channel / vec;
    plan.grid.elements_per_item = vec;
  }
  if (plan.grid.items > 0 && blocks_x > 0) {
    const int64_t wanted = std::max<int64_t>(1, target_blocks / blocks_x);
    const int64_t useful = ceil_div(plan.grid.items, threads_per_slice * kMinItemsPerThread);
    const int64_t splits = std::max<int64_t>(1, std::min<int64_t>({wanted, useful, 65535}));
    plan.grid.items_per_split = ceil_div(plan.grid.items, splits);
    plan.grid.splits = ceil_div(plan.grid.items, plan.grid.items_per_split);  // no empty slices
  }
  plan.grid_dim = dim3(static_cast<unsigned>(blocks_x), static_cast<unsigned>(std::max<int64_t>(1, plan.grid.splits)));
  return plan;
}

// One warp per channel.
unsigned combine_blocks(int64_t channels) { return static_cast<unsigned>(ceil_div(channels, kWarpsPerBlock)); }

struct ElementwisePlan {
  int64_t vectors = 0, numel = 0;
  dim3 grid_dim, block_dim;
};

template <typename T>
int elementwise_vector_width(const BatchNormParams& p, std::initializer_list<const void*> tensors) {
  return vector_width<T>(p.channels_last ? p.channels : p.spatial, p.channels_last, tensors);
}

// NCHW elementwise kernels index elements (plus a block's worth of overshoot) with IndexT.
bool elementwise_fits_32bit(const BatchNormParams& p) {
  return p.batch * p.channels * p.spatial + kBlockThreads <= INT32_MAX;
}

// One wave of resident blocks: every column block (channels_last) and as many row blocks, or
// grid-stride blocks (NCHW), as fit beside them.
ElementwisePlan plan_elementwise(const BatchNormParams& p, int vec, int64_t resident) {
  ElementwisePlan plan;
  plan.numel = p.batch * p.channels * p.spatial;
  plan.vectors = plan.numel / vec;
  if (p.channels_last) {
    const ColumnTiling t = column_tiling(p.channels / vec);
    const int64_t row_blocks = std::min<int64_t>(
        {ceil_div(p.batch * p.spatial, t.block_y), std::max<int64_t>(1, resident / t.grid_x), 65535});
    plan.grid_dim = dim3(static_cast<unsigned>(t.grid_x), static_cast<unsigned>(std::max<int64_t>(1, row_blocks)));
    plan.block_dim = dim3(t.block_x, t.block_y);
  } else {
    const int64_t blocks = std::min<int64_t>(std::max<int64_t>(1, ceil_div(plan.vectors, kBlockThreads)), resident);
    plan.grid_dim = dim3(static_cast<unsigned>(blocks));
    plan.block_dim = dim3(kBlockThreads);
  }
  return plan;
}

template <typename Fn>
Status dispatch_bool(bool value, Fn&& fn) {
  if (value) return fn(std::true_type{});
  return fn(std::false_type{});
}

// fn(std::integral_constant<int, vec>) for vec == kMaxVec<T> or 1.
template <typename T, typename Fn>
Status dispatch_vector_width(int vec, Fn&& fn) {
  if (vec == kMaxVec<T>) return fn(std::integral_constant<int, kMaxVec<T>>{});
  return fn(std::integral_constant<int, 1>{});
}

// fn(vec_c, index_tag). 64-bit indices serve only NCHW tensors too large for 32-bit ones (2^31
// elements or more), and only with scalar accesses: that path exists for correctness, and giving it
// every vector width too would add a third of the file's kernels. channels_last kernels index with
// int64_t throughout and get the (unused) 32-bit tag.
template <typename T, typename Fn>
Status dispatch_width_and_index(int vec, bool channels_last, bool fits_32bit, Fn&& fn) {
  if (channels_last || fits_32bit) {
    return dispatch_vector_width<T>(vec, [&](auto vec_c) { return fn(vec_c, TypeTag<uint32_t>{}); });
  }
  return fn(std::integral_constant<int, 1>{}, TypeTag<uint64_t>{});
}

// fn(type_tag, vec_c, index_tag, plan)
template <typename Fn>
Status dispatch_stats(const BatchNormStatsParams& p, DType dtype, Fn&& fn) {
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const int vec = reduce_vector_width<T>(p, {p.input});
    const bool fits_32bit = reduce_fits_32bit(p, vec);
    return dispatch_width_and_index<T>(vec, p.channels_last, fits_32bit, [&](auto vec_c, auto index_tag) {
      using IndexT = typename decltype(index_tag)::type;
      constexpr int kVec = decltype(vec_c)::value;
      const void* kernel = p.channels_last ? kernel_address(stats_channels_last_kernel<T, kVec>)
                                           : kernel_address(stats_nchw_kernel<T, kVec, IndexT>);
      return fn(type_tag, vec_c, index_tag, plan_reduction(p, kVec, reduce_blocks(kernel)));
    });
  });
}

// fn(type_tag, vec_c, activation_c, index_tag, plan)
template <typename Fn>
Status dispatch_backward_reduce(const BatchNormBwdReduceParams& p, DType dtype, Fn&& fn) {
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const int vec = reduce_vector_width<T>(p, {p.grad_output, p.activation ? p.output : nullptr, p.input});
    const bool fits_32bit = reduce_fits_32bit(p, vec);
    return dispatch_width_and_index<T>(vec, p.channels_last, fits_32bit, [&](auto vec_c, auto index_tag) {
      return dispatch_bool(p.activation, [&](auto activation_c) {
        using IndexT = typename decltype(index_tag)::type;
        constexpr int kVec = decltype(vec_c)::value;
        constexpr bool kActivation = decltype(activation_c)::value;
        const void* kernel = p.channels_last ? kernel_address(backward_reduce_channels_last_kernel<T, kVec, kActivation>)
                                             : kernel_address(backward_reduce_nchw_kernel<T, kVec, kActivation, IndexT>);
        return fn(type_tag, vec_c, activation_c, index_tag, plan_reduction(p, kVec, reduce_blocks(kernel)));
      });
    });
  });
}

// fn(type_tag, vec_c, residual_c, activation_c, index_tag, plan)
template <typename Fn>
Status dispatch_apply(const BatchNormApplyParams& p, DType dtype, Fn&& fn) {
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const int vec = elementwise_vector_width<T>(p, {p.input, p.residual, p.output});
    const bool fits_32bit = elementwise_fits_32bit(p);
    return dispatch_width_and_index<T>(vec, p.channels_last, fits_32bit, [&](auto vec_c, auto index_tag) {
      return dispatch_bool(p.residual != nullptr, [&](auto residual_c) {
        return dispatch_bool(p.activation, [&](auto activation_c) {
          using IndexT = typename decltype(index_tag)::type;
          constexpr int kVec = decltype(vec_c)::value;
          constexpr bool kResidual = decltype(residual_c)::value, kActivation = decltype(activation_c)::value;
          const void* kernel = p.channels_last
                                   ? kernel_address(apply_channels_last_kernel<T, kVec, kResidual, kActivation>)
                                   : kernel_address(apply_nchw_kernel<T, kVec, kResidual, kActivation, IndexT>);
          const ElementwisePlan plan = plan_elementwise(p, kVec, elementwise_blocks(kernel));
          return fn(type_tag, vec_c, residual_c, activation_c, index_tag, plan);
        });
      });
    });
  });
}

// fn(type_tag, vec_c, training_c, activation_c, grad_residual_c, index_tag, plan)
template <typename Fn>
Status dispatch_backward_apply(const BatchNormBwdApplyParams& p, DType dtype, Fn&& fn) {
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const int vec = elementwise_vector_width<T>(
        p, {p.grad_output, p.activation ? p.output : nullptr, p.training ? p.input : nullptr, p.grad_input, p.grad_residual});
    const bool fits_32bit = elementwise_fits_32bit(p);
    return dispatch_width_and_index<T>(vec, p.channels_last, fits_32bit, [&](auto vec_c, auto index_tag) {
      return dispatch_bool(p.training, [&](auto training_c) {
        return dispatch_bool(p.activation, [&](auto activation_c) {
          return dispatch_bool(p.grad_residual != nullptr, [&](auto grad_residual_c) {
            using IndexT = typename decltype(index_tag)::type;
            constexpr int kVec = decltype(vec_c)::value;
            constexpr bool kTraining = decltype(training_c)::value, kActivation = decltype(activation_c)::value;
            constexpr bool kGradResidual = decltype(grad_residual_c)::value;
            const void* kernel =
                p.channels_last
                    ? kernel_address(backward_apply_channels_last_kernel<T, kVec, kTraining, kActivation, kGradResidual>)
                    : kernel_address(backward_apply_nchw_kernel<T, kVec, kTraining, kActivation, kGradResidual, IndexT>);
            const ElementwisePlan plan = plan_elementwise(p, kVec, elementwise_blocks(kernel));
            return fn(type_tag, vec_c, training_c, activation_c, grad_residual_c, index_tag, plan);
          });
        });
      });
    });
  });
}

template <typename IndexT>
PlaneSplitter<IndexT> make_plane_splitter(const BatchNormParams& p) {
  return {Divider<IndexT>(static_cast<IndexT>(p.spatial)), Divider<IndexT>(static_cast<IndexT>(p.channels))};
}

// Argument checks shared by the launchers; kOk means "launch".
Status check_stats_args(const BatchNormStatsParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (!geometry_is_valid(p) || p.mean == nullptr || p.invstd == nullptr ||
      (p.batch * p.spatial > 0 && p.input == nullptr)) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

Status check_backward_reduce_args(const BatchNormBwdReduceParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  const bool has_elements = p.batch * p.spatial > 0;
  if (!geometry_is_valid(p) || p.mean == nullptr || p.invstd == nullptr || p.sum_dy == nullptr ||
      p.sum_dy_xhat == nullptr ||
      (has_elements && (p.grad_output == nullptr || p.input == nullptr || (p.activation && p.output == nullptr)))) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

Status check_apply_args(const BatchNormApplyParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (!geometry_is_valid(p) || p.input == nullptr || p.output == nullptr || p.mean == nullptr ||
      p.invstd == nullptr) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

Status check_backward_apply_args(const BatchNormBwdApplyParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (!geometry_is_valid(p) || p.grad_output == nullptr || p.grad_input == nullptr || p.invstd == nullptr ||
      (p.activation && p.output == nullptr) ||
      (p.training && (p.input == nullptr || p.mean == nullptr || p.sum_dy == nullptr || p.sum_dy_xhat == nullptr))) {
    return Status::kInvalidArgument;
  }
  return Status::kOk;
}

}  // namespace

size_t batch_norm_stats_workspace_bytes(const BatchNormStatsParams& p, DType dtype) {
  size_t bytes = 0;
  if (!known_dtype(dtype) || !geometry_is_valid(p) || p.channels == 0) return bytes;
  dispatch_stats(p, dtype, [&](auto type_tag, auto, auto, const ReducePlan& plan) {
    bytes = plan.workspace_bytes(sizeof(AccumulateType<typename decltype(type_tag)::type>), p.channels);
    return Status::kOk;
  });
  return bytes;
}

size_t batch_norm_backward_reduce_workspace_bytes(const BatchNormBwdReduceParams& p, DType dtype) {
  size_t bytes = 0;
  if (!known_dtype(dtype) || !geometry_is_valid(p) || p.channels == 0) return bytes;
  dispatch_backward_reduce(p, dtype, [&](auto type_tag, auto, auto, auto, const ReducePlan& plan) {
    bytes = plan.workspace_bytes(sizeof(AccumulateType<typename decltype(type_tag)::type>), p.channels);
    return Status::kOk;
  });
  return bytes;
}

Status batch_norm_stats_cuda(const BatchNormStatsParams& p, DType dtype, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  const Status args = check_stats_args(p, dtype);
  if (args != Status::kOk || p.channels == 0) return args;
  return dispatch_stats(p, dtype, [&](auto type_tag, auto vec_c, auto index_tag, const ReducePlan& plan) {
    using T = typename decltype(type_tag)::type;
    using Acc = AccumulateType<T>;
    using IndexT = typename decltype(index_tag)::type;
    constexpr int kVec = decltype(vec_c)::value;
    const size_t needed = plan.workspace_bytes(sizeof(Acc), p.channels);
    if (needed > 0 && (workspace == nullptr || workspace_bytes < needed)) return Status::kInvalidArgument;
    Acc* partials = static_cast<Acc*>(workspace);
    const ReduceGrid& g = plan.grid;
    if (g.splits > 0) {
      if (p.channels_last) {
        stats_channels_last_kernel<T, kVec><<<plan.grid_dim, plan.block_dim, 0, stream>>>(p, g, partials);
      } else {
        const Divider<IndexT> spatial_vectors(static_cast<IndexT>(p.spatial / kVec));
        stats_nchw_kernel<T, kVec, IndexT><<<plan.grid_dim, plan.block_dim, 0, stream>>>(p, g, spatial_vectors, partials);
      }
      const Status status = check_launch();
      if (status != Status::kOk || g.splits == 1) return status;
    }
    stats_combine_kernel<Acc><<<combine_blocks(p.channels), kBlockThreads, 0, stream>>>(p, g, partials);
    return check_launch();
  });
}

Status batch_norm_backward_reduce_cuda(const BatchNormBwdReduceParams& p, DType dtype, void* workspace,
                                       size_t workspace_bytes, cudaStream_t stream) {
  const Status args = check_backward_reduce_args(p, dtype);
  if (args != Status::kOk || p.channels == 0) return args;
  return dispatch_backward_reduce(p, dtype, [&](auto type_tag, auto vec_c, auto activation_c, auto index_tag,
                                                const ReducePlan& plan) {
    using T = typename decltype(type_tag)::type;
    using Acc = AccumulateType<T>;
    using IndexT = typename decltype(index_tag)::type;
    constexpr int kVec = decltype(vec_c)::value;
    constexpr bool kActivation = decltype(activation_c)::value;
    const size_t needed = plan.workspace_bytes(sizeof(Acc), p.channels);
    if (needed > 0 && (workspace == nullptr || workspace_bytes < needed)) return Status::kInvalidArgument;
    Acc* partials = static_cast<Acc*>(workspace);
    const ReduceGrid& g = plan.grid;
    if (g.splits > 0) {
      if (p.channels_last) {
        backward_reduce_channels_last_kernel<T, kVec, kActivation>
            <<<plan.grid_dim, plan.block_dim, 0, stream>>>(p, g, partials);
      } else {
        const Divider<IndexT> spatial_vectors(static_cast<IndexT>(p.spatial / kVec));
        backward_reduce_nchw_kernel<T, kVec, kActivation, IndexT>
            <<<plan.grid_dim, plan.block_dim, 0, stream>>>(p, g, spatial_vectors, partials);
      }
      const Status status = check_launch();
      if (status != Status::kOk || g.splits == 1) return status;
    }
    backward_reduce_combine_kernel<Acc><<<combine_blocks(p.channels), kBlockThreads, 0, stream>>>(p, g, partials);
    return check_launch();
  });
}

Status batch_norm_apply_cuda(const BatchNormApplyParams& p, DType dtype, cudaStream_t stream) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (geometry_is_valid(p) && p.batch * p.channels * p.spatial == 0) return Status::kOk;
  const Status args = check_apply_args(p, dtype);
  if (args != Status::kOk) return args;
  return dispatch_apply(p, dtype, [&](auto type_tag, auto vec_c, auto residual_c, auto activation_c, auto index_tag,
                                      const ElementwisePlan& plan) {
    using T = typename decltype(type_tag)::type;
    using IndexT = typename decltype(index_tag)::type;
    constexpr int kVec = decltype(vec_c)::value;
    constexpr bool kResidual = decltype(residual_c)::value, kActivation = decltype(activation_c)::value;
    if (p.channels_last) {
      apply_channels_last_kernel<T, kVec, kResidual, kActivation><<<plan.grid_dim, plan.block_dim, 0, stream>>>(p);
    } else {
      apply_nchw_kernel<T, kVec, kResidual, kActivation, IndexT><<<plan.grid_dim, plan.block_dim, 0, stream>>>(
          p, static_cast<IndexT>(plan.vectors), static_cast<IndexT>(plan.numel), make_plane_splitter<IndexT>(p));
    }
    return check_launch();
  });
}

Status batch_norm_backward_apply_cuda(const BatchNormBwdApplyParams& p, DType dtype, cudaStream_t stream) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (geometry_is_valid(p) && p.batch * p.channels * p.spatial == 0) return Status::kOk;
  const Status args = check_backward_apply_args(p, dtype);
  if (args != Status::kOk) return args;
  return dispatch_backward_apply(p, dtype, [&](auto type_tag, auto vec_c, auto training_c, auto activation_c,
                                               auto grad_residual_c, auto index_tag, const ElementwisePlan& plan) {
    using T = typename decltype(type_tag)::type;
    using IndexT = typename decltype(index_tag)::type;
    constexpr int kVec = decltype(vec_c)::value;
    constexpr bool kTraining = decltype(training_c)::value, kActivation = decltype(activation_c)::value;
    constexpr bool kGradResidual = decltype(grad_residual_c)::value;
    if (p.channels_last) {
      backward_apply_channels_last_kernel<T, kVec, kTraining, kActivation, kGradResidual>
          <<<plan.grid_dim, plan.block_dim, 0, stream>>>(p);
    } else {
      backward_apply_nchw_kernel<T, kVec, kTraining, kActivation, kGradResidual, IndexT>
          <<<plan.grid_dim, plan.block_dim, 0, stream>>>(p, static_cast<IndexT>(plan.vectors),
                                                         static_cast<IndexT>(plan.numel),
                                                         make_plane_splitter<IndexT>(p));
    }
    return check_launch();
  });
}

}  // namespace dlk
