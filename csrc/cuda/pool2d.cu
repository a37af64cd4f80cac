// CUDA kernels for 2-D pooling. Pooling is memory-bound: every kernel here is one pass over its
// output (forward) or its grad_input (backward), one thread per element or per short channel
// vector, with the window math taken from dlk/pool2d.h so that every backend agrees with ATen.
#include "pool2d.cuh"

#include "common.cuh"
#include "dlk/launch_plan.h"
#include "pool2d_index.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace dlk {
namespace {

constexpr int kBlockThreads = 256;
// A grid-stride loop over a few waves of resident blocks keeps every SM busy without launching
// millions of blocks for large tensors; 2048 / kBlockThreads blocks fit on one SM.
constexpr int kWavesPerLaunch = 4;
constexpr int kBlocksPerSM = 2048 / kBlockThreads;
// Window taps of one row that a forward thread loads back to back (see pool2d_forward_element).
constexpr int kTapsInFlight = plan::kPool2dTapsInFlight;
// Global average pooling: NCHW reduces one plane per warp; channels_last one image per block of
// kGapColumns channel vectors x kGapRows pixel lanes.
constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
constexpr int kGapColumns = 32;
constexpr int kGapRows = kBlockThreads / kGapColumns;

template <typename Acc> DLK_HOST_DEVICE bool is_nan(Acc v) { return v != v; }

// Fixed windows (max, avg); adaptive windows use adaptive_span below, whose divisions are precomputed.
template <PoolMode kMode>
DLK_HOST_DEVICE PoolSpan pool_span(int64_t o, int64_t in, int kernel, int stride, int pad, int dilation,
                                   bool count_include_pad) {
  static_assert(kMode != PoolMode::kAdaptiveAvg, "adaptive windows: adaptive_span");
  if constexpr (kMode == PoolMode::kMax) {
    // Dilation 1 is the common case; with a literal 1 the compiler folds max_pool_span's
    // `while (begin < 0) begin += dilation` into a clamp instead of a division and a loop.
    if (dilation == 1) return max_pool_span(o, in, kernel, stride, pad, 1);
    return max_pool_span(o, in, kernel, stride, pad, dilation);
  } else {
    return avg_pool_span(o, in, kernel, stride, pad, count_include_pad);
  }
}

// Splits a flat index in memory order into (plane, h, w) for NCHW, where plane = n * C + c, or
// into (n, h, w, channel vector) for channels_last, where the channel vector holds kVec channels.
template <typename IndexT>
struct FlatIndexSplitter {
  Divider<IndexT> channel_vectors, width, height;
};

template <bool kChannelsLast, typename IndexT>
DLK_HOST_DEVICE void split_flat_index(const FlatIndexSplitter<IndexT>& splitter, IndexT i, IndexT& outer,
                                      IndexT& h, IndexT& w, IndexT& channel_vector) {
  IndexT rest = i;
  channel_vector = 0;
  if constexpr (kChannelsLast) splitter.channel_vectors.divmod(rest, rest, channel_vector);
  splitter.width.divmod(rest, rest, w);
  splitter.height.divmod(rest, outer, h);
}

// Forward for one output element (NCHW, kVec == 1) or for kVec consecutive channels of one output
// pixel (channels_last); `i` counts in the output's memory order. IndexT is uint32_t when every
// offset fits in 31 bits, uint64_t otherwise.
template <typename T, PoolMode kMode, bool kChannelsLast, int kVec, typename IndexT>
DLK_HOST_DEVICE void pool2d_forward_element(const Pool2dFwdParams& p, IndexT i,
                                            const FlatIndexSplitter<IndexT>& splitter, const PoolAxis<IndexT>& axis_h,
                                            const PoolAxis<IndexT>& axis_w) {
  static_assert(kChannelsLast || kVec == 1, "NCHW processes one element per thread");
  using Acc = AccumulateType<T>;
  using Signed = std::make_signed_t<IndexT>;
  using Pack = Vector<T, kVec>;
  const T* __restrict__ input = static_cast<const T*>(p.input);
  T* __restrict__ output = static_cast<T*>(p.output);
  const IndexT in_w = static_cast<IndexT>(p.in_w);
  const IndexT in_plane = static_cast<IndexT>(p.in_h) * in_w;
  const IndexT pixel_stride = kChannelsLast ? static_cast<IndexT>(p.channels) : IndexT(1);

  IndexT outer, oh, ow, channel_vector;
  split_flat_index<kChannelsLast>(splitter, i, outer, oh, ow, channel_vector);
  // Offset of tap (0, 0) of this thread's first channel.
  const IndexT base = kChannelsLast ? outer * in_plane * pixel_stride + channel_vector * kVec : outer * in_plane;

  PoolSpan span_h, span_w;
  if constexpr (kMode == PoolMode::kAdaptiveAvg) {
    span_h = adaptive_span(oh, axis_h);
    span_w = adaptive_span(ow, axis_w);
  } else {
    span_h = pool_span<kMode>(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, p.count_include_pad);
    span_w = pool_span<kMode>(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, p.count_include_pad);
  }
  // Spans begin inside the input (>= 0) but may be empty (end <= begin), hence signed loop bounds.
  const Signed h_begin = static_cast<Signed>(span_h.begin), h_end = static_cast<Signed>(span_h.end);
  const Signed w_begin = static_cast<Signed>(span_w.begin), w_end = static_cast<Signed>(span_w.end);
  const Signed h_step = kMode == PoolMode::kMax ? static_cast<Signed>(span_h.step) : Signed(1);
  const Signed w_step = kMode == PoolMode::kMax ? static_cast<Signed>(span_w.step) : Signed(1);

  Acc acc[kVec];
  IndexT argmax[kVec];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) {
    // ATen's max starts from -inf with the index of the first in-bounds tap, so an all -inf window
    // still reports a valid index.
    acc[j] = kMode == PoolMode::kMax ? static_cast<Acc>(-INFINITY) : Acc(0);
    argmax[j] = static_cast<IndexT>(h_begin) * in_w + static_cast<IndexT>(w_begin);
  }
  for (Signed h = h_begin; h < h_end; h += h_step) {
    const IndexT row = static_cast<IndexT>(h) * in_w;
    // All loads of a chunk are issued before any is used: one dependent load-then-reduce chain per
    // thread would leave too few bytes in flight to saturate DRAM, above all with NCHW's 2-byte
    // loads. Reducing the chunk in tap order keeps ATen's order for ties, NaN and sums.
    for (Signed w_chunk = w_begin; w_chunk < w_end; w_chunk += kTapsInFlight * w_step) {
      Pack values[kTapsInFlight];
      DLK_UNROLL
      for (int t = 0; t < kTapsInFlight; ++t) {
        const Signed w = w_chunk + t * w_step;
        const IndexT tap = row + static_cast<IndexT>(w);
        if (w < w_end) values[t] = *reinterpret_cast<const Pack*>(input + base + tap * pixel_stride);
      }
      DLK_UNROLL
      for (int t = 0; t < kTapsInFlight; ++t) {
        const Signed w = w_chunk + t * w_step;
        if (w >= w_end) break;
        DLK_UNROLL
        for (int j = 0; j < kVec; ++j) {
          const Acc v = to_accumulate(values[t].val[j]);
          if constexpr (kMode == PoolMode::kMax) {
            // `> || nan`: ties keep the first maximum, and NaN wins (the last NaN's index).
            if (v > acc[j] || is_nan(v)) {
              acc[j] = v;
              argmax[j] = row + static_cast<IndexT>(w);
            }
          } else {
            acc[j] += v;
          }
        }
      }
    }
  }

  Pack result;
  if constexpr (kMode == PoolMode::kMax) {
    DLK_UNROLL
    for (int j = 0; j < kVec; ++j) result.val[j] = from_accumulate<T>(acc[j]);
    // No indices when no gradient is needed: they are 8 bytes per output, four times an fp16 output.
    if (p.indices != nullptr) {
      int64_t* indices = p.indices + i * kVec;
      if constexpr (kVec == 1) {
        indices[0] = static_cast<int64_t>(argmax[0]);
      } else {
        DLK_UNROLL
        for (int j = 0; j < kVec; j += 2) {
          const Vector<int64_t, 2> pair{{static_cast<int64_t>(argmax[j]), static_cast<int64_t>(argmax[j + 1])}};
          *reinterpret_cast<Vector<int64_t, 2>*>(indices + j) = pair;
        }
      }
    }
  } else {
    // A window without real elements gets 0, as in ATen, rather than 0 / 0 when padding is not
    // counted. ATen's output-size rule (ceil_mode included) never produces one; we do not rely on it.
    const bool empty = h_begin >= h_end || w_begin >= w_end;
    const int64_t divisor = kMode == PoolMode::kAvg && p.divisor_override != 0 ? int64_t(p.divisor_override)
                                                                               : span_h.count * span_w.count;
    DLK_UNROLL
    for (int j = 0; j < kVec; ++j) result.val[j] = from_accumulate<T>(empty ? Acc(0) : acc[j] / Acc(divisor));
  }
  *reinterpret_cast<Pack*>(output + i * kVec) = result;
}

// Backward for one grad_input element (or kVec channels of one input pixel), gather style: it sums
// the grad_output entries of every window that contains it. Each element is written exactly once
// with a fixed summation order, so the result is deterministic and needs neither a zero-fill pass
// nor atomics (a scatter from the outputs would need both, and fp16 atomics are slow and
// order-dependent).
template <typename T, PoolMode kMode, bool kChannelsLast, int kVec, typename IndexT>
DLK_HOST_DEVICE void pool2d_backward_element(const Pool2dBwdParams& p, IndexT i,
                                             const FlatIndexSplitter<IndexT>& splitter, const PoolAxis<IndexT>& axis_h,
                                             const PoolAxis<IndexT>& axis_w) {
  static_assert(kChannelsLast || kVec == 1, "NCHW processes one element per thread");
  using Acc = AccumulateType<T>;
  using Signed = std::make_signed_t<IndexT>;
  using Pack = Vector<T, kVec>;
  // Saved indices are int64: pairs are the widest 16-byte access.
  constexpr int kIndexVec = kVec == 1 ? 1 : 2;
  using IndexPack = Vector<int64_t, kIndexVec>;
  const T* __restrict__ grad_output = static_cast<const T*>(p.grad_output);
  const int64_t* __restrict__ saved_indices = p.indices;
  T* __restrict__ grad_input = static_cast<T*>(p.grad_input);
  const IndexT out_w = static_cast<IndexT>(p.out_w);
  const IndexT out_plane = static_cast<IndexT>(p.out_h) * out_w;
  const IndexT pixel_stride = kChannelsLast ? static_cast<IndexT>(p.channels) : IndexT(1);

  IndexT outer, h, w, channel_vector;
  split_flat_index<kChannelsLast>(splitter, i, outer, h, w, channel_vector);
  // Offset of grad_output (0, 0) of this thread's first channel.
  const IndexT base =
      kChannelsLast ? outer * out_plane * pixel_stride + channel_vector * kVec : outer * out_plane;

  IndexT first_h, last_h, first_w, last_w;
  output_range<kMode>(h, axis_h, first_h, last_h);
  output_range<kMode>(w, axis_w, first_w, last_w);
  const int64_t flat_position = static_cast<int64_t>(h) * p.in_w + static_cast<int64_t>(w);

  Acc acc[kVec];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) acc[j] = Acc(0);

  for (Signed oh = static_cast<Signed>(first_h); oh < static_cast<Signed>(last_h); ++oh) {
    PoolSpan span_h{0, 0, 1, 1};
    if constexpr (kMode == PoolMode::kAvg) {
      span_h = avg_pool_span(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.count_include_pad);
    } else if constexpr (kMode == PoolMode::kAdaptiveAvg) {
      span_h = adaptive_span(static_cast<IndexT>(oh), axis_h);
      // output_range is exact for fixed windows; adaptive windows are checked explicitly.
      if (int64_t(h) < span_h.begin || int64_t(h) >= span_h.end) continue;
    }
    for (Signed ow = static_cast<Signed>(first_w); ow < static_cast<Signed>(last_w); ++ow) {
      const IndexT offset = base + (static_cast<IndexT>(oh) * out_w + static_cast<IndexT>(ow)) * pixel_stride;
      if constexpr (kMode == PoolMode::kMax) {
        // Read the gradient only where some channel's saved argmax is this element: with
        // overlapping windows most candidates lose, and their gradient need not be fetched.
        bool matches[kVec];
        bool any_match = false;
        DLK_UNROLL
        for (int j = 0; j < kVec; j += kIndexVec) {
          const IndexPack saved = *reinterpret_cast<const IndexPack*>(saved_indices + offset + j);
          DLK_UNROLL
          for (int k = 0; k < kIndexVec; ++k) {
            matches[j + k] = saved.val[k] == flat_position;
            any_match |= matches[j + k];
          }
        }
        // A dilated window whose taps all fall in the padding read no input, whatever index ATen seeded
        // it with: its gradient goes nowhere (as in the C++ reference and Triton). Dilation 1 windows
        // always hold a tap (pad <= kernel / 2), so only dilated ones pay for the check.
        if (any_match && (p.dilation_h > 1 || p.dilation_w > 1)) {
          const PoolSpan window_h = max_pool_span(oh, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
          const PoolSpan window_w = max_pool_span(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
          any_match = window_h.begin < window_h.end && window_w.begin < window_w.end;
        }
        if (any_match) {
          const Pack grads = *reinterpret_cast<const Pack*>(grad_output + offset);
          DLK_UNROLL
          for (int j = 0; j < kVec; ++j) {
            if (matches[j]) acc[j] += to_accumulate(grads.val[j]);
          }
        }
      } else {
        PoolSpan span_w;
        if constexpr (kMode == PoolMode::kAvg) {
          span_w = avg_pool_span(ow, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.count_include_pad);
        } else {
          span_w = adaptive_span(static_cast<IndexT>(ow), axis_w);
          if (int64_t(w) < span_w.begin || int64_t(w) >= span_w.end) continue;
        }
        // Same divisor as the forward pass; dividing each term (not the sum) matches ATen.
        const int64_t divisor = kMode == PoolMode::kAvg && p.divisor_override != 0 ? int64_t(p.divisor_override)
                                                                                   : span_h.count * span_w.count;
        const Pack grads = *reinterpret_cast<const Pack*>(grad_output + offset);
        DLK_UNROLL
        for (int j = 0; j < kVec; ++j) acc[j] += to_accumulate(grads.val[j]) / Acc(divisor);
      }
    }
  }

  Pack result;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) result.val[j] = from_accumulate<T>(acc[j]);
  *reinterpret_cast<Pack*>(grad_input + i * kVec) = result;
}

// Threads take elements in memory order, so stores are fully coalesced in both layouts. Loads are
// coalesced too in channels_last (neighbouring threads read neighbouring channels of one tap, 16
// bytes each when C allows) and stride-`stride` along a row in NCHW, where the overlap of
// neighbouring windows is served from L1/L2.
template <typename T, PoolMode kMode, bool kChannelsLast, int kVec, typename IndexT>
__global__ void __launch_bounds__(kBlockThreads)
    pool2d_forward_kernel(const Pool2dFwdParams p, const IndexT total, const FlatIndexSplitter<IndexT> splitter,
                          const PoolAxis<IndexT> axis_h, const PoolAxis<IndexT> axis_w) {
  const IndexT grid_stride = static_cast<IndexT>(gridDim.x) * blockDim.x;
  for (IndexT i = static_cast<IndexT>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += grid_stride) {
    pool2d_forward_element<T, kMode, kChannelsLast, kVec>(p, i, splitter, axis_h, axis_w);
  }
}

template <typename T, PoolMode kMode, bool kChannelsLast, int kVec, typename IndexT>
__global__ void __launch_bounds__(kBlockThreads)
    pool2d_backward_kernel(const Pool2dBwdParams p, const IndexT total, const FlatIndexSplitter<IndexT> splitter,
                           const PoolAxis<IndexT> axis_h, const PoolAxis<IndexT> axis_w) {
  const IndexT grid_stride = static_cast<IndexT>(gridDim.x) * blockDim.x;
  for (IndexT i = static_cast<IndexT>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += grid_stride) {
    pool2d_backward_element<T, kMode, kChannelsLast, kVec>(p, i, splitter, axis_h, axis_w);
  }
}

// Global average pooling (adaptive, 1 x 1 output), NCHW: one warp per plane. One thread per output
// would leave a ResNet-50 head (8,192 planes of 7 x 7) with 8,192 threads, each summing 49 dependent
// loads; a warp reads its plane coalesced and reduces it with shuffles (a fixed order: deterministic).
template <typename T>
__global__ void __launch_bounds__(kBlockThreads) global_average_nchw_kernel(const Pool2dFwdParams p, int64_t planes) {
  using Acc = AccumulateType<T>;
  const T* __restrict__ input = static_cast<const T*>(p.input);
  T* __restrict__ output = static_cast<T*>(p.output);
  const int64_t plane_size = p.in_h * p.in_w;
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int64_t plane_stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t plane = int64_t(blockIdx.x) * kWarpsPerBlock + warp; plane < planes; plane += plane_stride) {
    const T* in = input + plane * plane_size;
    Acc sum = 0;
#pragma unroll 4
    for (int64_t e = lane; e < plane_size; e += kWarpSize) sum += to_accumulate(in[e]);
    DLK_UNROLL
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) output[plane] = from_accumulate<T>(sum / Acc(plane_size));
  }
}

// channels_last: a block takes kGapColumns channel vectors of one image (coalesced, 16 bytes per
// thread when C allows) and splits the image's pixels over its kGapRows thread rows; the rows'
// partial sums meet in shared memory and are added in row order. Images beyond grid.y loop.
template <typename T, int kVec>
__global__ void __launch_bounds__(kBlockThreads) global_average_channels_last_kernel(const Pool2dFwdParams p) {
  using Acc = AccumulateType<T>;
  using Pack = Vector<T, kVec>;
  __shared__ Acc partial[kGapRows][kGapColumns][kVec];
  const T* __restrict__ input = static_cast<const T*>(p.input);
  T* __restrict__ output = static_cast<T*>(p.output);
  const int64_t pixels = p.in_h * p.in_w, vectors = p.channels / kVec;
  const int64_t vector = int64_t(blockIdx.x) * kGapColumns + threadIdx.x;
  const bool active = vector < vectors;
  for (int64_t n = blockIdx.y; n < p.batch; n += gridDim.y) {
    Acc acc[kVec] = {};
    if (active) {
      const T* image = input + n * pixels * p.channels + vector * kVec;
#pragma unroll 4
      for (int64_t pixel = threadIdx.y; pixel < pixels; pixel += kGapRows) {
        const Pack v = *reinterpret_cast<const Pack*>(image + pixel * p.channels);
        DLK_UNROLL
        for (int j = 0; j < kVec; ++j) acc[j] += to_accumulate(v.val[j]);
      }
    }
    DLK_UNROLL
    for (int j = 0; j < kVec; ++j) partial[threadIdx.y][threadIdx.x][j] = acc[j];
    __syncthreads();
    if (threadIdx.y == 0 && active) {
      Pack result;
      DLK_UNROLL
      for (int j = 0; j < kVec; ++j) {
        Acc sum = 0;
        for (int r = 0; r < kGapRows; ++r) sum += partial[r][threadIdx.x][j];
        result.val[j] = from_accumulate<T>(sum / Acc(pixels));
      }
      *reinterpret_cast<Pack*>(output + n * p.channels + vector * kVec) = result;
    }
    __syncthreads();  // the partials are read before the next image overwrites them
  }
}

// ---------------------------------------------------------------------------------------------
// Host side: validation, the choice of vector width and index type, and one dispatch per launch.

bool geometry_is_valid(const Pool2dParams& p) {
  if (p.batch < 0 || p.channels < 0 || p.in_h < 0 || p.in_w < 0 || p.out_h < 0 || p.out_w < 0) return false;
  const bool fixed_window_ok = p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0 &&
                               p.pad_h >= 0 && p.pad_w >= 0;
  switch (p.mode) {
    case PoolMode::kMax: return fixed_window_ok && p.dilation_h > 0 && p.dilation_w > 0;
    case PoolMode::kAvg: return fixed_window_ok;
    case PoolMode::kAdaptiveAvg: return true;
  }
  return false;
}

// Channels per thread for channels_last: 16 bytes of channels when that divides C and keeps every
// access aligned (each pixel then starts on a vector boundary), else one. The widths in between
// (C = 4 in fp16, say) would each add a full set of kernels per mode, dtype and index type for
// layers that are rare in practice. Saved indices move in pairs, so they need 16-byte alignment
// whenever a thread handles more than one channel.
template <typename T>
int channels_per_thread(int64_t channels, std::initializer_list<const void*> tensors, const int64_t* indices) {
  constexpr int kVec = kMaxVectorBytes / int(sizeof(T));
  const bool aligned = (indices == nullptr || is_aligned(indices, 2 * sizeof(int64_t))) &&
                       all_aligned(tensors, kVec * sizeof(T));
  return channels % kVec == 0 && aligned ? kVec : 1;
}

// A few waves of resident blocks: enough to fill every SM, few enough that blocks loop.
int64_t max_blocks() { return int64_t(sm_count()) * kBlocksPerSM * kWavesPerLaunch; }

template <typename Fn>
Status dispatch_mode(PoolMode mode, Fn&& fn) {
  switch (mode) {
    case PoolMode::kMax: return fn(std::integral_constant<PoolMode, PoolMode::kMax>{});
    case PoolMode::kAvg: return fn(std::integral_constant<PoolMode, PoolMode::kAvg>{});
    case PoolMode::kAdaptiveAvg: return fn(std::integral_constant<PoolMode, PoolMode::kAdaptiveAvg>{});
  }
  return Status::kInvalidArgument;
}

// fn(std::integral_constant<int, vec>) for the widths channels_per_thread picks.
template <typename T, typename Fn>
Status dispatch_vector_width(int vec, Fn&& fn) {
  constexpr int kVec = kMaxVectorBytes / int(sizeof(T));
  if (vec == kVec) return fn(std::integral_constant<int, kVec>{});
  if (vec == 1) return fn(std::integral_constant<int, 1>{});
  return Status::kInvalidArgument;
}

// Calls fn(TypeTag<T>, mode, vec, TypeTag<IndexT>) with everything the kernels are templated on.
// `vec` is 1 for NCHW.
// 32-bit indexing whenever it is exact (plan::pool2d_fits_int32): the fast dividers and cheaper
// address math both need it.
template <typename Fn>
Status dispatch_pool2d(DType dtype, const Pool2dParams& p, std::initializer_list<const void*> vector_accessed,
                       const int64_t* indices, Fn&& fn) {
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const int vec = p.channels_last ? channels_per_thread<T>(p.channels, vector_accessed,
                                                             p.mode == PoolMode::kMax ? indices : nullptr)
                                    : 1;
    return dispatch_mode(p.mode, [&](auto mode) {
      return dispatch_vector_width<T>(vec, [&](auto vec_c) {
        return dispatch_index_type(plan::pool2d_fits_int32(p),
                                   [&](auto index_tag) { return fn(type_tag, mode, vec_c, index_tag); });
      });
    });
  });
}

template <typename IndexT>
FlatIndexSplitter<IndexT> make_splitter(int64_t channels, int vec, int64_t h, int64_t w) {
  return {Divider<IndexT>(static_cast<IndexT>(channels / vec)), Divider<IndexT>(static_cast<IndexT>(w)),
          Divider<IndexT>(static_cast<IndexT>(h))};
}

template <typename IndexT>
PoolAxis<IndexT> axis_h(const Pool2dParams& p) {
  return make_axis<IndexT>(p.mode, p.in_h, p.out_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
}

template <typename IndexT>
PoolAxis<IndexT> axis_w(const Pool2dParams& p) {
  return make_axis<IndexT>(p.mode, p.in_w, p.out_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
}

Status global_average_forward(const Pool2dFwdParams& p, DType dtype, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const int vec = p.channels_last ? channels_per_thread<T>(p.channels, {p.input, p.output}, nullptr) : 1;
    const plan::GlobalAveragePlan g = plan::plan_global_average(p, vec, kWarpsPerBlock, kGapColumns, max_blocks());
    if (!p.channels_last) {
      global_average_nchw_kernel<T><<<unsigned(g.planes.blocks), kBlockThreads, 0, stream>>>(p, g.planes.work);
      return check_launch();
    }
    const dim3 grid(unsigned(g.channel_blocks), unsigned(g.image_blocks)), block(kGapColumns, kGapRows);
    return dispatch_vector_width<T>(vec, [&](auto vec_c) {
      global_average_channels_last_kernel<T, decltype(vec_c)::value><<<grid, block, 0, stream>>>(p);
      return check_launch();
    });
  });
}

}  // namespace

Status pool2d_forward_cuda(const Pool2dFwdParams& p, DType dtype, cudaStream_t stream) {
  if (!geometry_is_valid(p)) return Status::kInvalidArgument;
  const int64_t in_numel = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t out_numel = p.batch * p.channels * p.out_h * p.out_w;
  if (out_numel == 0) return Status::kOk;
  // A non-empty output needs a non-empty input; ATen rejects such calls too. Max pooling without
  // indices (p.indices null) is the inference case: nothing will ask for the gradient.
  if (in_numel == 0) return Status::kInvalidArgument;
  if (plan::pool2d_is_global_average(p)) return global_average_forward(p, dtype, stream);

  return dispatch_pool2d(dtype, p, {p.input, p.output}, p.indices,
                         [&](auto type_tag, auto mode, auto vec_c, auto index_tag) {
    using T = typename decltype(type_tag)::type;
    using IndexT = typename decltype(index_tag)::type;
    constexpr int kVec = decltype(vec_c)::value;
    const plan::Pool2dPlan plan = plan::plan_pool2d(p, false, kVec, kBlockThreads, max_blocks());
    const unsigned blocks = static_cast<unsigned>(plan.grid.blocks);
    const auto total = static_cast<IndexT>(plan.grid.work);
    const auto splitter = make_splitter<IndexT>(p.channels, kVec, p.out_h, p.out_w);
    if (p.channels_last) {
      pool2d_forward_kernel<T, decltype(mode)::value, true, kVec, IndexT>
          <<<blocks, kBlockThreads, 0, stream>>>(p, total, splitter, axis_h<IndexT>(p), axis_w<IndexT>(p));
    } else if constexpr (kVec == 1) {
      pool2d_forward_kernel<T, decltype(mode)::value, false, 1, IndexT>
          <<<blocks, kBlockThreads, 0, stream>>>(p, total, splitter, axis_h<IndexT>(p), axis_w<IndexT>(p));
    }
    return check_launch();
  });
}

Status pool2d_backward_cuda(const Pool2dBwdParams& p, DType dtype, cudaStream_t stream) {
  if (!geometry_is_valid(p)) return Status::kInvalidArgument;
  const int64_t in_numel = p.batch * p.channels * p.in_h * p.in_w;
  const int64_t out_numel = p.batch * p.channels * p.out_h * p.out_w;
  if (in_numel == 0) return Status::kOk;
  if (out_numel > 0 && p.mode == PoolMode::kMax && p.indices == nullptr) return Status::kInvalidArgument;

  return dispatch_pool2d(dtype, p, {p.grad_output, p.grad_input}, p.indices,
                         [&](auto type_tag, auto mode, auto vec_c, auto index_tag) {
    using T = typename decltype(type_tag)::type;
    using IndexT = typename decltype(index_tag)::type;
    constexpr int kVec = decltype(vec_c)::value;
    const plan::Pool2dPlan plan = plan::plan_pool2d(p, true, kVec, kBlockThreads, max_blocks());
    const unsigned blocks = static_cast<unsigned>(plan.grid.blocks);
    const auto total = static_cast<IndexT>(plan.grid.work);
    const auto splitter = make_splitter<IndexT>(p.channels, kVec, p.in_h, p.in_w);
    if (p.channels_last) {
      pool2d_backward_kernel<T, decltype(mode)::value, true, kVec, IndexT>
          <<<blocks, kBlockThreads, 0, stream>>>(p, total, splitter, axis_h<IndexT>(p), axis_w<IndexT>(p));
    } else if constexpr (kVec == 1) {
      pool2d_backward_kernel<T, decltype(mode)::value, false, 1, IndexT>
          <<<blocks, kBlockThreads, 0, stream>>>(p, total, splitter, axis_h<IndexT>(p), axis_w<IndexT>(p));
    }
    return check_launch();
  });
}

}  // namespace dlk
