// Launch planners: which index width a CUDA kernel may use and how a launch is cut to fit the grid
// limits (gridDim.x < 2^31, gridDim.y and gridDim.z <= 65,535). Plain host C++ with no CUDA
// include, so that the launchers in csrc/cuda call them and the CPU library exports them
// (csrc/capi/launch_plan_cpu.cpp, dlk_plan_*) for tests/test_launch_plans.py, which runs them on
// shapes far too large to allocate: above 2^31 elements, above 65,535 sequences or batch tiles.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dlk/common.h"
#include "dlk/pool2d.h"

namespace dlk {
namespace plan {

constexpr int64_t kMaxInt32 = INT32_MAX;
constexpr int64_t kMaxUint32 = UINT32_MAX;
constexpr int64_t kMaxGridX = INT32_MAX;
constexpr int64_t kMaxGridYZ = 65535;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether every index a kernel forms, up to `largest` plus the `overshoot` a thread may reach past it
// (a grid-stride step, a tile or a few taps past an edge), is exact in a signed 32-bit int.
inline bool fits_int32(int64_t largest, int64_t overshoot = 0) {
  return largest >= 0 && overshoot >= 0 && largest <= kMaxInt32 - overshoot;
}

// `count` items cut into `launches` contiguous chunks: chunk i is [first(i), first(i) + size(i)).
// `launches` is 0 when there is nothing to do, and also when the cut is impossible (max_per_chunk < 1),
// so callers check valid().
struct Chunks {
  int64_t count = 0, per_chunk = 0, launches = 0;
  bool valid() const { return count == 0 || launches > 0; }
  int64_t first(int64_t i) const { return i * per_chunk; }
  int64_t size(int64_t i) const { return std::min(per_chunk, count - first(i)); }
};

// As few chunks as possible, each of at most `max_per_chunk` items (e.g. sequences per grid.z).
inline Chunks chunks_of_at_most(int64_t count, int64_t max_per_chunk) {
  Chunks c;
  c.count = std::max<int64_t>(count, 0);
  if (c.count == 0 || max_per_chunk < 1) return c;
  c.per_chunk = std::min(c.count, max_per_chunk);
  c.launches = ceil_div(c.count, c.per_chunk);
  return c;
}

// About `wanted` equal chunks (at least one item each, so none is empty; fewer chunks when there are
// fewer items), e.g. the slices of a split reduction.
inline Chunks chunks_of_about(int64_t count, int64_t wanted) {
  Chunks c;
  c.count = std::max<int64_t>(count, 0);
  if (c.count == 0 || wanted < 1) return c;
  c.per_chunk = ceil_div(c.count, std::min(wanted, c.count));
  c.launches = ceil_div(c.count, c.per_chunk);
  return c;
}

// A 1-D grid-stride loop `for (i = block * threads + thread; i < work; i += blocks * threads)`.
struct GridStride {
  int64_t work = 0, blocks = 0;
  int threads = 0;
  int64_t stride() const { return blocks * threads; }
};

// At most `max_blocks` blocks (a few waves of resident blocks: enough to fill the GPU, few enough
// that a block loops), and no more than the work needs.
inline GridStride grid_stride(int64_t work, int threads, int64_t max_blocks) {
  GridStride g;
  g.work = std::max<int64_t>(work, 0);
  g.threads = threads;
  if (g.work > 0 && threads > 0) g.blocks = std::max<int64_t>(1, std::min({ceil_div(g.work, threads), max_blocks,
                                                                           kMaxGridX}));
  return g;
}

// Every i < work is visited exactly once when the unsigned `index_bits`-bit counter never wraps:
// the last index a thread tests, at most (work - 1) + stride, must be representable.
inline bool grid_stride_is_exact(const GridStride& g, int index_bits) {
  if (g.work == 0) return true;
  if (g.blocks < 1 || g.threads < 1) return false;
  const int64_t limit = index_bits == 32 ? kMaxUint32 : INT64_MAX;
  return g.work - 1 <= limit - g.stride();
}

// ---------------------------------------------------------------------------------------------
// pool2d (csrc/cuda/pool2d.cu)

// Window taps of one row that a forward thread loads back to back.
constexpr int kPool2dTapsInFlight = 4;

// Whether the pooling kernels may index with 32 bits (and use the 32-bit fast dividers): element
// offsets are bounded by the element counts; window coordinates run a few taps past an input edge
// (a chunk of taps, a stride or dilation step); and the adaptive window bounds form o * in + in and
// i * out + out (a product of an input and an output extent), all of which must not wrap.
inline bool pool2d_fits_int32(const Pool2dParams& p) {
  const int64_t in_numel = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t out_numel = p.batch * p.channels * p.out_h * p.out_w;
  const int64_t largest_step = std::max({p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                                         p.dilation_h, p.dilation_w});
  const int64_t largest_extent = std::max({p.in_h, p.in_w, p.out_h, p.out_w});
  if (!fits_int32(std::max(in_numel, out_numel)) ||
      !fits_int32(largest_extent, (kPool2dTapsInFlight + 1) * int64_t(largest_step))) {
    return false;
  }
  if (p.mode != PoolMode::kAdaptiveAvg) return true;
  const auto products_fit = [](int64_t in, int64_t out) {
    return in == 0 || out == 0 || (out <= kMaxInt32 / in && fits_int32(in * out, std::max(in, out)));
  };
  return products_fit(p.in_h, p.out_h) && products_fit(p.in_w, p.out_w);
}

// Global average pooling (adaptive, 1 x 1 output) reduces each plane with many threads instead of
// one thread per output (pool2d.cu, global_average_kernel).
inline bool pool2d_is_global_average(const Pool2dParams& p) {
  return p.mode == PoolMode::kAdaptiveAvg && p.out_h == 1 && p.out_w == 1;
}

struct Pool2dPlan {
  int index_bits = 64;
  GridStride grid;  // over outputs (forward) or grad_input elements (backward), `vec` channels per item
};

// `vec`: channels per thread (1 for NCHW); `max_blocks`: the launcher's few waves of resident blocks.
inline Pool2dPlan plan_pool2d(const Pool2dParams& p, bool backward, int vec, int threads, int64_t max_blocks) {
  Pool2dPlan plan;
  plan.index_bits = pool2d_fits_int32(p) ? 32 : 64;
  const int64_t numel = backward ? p.batch * p.channels * p.in_h * p.in_w : p.batch * p.channels * p.out_h * p.out_w;
  plan.grid = grid_stride(numel / std::max(vec, 1), threads, max_blocks);
  return plan;
}

// Global average pooling, NCHW: one warp per plane (N * C planes), `warps_per_block` planes per block
// in a grid-stride loop over planes. channels_last: blocks of `columns` channel vectors, grid.y over
// images (grid-stride past 65,535).
struct GlobalAveragePlan {
  GridStride planes;            // NCHW: "work" counts planes, "threads" warps per block
  int64_t channel_blocks = 0;   // channels_last: grid.x
  int64_t image_blocks = 0;     // channels_last: grid.y, images walked grid-stride
};

inline GlobalAveragePlan plan_global_average(const Pool2dParams& p, int vec, int warps_per_block, int columns,
                                             int64_t max_blocks) {
  GlobalAveragePlan plan;
  if (p.channels_last) {
    plan.channel_blocks = ceil_div(p.channels / std::max(vec, 1), columns);
    plan.image_blocks = std::min<int64_t>(std::max<int64_t>(p.batch, 0), kMaxGridYZ);
  } else {
    plan.planes = grid_stride(p.batch * p.channels, warps_per_block, max_blocks);
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------
// attention (csrc/cuda/attention_bwd_kernel.cuh; the forward's launch_over_batches cuts the same way)

// Grid (row blocks, heads, sequences): sequences beyond 65,535 go to further launches, each told
// its first sequence (blockIdx.z + batch_offset).
struct AttentionGrid {
  int64_t row_blocks = 0, heads = 0;
  Chunks sequences;
  bool valid() const { return heads <= kMaxGridYZ && row_blocks <= kMaxGridX && sequences.valid(); }
};

inline AttentionGrid plan_attention_grid(int64_t rows, int64_t block_rows, int64_t heads, int64_t batch) {
  AttentionGrid g;
  g.row_blocks = ceil_div(std::max<int64_t>(rows, 0), block_rows);
  g.heads = heads;
  g.sequences = chunks_of_at_most(batch, kMaxGridYZ);
  return g;
}

// ---------------------------------------------------------------------------------------------
// rnn (csrc/cuda/rnn.cu)

// Grid (hidden tiles, batch tiles): batch tiles beyond 65,535 go to further launches of the
// per-step kernels (blockIdx.y + batch_tile_offset). The persistent kernels need one launch.
struct RnnGrid {
  int64_t hidden_tiles = 0;
  Chunks batch_tiles;
  bool valid() const { return hidden_tiles <= kMaxGridX && batch_tiles.valid(); }
  bool single_launch() const { return batch_tiles.launches <= 1; }
};

inline RnnGrid plan_rnn_grid(int64_t hidden, int64_t hidden_tile, int64_t batch, int64_t batch_tile) {
  RnnGrid g;
  g.hidden_tiles = ceil_div(std::max<int64_t>(hidden, 0), hidden_tile);
  g.batch_tiles = chunks_of_at_most(ceil_div(std::max<int64_t>(batch, 0), batch_tile), kMaxGridYZ);
  return g;
}

}  // namespace plan
}  // namespace dlk
