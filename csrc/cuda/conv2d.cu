// CUDA direct convolution: argument checks, launch planning, the depthwise kernels and the
// deterministic reduction of the weight gradient's split partial sums. The implicit-GEMM kernels
// themselves are in conv2d_kernels.cuh (design notes there), instantiated per dtype in
// conv2d_gemm_<dtype>.cu.
//
// Planning, per op:
//  - math: mma.sync for fp16/bf16, TF32 mma for fp32 with allow_tf32, SIMT FMA for exact fp32 and
//    fp64;
//  - loaders: cp.async ("fast") for the activation operand when it is channels_last with a channel
//    count per group that is a multiple of 16 bytes and 16-byte aligned, element gathers otherwise;
//  - tile: among the instantiated shapes, the one with the least estimated time: waves of resident
//    blocks times the tile's area over its relative efficiency (small tiles waste less on ragged
//    edges and fill the GPU on small layers, big tiles reuse each loaded byte more);
//  - batch: a launch covers at most ~2^31 GEMM rows, so that the kernels index rows with 32-bit
//    multiply-shift divisions; bigger batches take several launches;
//  - wgrad: its reduction (N*P*Q) is split over blocks until the GPU is full, the partials summed
//    in a fixed order by reduce_partials_kernel.
// Depthwise (groups == C == K) skips the GEMM: one thread per output pixel and 16 bytes of channels
// (channels_last) or per output element (NCHW) loops over the R x S taps; its wgrad reduces each
// (channel, tap) over the pixels with one block per (channel vector, tap, split).
#include "conv2d.cuh"

#include "conv2d_kernels.cuh"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>

namespace dlk {
namespace conv {
namespace {

constexpr int kBlockThreads = 256;
// Rows per launch: below 2^31 with room for a tile's overshoot past the last row.
constexpr int64_t kMaxGemmRows = INT32_MAX - 256;
// A wgrad split reduces at least this many N*P*Q elements: fewer would spend more time writing its
// partial tile than multiplying.
constexpr int64_t kMinSplitDepth = 1024;
// Upper bound on the wgrad partials (unless the batch alone needs more launches than that).
constexpr int64_t kMaxPartialBytes = int64_t(1) << 27;
// Depthwise wgrad: a block's pixel range gives each thread at least this many pixels.
constexpr int64_t kMinPixelsPerThread = 16;
// Depthwise forward / dgrad grid-stride kernels: blocks per SM of one wave (2048 threads / 256).
constexpr int kDepthwiseBlocksPerSM = 8;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool known_dtype(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32 ||
         dtype == DType::kFloat64;
}

// ---------------------------------------------------------------------------------------------
// Argument checks.

bool geometry_is_valid(const Conv2dParams& p) {
  return p.batch >= 0 && p.in_channels >= 0 && p.out_channels >= 0 && p.in_h >= 0 && p.in_w >= 0 && p.out_h >= 0 &&
         p.out_w >= 0 && p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0 && p.dilation_h > 0 &&
         p.dilation_w > 0 && p.groups > 0 && p.in_channels % p.groups == 0 && p.out_channels % p.groups == 0;
}

// The kernels hold sizes, coordinates and reduction indices in 32-bit ints: every extent below
// 2^31 with room for a tile past the edge, and every input coordinate they form,
// o * stride - pad + r * dilation (or h + pad - r * dilation in dgrad), representable.
bool fits_32bit_indices(const Conv2dParams& p) {
  constexpr int64_t kLimit = INT32_MAX - 256;
  const int64_t taps = int64_t(p.kernel_h) * p.kernel_w;
  const auto span = [](int64_t in, int64_t out, int stride, int pad, int kernel, int dilation) {
    return in + std::max<int64_t>(out - 1, 0) * stride + std::abs(int64_t(pad)) + int64_t(kernel - 1) * dilation;
  };
  return p.in_channels <= kLimit && p.out_channels <= kLimit && p.in_h <= kLimit && p.in_w <= kLimit &&
         p.out_h <= kLimit && p.out_w <= kLimit && p.groups <= 65535 &&
         p.in_channels / p.groups * taps <= kLimit && p.out_channels / p.groups * taps <= kLimit &&
         span(p.in_h, p.out_h, p.stride_h, p.pad_h, p.kernel_h, p.dilation_h) <= kLimit &&
         span(p.in_w, p.out_w, p.stride_w, p.pad_w, p.kernel_w, p.dilation_w) <= kLimit;
}

Status check_common(const Conv2dParams& p, DType dtype) {
  if (!known_dtype(dtype)) return Status::kUnsupportedDType;
  if (!geometry_is_valid(p) || !fits_32bit_indices(p)) return Status::kInvalidArgument;
  return Status::kOk;
}

bool is_depthwise(const Conv2dParams& p) { return p.groups == p.in_channels && p.out_channels == p.in_channels; }

int64_t input_elements(const Conv2dParams& p) { return p.batch * p.in_channels * p.in_h * p.in_w; }
int64_t output_elements(const Conv2dParams& p) { return p.batch * p.out_channels * p.out_h * p.out_w; }
int64_t weight_elements(const Conv2dParams& p) {
  return p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w;
}

// A divisor of at least 1: empty extents never reach a division, but the magic numbers need d > 0.
Divider<uint32_t> divider(int64_t d) { return Divider<uint32_t>(static_cast<uint32_t>(std::max<int64_t>(d, 1))); }

ConvShape conv_shape(const Conv2dParams& p) {
  ConvShape s;
  s.channels = static_cast<int>(p.in_channels);
  s.in_h = static_cast<int>(p.in_h);
  s.in_w = static_cast<int>(p.in_w);
  s.out_channels = static_cast<int>(p.out_channels);
  s.out_h = static_cast<int>(p.out_h);
  s.out_w = static_cast<int>(p.out_w);
  s.group_channels = static_cast<int>(p.in_channels / p.groups);
  s.group_out_channels = static_cast<int>(p.out_channels / p.groups);
  s.kernel_h = p.kernel_h;
  s.kernel_w = p.kernel_w;
  s.stride_h = p.stride_h;
  s.stride_w = p.stride_w;
  s.pad_h = p.pad_h;
  s.pad_w = p.pad_w;
  s.dilation_h = p.dilation_h;
  s.dilation_w = p.dilation_w;
  s.in_image = p.in_channels * p.in_h * p.in_w;
  s.out_image = p.out_channels * p.out_h * p.out_w;
  return s;
}

// Reduction index order k -> (channel, r, s): channels fastest in channels_last, taps in NCHW.
Divider<uint32_t> reduction_outer(const Conv2dParams& p, int64_t group_channels) {
  return divider(p.channels_last ? group_channels : int64_t(p.kernel_h) * p.kernel_w);
}

// ---------------------------------------------------------------------------------------------
// GEMM planning.

template <typename T>
bool uses_tensor_cores(const Conv2dParams& p) {
  if constexpr (std::is_same_v<T, float>) return p.allow_tf32;
  return !std::is_same_v<T, double>;
}

int64_t resident_blocks(bool tensor_cores, TileShape tile) {
  return tensor_cores ? conv_tile(tile).resident_tensor_cores : conv_tile(tile).resident_simt;
}

TileShape choose_tile(const GemmChoice& c, int element_bytes, int64_t rows, int64_t cols, int64_t groups) {
  TileShape candidates[kConvTileCount];
  const int n = available_tiles(c.tensor_cores, c.fast, element_bytes, candidates);
  TileShape best = candidates[n - 1];
  double best_cost = -1;
  for (int i = 0; i < n; ++i) {
    const TileShape t = candidates[i];
    const int64_t blocks = ceil_div(rows, tile_rows(t)) * ceil_div(cols, tile_cols(t)) * groups;
    const int64_t waves = ceil_div(blocks, sm_count() * resident_blocks(c.tensor_cores, t));
    const double cost = double(waves) * tile_rows(t) * tile_cols(t) / conv_tile(t).efficiency;
    if (best_cost < 0 || cost < best_cost) {
      best = t;
      best_cost = cost;
    }
  }
  return best;
}

// Images per launch of a reduction over N*P*Q (wgrad): fewer than 2^31 reduction indices; 0 when
// a single image has too many pixels.
int64_t reduction_images(const Conv2dParams& p) {
  const int64_t pixels = p.out_h * p.out_w, batch = std::max<int64_t>(p.batch, 1);
  return pixels == 0 ? batch : std::min(batch, kMaxGemmRows / pixels);
}

// Images per launch such that rows_per_image * images stays below kMaxGemmRows and the block grid
// (row tiles x column tiles) below 2^31; 0 when a single image is too big.
int64_t images_per_launch(int64_t rows_per_image, int64_t batch, int64_t tiles_n, int tile_rows_) {
  if (rows_per_image == 0) return std::max<int64_t>(batch, 1);
  const int64_t max_rows = std::min(kMaxGemmRows, (INT32_MAX / tiles_n) * tile_rows_);
  return std::min(std::max<int64_t>(batch, 1), max_rows / rows_per_image);
}

// The planners below build every launch's arguments and hand them to `launch` (and `reduce`), which
// the public launchers bind to kernel launches on their stream; a host harness can bind them to a
// replay of the per-thread code instead.

// launch(const ForwardArgs&, const GemmChoice&, dim3 grid) -> Status, once per batch chunk.
template <typename T, class Launch>
Status forward_gemm(const Conv2dFwdParams& p, Launch&& launch) {
  constexpr int kVec = kChunkElems<T>;
  const int64_t group_channels = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  const int64_t depth = group_channels * p.kernel_h * p.kernel_w, pixels = p.out_h * p.out_w;
  GemmChoice choice;
  choice.tensor_cores = uses_tensor_cores<T>(p);
  choice.channels_last = p.channels_last;
  choice.fast = p.channels_last && group_channels % kVec == 0 && input_elements(p) > 0 &&
                is_aligned(p.input, kChunkBytes) && is_aligned(p.weight, kChunkBytes);
  choice.tile = choose_tile(choice, sizeof(T), std::min(p.batch * pixels, kMaxGemmRows), group_out, p.groups);
  const int64_t tiles_n = ceil_div(group_out, tile_cols(choice.tile));
  const int64_t images = images_per_launch(pixels, p.batch, tiles_n, tile_rows(choice.tile));
  if (images == 0) return Status::kInvalidArgument;

  ForwardArgs a;
  a.gemm.cols = static_cast<int>(group_out);
  a.gemm.depth = static_cast<int>(depth);
  a.gemm.tiles_n = static_cast<int>(tiles_n);
  a.gemm.k_tiles_per_split = static_cast<int>(ceil_div(depth, kTileK<T>));
  a.weight = p.weight;
  a.bias = p.bias;
  a.activation = p.activation;
  a.negative_slope = p.negative_slope;
  a.out_pixels = divider(pixels);
  a.out_width = divider(p.out_w);
  a.reduction_outer = reduction_outer(p, group_channels);
  a.kernel_width = divider(p.kernel_w);
  a.shape = conv_shape(p);
  for (int64_t first = 0; first < p.batch; first += images) {
    const int64_t count = std::min(images, p.batch - first);
    a.gemm.rows = static_cast<int>(count * pixels);
    a.input = static_cast<const T*>(p.input) + first * a.shape.in_image;
    a.output = static_cast<T*>(p.output) + first * a.shape.out_image;
    a.residual = p.residual ? static_cast<const T*>(p.residual) + first * a.shape.out_image : nullptr;
    a.vector_store = p.channels_last && group_out % kVec == 0 && is_aligned(a.output, kChunkBytes) &&
                     (a.residual == nullptr || is_aligned(a.residual, kChunkBytes));
    const dim3 grid(static_cast<unsigned>(ceil_div(a.gemm.rows, tile_rows(choice.tile)) * tiles_n),
                    static_cast<unsigned>(p.groups), 1);
    const Status status = launch(a, choice, grid);
    if (status != Status::kOk) return status;
  }
  return Status::kOk;
}

// launch(const DgradArgs&, const GemmChoice&, dim3 grid) -> Status, once per batch chunk.
template <typename T, class Launch>
Status dgrad_gemm(const Conv2dDgradParams& p, Launch&& launch) {
  constexpr int kVec = kChunkElems<T>;
  const int64_t group_channels = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  const int64_t depth = group_out * p.kernel_h * p.kernel_w, pixels = p.in_h * p.in_w;
  GemmChoice choice;
  choice.tensor_cores = uses_tensor_cores<T>(p);
  choice.channels_last = p.channels_last;
  choice.fast = p.channels_last && group_out % kVec == 0 && output_elements(p) > 0 &&
                is_aligned(p.grad_output, kChunkBytes);
  choice.tile = choose_tile(choice, sizeof(T), std::min(p.batch * pixels, kMaxGemmRows), group_channels, p.groups);
  const int64_t tiles_n = ceil_div(group_channels, tile_cols(choice.tile));
  const int64_t images = images_per_launch(pixels, p.batch, tiles_n, tile_rows(choice.tile));
  if (images == 0) return Status::kInvalidArgument;

  DgradArgs a;
  a.gemm.cols = static_cast<int>(group_channels);
  a.gemm.depth = static_cast<int>(depth);
  a.gemm.tiles_n = static_cast<int>(tiles_n);
  a.gemm.k_tiles_per_split = static_cast<int>(ceil_div(depth, kTileK<T>));
  a.weight = p.weight;
  a.in_pixels = divider(pixels);
  a.in_width = divider(p.in_w);
  a.reduction_outer = reduction_outer(p, group_out);
  a.kernel_width = divider(p.kernel_w);
  a.stride_h = divider(p.stride_h);
  a.stride_w = divider(p.stride_w);
  a.shape = conv_shape(p);
  for (int64_t first = 0; first < p.batch; first += images) {
    const int64_t count = std::min(images, p.batch - first);
    a.gemm.rows = static_cast<int>(count * pixels);
    a.grad_output = static_cast<const T*>(p.grad_output) + first * a.shape.out_image;
    a.grad_input = static_cast<T*>(p.grad_input) + first * a.shape.in_image;
    a.vector_store = p.channels_last && group_channels % kVec == 0 && is_aligned(a.grad_input, kChunkBytes);
    const dim3 grid(static_cast<unsigned>(ceil_div(a.gemm.rows, tile_rows(choice.tile)) * tiles_n),
                    static_cast<unsigned>(p.groups), 1);
    const Status status = launch(a, choice, grid);
    if (status != Status::kOk) return status;
  }
  return Status::kOk;
}

// How the weight gradient's reduction is cut: `launches` batch chunks of `images` images, each
// split `splits` ways; every (launch, split) pair writes one slot of partials, unless there is a
// single slot, which is then the gradient itself.
struct WgradPlan {
  GemmChoice choice;
  int64_t images = 1, launches = 1, splits = 1;
  int64_t slots() const { return launches * splits; }
};

template <typename T>
WgradPlan plan_wgrad_gemm(const Conv2dWgradParams& p) {
  const int64_t group_channels = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  const int64_t cols = group_channels * p.kernel_h * p.kernel_w, pixels = p.out_h * p.out_w;
  WgradPlan plan;
  plan.choice.tensor_cores = uses_tensor_cores<T>(p);
  plan.choice.channels_last = p.channels_last;
  plan.choice.tile = choose_tile(plan.choice, sizeof(T), group_out, cols, p.groups);
  const int64_t blocks = ceil_div(group_out, tile_rows(plan.choice.tile)) *
                         ceil_div(cols, tile_cols(plan.choice.tile)) * p.groups;
  // The reduction (images * pixels) is the GEMM depth here; it has the same 32-bit limit as rows.
  plan.images = reduction_images(p);
  if (plan.images == 0) return plan;
  plan.launches = std::max<int64_t>(1, ceil_div(p.batch, plan.images));
  const int64_t depth = plan.images * pixels;
  const int64_t wanted = ceil_div(sm_count() * resident_blocks(plan.choice.tensor_cores, plan.choice.tile), blocks);
  const int64_t useful = std::max<int64_t>(1, depth / kMinSplitDepth);
  const int64_t affordable = std::max<int64_t>(
      1, kMaxPartialBytes / (plan.launches * weight_elements(p) * int64_t(sizeof(AccumulateType<T>))));
  plan.splits = std::max<int64_t>(1, std::min({wanted, useful, affordable, int64_t(65535)}));
  return plan;
}

template <typename T>
size_t wgrad_gemm_workspace_bytes(const WgradPlan& plan, const Conv2dWgradParams& p) {
  return plan.slots() > 1 ? size_t(plan.slots()) * size_t(weight_elements(p)) * sizeof(AccumulateType<T>) : 0;
}

// grad_weight[i] = sum over slots s (in order) of partials[s * numel + i].
template <typename T>
__global__ void __launch_bounds__(kBlockThreads)
    reduce_partials_kernel(const AccumulateType<T>* __restrict__ partials, int64_t slots, int64_t numel,
                           T* __restrict__ grad_weight) {
  using Acc = AccumulateType<T>;
  const int64_t step = int64_t(gridDim.x) * kBlockThreads;
  for (int64_t i = int64_t(blockIdx.x) * kBlockThreads + threadIdx.x; i < numel; i += step) {
    Acc sum = Acc(0);
    for (int64_t s = 0; s < slots; ++s) sum += partials[s * numel + i];
    grad_weight[i] = from_accumulate<T>(sum);
  }
}

// launch(const WgradArgs&, const GemmChoice&, dim3 grid) -> Status, once per batch chunk, then
// reduce(partials, slots, numel, grad_weight) -> Status when there are several slots.
template <typename T, class Launch, class Reduce>
Status wgrad_gemm(const Conv2dWgradParams& p, void* workspace, size_t workspace_bytes, Launch&& launch,
                  Reduce&& reduce) {
  using Acc = AccumulateType<T>;
  constexpr int kVec = kChunkElems<T>;
  const WgradPlan plan = plan_wgrad_gemm<T>(p);
  if (plan.images == 0) return Status::kInvalidArgument;
  const size_t needed = wgrad_gemm_workspace_bytes<T>(plan, p);
  if (needed > 0 && (workspace == nullptr || workspace_bytes < needed)) return Status::kInvalidArgument;
  const int64_t group_channels = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  const int64_t cols = group_channels * p.kernel_h * p.kernel_w, pixels = p.out_h * p.out_w;
  const int64_t tiles_n = ceil_div(cols, tile_cols(plan.choice.tile));
  const bool direct = plan.slots() == 1;

  WgradArgs a;
  a.gemm.rows = static_cast<int>(group_out);
  a.gemm.cols = static_cast<int>(cols);
  a.gemm.tiles_n = static_cast<int>(tiles_n);
  a.grad_weight = direct ? p.grad_weight : nullptr;
  a.partials = direct ? nullptr : workspace;
  a.slot_elements = weight_elements(p);
  a.vector_store = cols % kVec == 0 && (direct ? is_aligned(p.grad_weight, kChunkBytes)
                                               : is_aligned(workspace, kVec * sizeof(Acc)));
  a.out_pixels = divider(pixels);
  a.out_width = divider(p.out_w);
  a.reduction_outer = reduction_outer(p, group_channels);
  a.kernel_width = divider(p.kernel_w);
  const dim3 grid(static_cast<unsigned>(ceil_div(group_out, tile_rows(plan.choice.tile)) * tiles_n),
                  static_cast<unsigned>(p.groups), static_cast<unsigned>(plan.splits));
  a.shape = conv_shape(p);
  // At least one launch: with N*P*Q == 0 it writes the zero gradient.
  for (int64_t chunk = 0; chunk < plan.launches; ++chunk) {
    const int64_t first = chunk * plan.images, count = std::max<int64_t>(0, std::min(plan.images, p.batch - first));
    a.gemm.depth = static_cast<int>(count * pixels);
    a.gemm.k_tiles_per_split = static_cast<int>(ceil_div(ceil_div(a.gemm.depth, kTileK<T>), plan.splits));
    a.grad_output = static_cast<const T*>(p.grad_output) + first * a.shape.out_image;
    a.input = static_cast<const T*>(p.input) + first * a.shape.in_image;
    a.first_slot = chunk * plan.splits;
    const Status status = launch(a, plan.choice, grid);
    if (status != Status::kOk) return status;
  }
  if (direct) return Status::kOk;
  return reduce(workspace, plan.slots(), weight_elements(p), p.grad_weight);
}

// ---------------------------------------------------------------------------------------------
// Depthwise: groups == C == K, weight (C, 1, R, S), i.e. C*R*S contiguous in either layout.

struct DepthwiseArgs {
  ConvShape shape;
  const void* source = nullptr;  // forward: input; dgrad: grad_output
  const void* weight = nullptr;
  const void* bias = nullptr;      // forward only
  const void* residual = nullptr;  // forward only
  bool activation = false;         // forward only, as ForwardArgs
  double negative_slope = 0;
  void* destination = nullptr;  // forward: output; dgrad: grad_input
  uint32_t items = 0;           // destination elements / kVec of this launch
  Divider<uint32_t> channel_vectors;     // C / kVec
  Divider<uint32_t> pixels, width;       // destination plane: P*Q and Q (forward), H*W and W (dgrad)
  Divider<uint32_t> stride_h, stride_w;  // dgrad
};

// Source coordinate of destination coordinate `o` through tap `t` along one axis; false when the
// tap reads nothing. Forward: i = o * stride - pad + t * dilation in [0, in). Dgrad (kBackward): the
// output position o' with o' * stride - pad + t * dilation = o, if any, in [0, out).
template <bool kBackward>
DLK_HOST_DEVICE bool depthwise_source_coordinate(int o, int t, int stride, const Divider<uint32_t>& stride_div,
                                                 int pad, int dilation, int extent, int& source) {
  if constexpr (kBackward) {
    const int shifted = o + pad - t * dilation;
    if (shifted < 0) return false;
    uint32_t q, rest;
    stride_div.divmod(static_cast<uint32_t>(shifted), q, rest);
    source = static_cast<int>(q);
    return rest == 0 && source < extent;
  } else {
    source = o * stride - pad + t * dilation;
    return source >= 0 && source < extent;
  }
}

// Destination item `item`: kVec channels of one pixel (channels_last) or one element (NCHW).
template <typename T, bool kCL, int kVec, bool kBackward>
DLK_HOST_DEVICE void depthwise_item(const DepthwiseArgs& a, uint32_t item) {
  using Acc = AccumulateType<T>;
  const ConvShape& s = a.shape;
  uint32_t image, channel, pixel, y, x;
  if constexpr (kCL) {
    uint32_t flat_pixel, vector;
    a.channel_vectors.divmod(item, flat_pixel, vector);
    channel = vector * kVec;
    a.pixels.divmod(flat_pixel, image, pixel);
  } else {
    uint32_t plane;
    a.pixels.divmod(item, plane, pixel);
    a.channel_vectors.divmod(plane, image, channel);
  }
  a.width.divmod(pixel, y, x);
  const int source_h = kBackward ? s.out_h : s.in_h, source_w = kBackward ? s.out_w : s.in_w;
  const int dest_h = kBackward ? s.in_h : s.out_h, dest_w = kBackward ? s.in_w : s.out_w;
  const T* source = static_cast<const T*>(a.source);
  const T* weight = static_cast<const T*>(a.weight);
  const int taps = s.kernel_h * s.kernel_w;
  Acc acc[kVec];
  DLK_UNROLL
  for (int v = 0; v < kVec; ++v) acc[v] = Acc(0);
  for (int r = 0; r < s.kernel_h; ++r) {
    int sy;
    if (!depthwise_source_coordinate<kBackward>(int(y), r, s.stride_h, a.stride_h, s.pad_h, s.dilation_h, source_h,
                                                sy)) {
      continue;
    }
    for (int t = 0; t < s.kernel_w; ++t) {
      int sx;
      if (!depthwise_source_coordinate<kBackward>(int(x), t, s.stride_w, a.stride_w, s.pad_w, s.dilation_w, source_w,
                                                  sx)) {
        continue;
      }
      const Vector<T, kVec> in =
          load_elements<T, kVec>(source, conv_offset(image, channel, sy, sx, s.channels, source_h, source_w, kCL));
      DLK_UNROLL
      for (int v = 0; v < kVec; ++v) {
        const T w = weight[(int64_t(channel) + v) * taps + r * s.kernel_w + t];
        acc[v] = fused_multiply_add(to_accumulate(in.val[v]), to_accumulate(w), acc[v]);
      }
    }
  }
  const int64_t offset = conv_offset(image, channel, y, x, s.channels, dest_h, dest_w, kCL);
  Vector<T, kVec> out, residual{};
  if (!kBackward && a.residual != nullptr) residual = load_elements<T, kVec>(static_cast<const T*>(a.residual), offset);
  DLK_UNROLL
  for (int v = 0; v < kVec; ++v) {
    Acc y_v = acc[v];
    if constexpr (!kBackward) {
      if (a.bias != nullptr) y_v += to_accumulate(static_cast<const T*>(a.bias)[channel + v]);
      if (a.residual != nullptr) y_v += to_accumulate(residual.val[v]);
      y_v = epilogue_activation(y_v, a);
    }
    out.val[v] = from_accumulate<T>(y_v);
  }
  store_elements<T, kVec>(static_cast<T*>(a.destination), offset, out);
}

template <typename T, bool kCL, int kVec, bool kBackward>
__global__ void __launch_bounds__(kBlockThreads) depthwise_kernel(const __grid_constant__ DepthwiseArgs args) {
  const uint32_t step = gridDim.x * kBlockThreads;
  for (uint32_t item = blockIdx.x * kBlockThreads + threadIdx.x; item < args.items; item += step) {
    depthwise_item<T, kCL, kVec, kBackward>(args, item);
  }
}

// Names one instantiation of the depthwise kernels, for the launch callbacks.
template <typename T, bool kCL, int kVec, bool kBackward>
struct DepthwiseConfig {};

template <typename T, bool kCL, int kVec, bool kBackward>
Status launch_depthwise(DepthwiseConfig<T, kCL, kVec, kBackward>, const DepthwiseArgs& a, unsigned blocks,
                        cudaStream_t stream) {
  depthwise_kernel<T, kCL, kVec, kBackward><<<blocks, kBlockThreads, 0, stream>>>(a);
  return check_launch();
}

// Vector width along channels: 16 bytes in channels_last when C and every pointer allow it.
template <typename T>
int depthwise_vector(const Conv2dParams& p, std::initializer_list<const void*> tensors) {
  if (!p.channels_last || p.in_channels % kChunkElems<T> != 0) return 1;
  for (const void* t : tensors) {
    if (t != nullptr && !is_aligned(t, kChunkBytes)) return 1;
  }
  return kChunkElems<T>;
}

// launch(DepthwiseConfig<...>, const DepthwiseArgs&, unsigned blocks) -> Status, once per batch chunk.
template <typename T, bool kBackward, class Launch>
Status depthwise_direct(const Conv2dParams& p, const DepthwiseArgs& base, int vec, Launch&& launch) {
  const int64_t dest_pixels = kBackward ? p.in_h * p.in_w : p.out_h * p.out_w;
  const int64_t items_per_image = p.in_channels / vec * dest_pixels;
  // 32-bit item indices, plus a grid-stride step, per launch.
  if (items_per_image > INT32_MAX / 2) return Status::kInvalidArgument;
  const int64_t images = std::min(p.batch, (INT32_MAX / 2) / items_per_image);
  DepthwiseArgs a = base;
  a.channel_vectors = divider(p.in_channels / vec);
  a.pixels = divider(dest_pixels);
  a.width = divider(kBackward ? p.in_w : p.out_w);
  a.stride_h = divider(p.stride_h);
  a.stride_w = divider(p.stride_w);
  const int64_t source_image = kBackward ? p.out_channels * p.out_h * p.out_w : p.in_channels * p.in_h * p.in_w;
  const int64_t dest_image = kBackward ? p.in_channels * p.in_h * p.in_w : p.out_channels * p.out_h * p.out_w;
  a.shape = conv_shape(p);
  for (int64_t first = 0; first < p.batch; first += images) {
    const int64_t count = std::min(images, p.batch - first);
    a.items = static_cast<uint32_t>(count * items_per_image);
    a.source = static_cast<const T*>(base.source) + first * source_image;
    a.destination = static_cast<T*>(base.destination) + first * dest_image;
    a.residual = base.residual ? static_cast<const T*>(base.residual) + first * dest_image : nullptr;
    const unsigned blocks = static_cast<unsigned>(
        std::min<int64_t>(ceil_div(a.items, kBlockThreads), sm_count() * kDepthwiseBlocksPerSM));
    Status status;
    if (p.channels_last && vec > 1) status = launch(DepthwiseConfig<T, true, kChunkElems<T>, kBackward>{}, a, blocks);
    else if (p.channels_last) status = launch(DepthwiseConfig<T, true, 1, kBackward>{}, a, blocks);
    else status = launch(DepthwiseConfig<T, false, 1, kBackward>{}, a, blocks);
    if (status != Status::kOk) return status;
  }
  return Status::kOk;
}

struct DepthwiseWgradArgs {
  ConvShape shape;
  const void* grad_output = nullptr;
  const void* input = nullptr;
  void* grad_weight = nullptr;  // when this launch is the only slot
  void* partials = nullptr;     // otherwise: slot first_slot + blockIdx.z
  int64_t first_slot = 0, slot_elements = 0;
  int pixels = 0, pixels_per_split = 0;  // N*P*Q of this launch, and per block
  Divider<uint32_t> out_pixels, out_width;
};

// Thread `thread`'s share of sum over pixels j of grad_output[j, c] * input[j through tap (r, s), c]
// for channels c = channel .. channel + kVec - 1: pixels split*pixels_per_split + thread, + kBlockThreads, ...
template <typename T, bool kCL, int kVec>
DLK_HOST_DEVICE void depthwise_wgrad_accumulate(const DepthwiseWgradArgs& a, int channel, int r, int s, int split,
                                                int thread, AccumulateType<T> (&acc)[kVec]) {
  const ConvShape& sh = a.shape;
  const T* grad_output = static_cast<const T*>(a.grad_output);
  const T* input = static_cast<const T*>(a.input);
  const int begin = split * a.pixels_per_split;
  const int end = a.pixels - begin < a.pixels_per_split ? a.pixels : begin + a.pixels_per_split;
  for (int j = begin + thread; j < end; j += kBlockThreads) {
    uint32_t image, pixel, p, q;
    a.out_pixels.divmod(static_cast<uint32_t>(j), image, pixel);
    a.out_width.divmod(pixel, p, q);
    const int ih = int(p) * sh.stride_h - sh.pad_h + r * sh.dilation_h;
    const int iw = int(q) * sh.stride_w - sh.pad_w + s * sh.dilation_w;
    if (ih < 0 || ih >= sh.in_h || iw < 0 || iw >= sh.in_w) continue;
    const Vector<T, kVec> g =
        load_elements<T, kVec>(grad_output, conv_offset(image, channel, p, q, sh.channels, sh.out_h, sh.out_w, kCL));
    const Vector<T, kVec> x =
        load_elements<T, kVec>(input, conv_offset(image, channel, ih, iw, sh.channels, sh.in_h, sh.in_w, kCL));
    DLK_UNROLL
    for (int v = 0; v < kVec; ++v) {
      acc[v] = fused_multiply_add(to_accumulate(g.val[v]), to_accumulate(x.val[v]), acc[v]);
    }
  }
}

// Block (channel vector blockIdx.x, tap blockIdx.y, split blockIdx.z); the block's sums are folded
// by a fixed tree, so the result does not depend on scheduling.
template <typename T, bool kCL, int kVec>
__global__ void __launch_bounds__(kBlockThreads)
    depthwise_wgrad_kernel(const __grid_constant__ DepthwiseWgradArgs args) {
  using Acc = AccumulateType<T>;
  __shared__ Acc sums[kBlockThreads][kVec];
  const int thread = static_cast<int>(threadIdx.x);
  const int channel = static_cast<int>(blockIdx.x) * kVec, tap = static_cast<int>(blockIdx.y);
  const int r = tap / args.shape.kernel_w, s = tap % args.shape.kernel_w;
  Acc acc[kVec];
  DLK_UNROLL
  for (int v = 0; v < kVec; ++v) acc[v] = Acc(0);
  depthwise_wgrad_accumulate<T, kCL, kVec>(args, channel, r, s, static_cast<int>(blockIdx.z), thread, acc);
  DLK_UNROLL
  for (int v = 0; v < kVec; ++v) sums[thread][v] = acc[v];
  __syncthreads();
  for (int stride = kBlockThreads / 2; stride > 0; stride /= 2) {
    if (thread < stride) {
      DLK_UNROLL
      for (int v = 0; v < kVec; ++v) sums[thread][v] += sums[thread + stride][v];
    }
    __syncthreads();
  }
  if (thread != 0) return;
  const int taps = args.shape.kernel_h * args.shape.kernel_w;
  DLK_UNROLL
  for (int v = 0; v < kVec; ++v) {
    const int64_t index = int64_t(channel + v) * taps + tap;
    if (args.partials != nullptr) {
      static_cast<Acc*>(args.partials)[(args.first_slot + blockIdx.z) * args.slot_elements + index] = sums[0][v];
    } else {
      static_cast<T*>(args.grad_weight)[index] = from_accumulate<T>(sums[0][v]);
    }
  }
}

template <typename T, bool kCL, int kVec>
struct DepthwiseWgradConfig {};

template <typename T, bool kCL, int kVec>
Status launch_depthwise_wgrad(DepthwiseWgradConfig<T, kCL, kVec>, const DepthwiseWgradArgs& a, dim3 grid,
                              cudaStream_t stream) {
  depthwise_wgrad_kernel<T, kCL, kVec><<<grid, kBlockThreads, 0, stream>>>(a);
  return check_launch();
}

struct DepthwiseWgradPlan {
  int vec = 1;
  int64_t images = 1, launches = 1, splits = 1, pixels_per_split = 0;
  int64_t slots() const { return launches * splits; }
};

template <typename T>
DepthwiseWgradPlan plan_depthwise_wgrad(const Conv2dWgradParams& p) {
  DepthwiseWgradPlan plan;
  plan.vec = depthwise_vector<T>(p, {p.grad_output, p.input});
  const int64_t pixels = p.out_h * p.out_w;
  plan.images = reduction_images(p);
  if (plan.images == 0) return plan;
  plan.launches = std::max<int64_t>(1, ceil_div(p.batch, plan.images));
  const int64_t launch_pixels = plan.images * pixels;
  const int64_t columns = p.in_channels / plan.vec * p.kernel_h * p.kernel_w;
  const int64_t wanted = ceil_div(sm_count() * kDepthwiseBlocksPerSM, columns);
  const int64_t useful = std::max<int64_t>(1, launch_pixels / (kBlockThreads * kMinPixelsPerThread));
  plan.splits = std::max<int64_t>(1, std::min({wanted, useful, int64_t(65535)}));
  plan.pixels_per_split = ceil_div(launch_pixels, plan.splits);
  return plan;
}

// launch(DepthwiseWgradConfig<...>, const DepthwiseWgradArgs&, dim3 grid) -> Status, once per batch
// chunk, then reduce(partials, slots, numel, grad_weight) -> Status when there are several slots.
template <typename T, class Launch, class Reduce>
Status depthwise_wgrad(const Conv2dWgradParams& p, void* workspace, size_t workspace_bytes, Launch&& launch,
                       Reduce&& reduce) {
  using Acc = AccumulateType<T>;
  const DepthwiseWgradPlan plan = plan_depthwise_wgrad<T>(p);
  if (plan.images == 0) return Status::kInvalidArgument;
  const bool direct = plan.slots() == 1;
  const int64_t numel = weight_elements(p);
  if (!direct && (workspace == nullptr || workspace_bytes < size_t(plan.slots()) * size_t(numel) * sizeof(Acc))) {
    return Status::kInvalidArgument;
  }
  DepthwiseWgradArgs a;
  a.grad_weight = direct ? p.grad_weight : nullptr;
  a.partials = direct ? nullptr : workspace;
  a.slot_elements = numel;
  a.out_pixels = divider(p.out_h * p.out_w);
  a.out_width = divider(p.out_w);
  const dim3 grid(static_cast<unsigned>(p.in_channels / plan.vec), static_cast<unsigned>(p.kernel_h * p.kernel_w),
                  static_cast<unsigned>(plan.splits));
  if (grid.y > 65535) return Status::kInvalidArgument;
  a.shape = conv_shape(p);
  for (int64_t chunk = 0; chunk < plan.launches; ++chunk) {
    const int64_t first = chunk * plan.images, count = std::max<int64_t>(0, std::min(plan.images, p.batch - first));
    a.pixels = static_cast<int>(count * p.out_h * p.out_w);
    a.pixels_per_split = static_cast<int>(plan.pixels_per_split);
    a.grad_output = static_cast<const T*>(p.grad_output) + first * a.shape.out_image;
    a.input = static_cast<const T*>(p.input) + first * a.shape.in_image;
    a.first_slot = chunk * plan.splits;
    Status status;
    if (p.channels_last && plan.vec > 1) status = launch(DepthwiseWgradConfig<T, true, kChunkElems<T>>{}, a, grid);
    else if (p.channels_last) status = launch(DepthwiseWgradConfig<T, true, 1>{}, a, grid);
    else status = launch(DepthwiseWgradConfig<T, false, 1>{}, a, grid);
    if (status != Status::kOk) return status;
  }
  if (direct) return Status::kOk;
  return reduce(workspace, plan.slots(), numel, p.grad_weight);
}

// Kernel launches on `stream` for the planners' callbacks.
template <typename T>
Status launch_reduce_partials(const void* partials, int64_t slots, int64_t numel, void* grad_weight,
                              cudaStream_t stream) {
  const int64_t blocks = std::min<int64_t>(ceil_div(numel, kBlockThreads), sm_count() * kDepthwiseBlocksPerSM);
  reduce_partials_kernel<T><<<static_cast<unsigned>(blocks), kBlockThreads, 0, stream>>>(
      static_cast<const AccumulateType<T>*>(partials), slots, numel, static_cast<T*>(grad_weight));
  return check_launch();
}

}  // namespace
}  // namespace conv

Status conv2d_forward_cuda(const Conv2dFwdParams& p, DType dtype, cudaStream_t stream) {
  const Status args = conv::check_common(p, dtype);
  if (args != Status::kOk) return args;
  if (conv::output_elements(p) == 0) return Status::kOk;
  if (p.weight == nullptr || p.output == nullptr || (conv::input_elements(p) > 0 && p.input == nullptr)) {
    return Status::kInvalidArgument;
  }
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    if (conv::is_depthwise(p)) {
      conv::DepthwiseArgs a;
      a.source = p.input;
      a.weight = p.weight;
      a.bias = p.bias;
      a.residual = p.residual;
      a.activation = p.activation;
      a.negative_slope = p.negative_slope;
      a.destination = p.output;
      const int vec = conv::depthwise_vector<T>(p, {p.input, p.output, p.residual});
      return conv::depthwise_direct<T, false>(
          p, a, vec, [&](auto config, const conv::DepthwiseArgs& da, unsigned blocks) {
            return conv::launch_depthwise(config, da, blocks, stream);
          });
    }
    return conv::forward_gemm<T>(p, [&](const conv::ForwardArgs& a, const conv::GemmChoice& c, dim3 grid) {
      return conv::launch_forward_gemm<T>(a, c, grid, stream);
    });
  });
}

Status conv2d_backward_input_cuda(const Conv2dDgradParams& p, DType dtype, cudaStream_t stream) {
  const Status args = conv::check_common(p, dtype);
  if (args != Status::kOk) return args;
  if (conv::input_elements(p) == 0) return Status::kOk;
  if (p.weight == nullptr || p.grad_input == nullptr || (conv::output_elements(p) > 0 && p.grad_output == nullptr)) {
    return Status::kInvalidArgument;
  }
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    if (conv::is_depthwise(p)) {
      conv::DepthwiseArgs a;
      a.source = p.grad_output;
      a.weight = p.weight;
      a.destination = p.grad_input;
      const int vec = conv::depthwise_vector<T>(p, {p.grad_output, p.grad_input});
      return conv::depthwise_direct<T, true>(
          p, a, vec, [&](auto config, const conv::DepthwiseArgs& da, unsigned blocks) {
            return conv::launch_depthwise(config, da, blocks, stream);
          });
    }
    return conv::dgrad_gemm<T>(p, [&](const conv::DgradArgs& a, const conv::GemmChoice& c, dim3 grid) {
      return conv::launch_dgrad_gemm<T>(a, c, grid, stream);
    });
  });
}

size_t conv2d_backward_weight_workspace_bytes(const Conv2dWgradParams& p, DType dtype) {
  if (conv::check_common(p, dtype) != Status::kOk || conv::weight_elements(p) == 0) return 0;
  size_t bytes = 0;
  dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    using Acc = AccumulateType<T>;
    if (conv::is_depthwise(p)) {
      const conv::DepthwiseWgradPlan plan = conv::plan_depthwise_wgrad<T>(p);
      if (plan.slots() > 1) bytes = size_t(plan.slots()) * size_t(conv::weight_elements(p)) * sizeof(Acc);
    } else {
      bytes = conv::wgrad_gemm_workspace_bytes<T>(conv::plan_wgrad_gemm<T>(p), p);
    }
    return Status::kOk;
  });
  return bytes;
}

Status conv2d_backward_weight_cuda(const Conv2dWgradParams& p, DType dtype, void* workspace, size_t workspace_bytes,
                                   cudaStream_t stream) {
  const Status args = conv::check_common(p, dtype);
  if (args != Status::kOk) return args;
  if (conv::weight_elements(p) == 0) return Status::kOk;
  const bool has_pixels = conv::output_elements(p) > 0;
  if (p.grad_weight == nullptr || (has_pixels && (p.grad_output == nullptr || p.input == nullptr))) {
    return Status::kInvalidArgument;
  }
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    const auto reduce = [&](const void* partials, int64_t slots, int64_t numel, void* grad_weight) {
      return conv::launch_reduce_partials<T>(partials, slots, numel, grad_weight, stream);
    };
    if (conv::is_depthwise(p)) {
      return conv::depthwise_wgrad<T>(
          p, workspace, workspace_bytes,
          [&](auto config, const conv::DepthwiseWgradArgs& a, dim3 grid) {
            return conv::launch_depthwise_wgrad(config, a, grid, stream);
          },
          reduce);
    }
    return conv::wgrad_gemm<T>(
        p, workspace, workspace_bytes,
        [&](const conv::WgradArgs& a, const conv::GemmChoice& c, dim3 grid) {
          return conv::launch_wgrad_gemm<T>(a, c, grid, stream);
        },
        reduce);
  });
}

}  // namespace dlk
