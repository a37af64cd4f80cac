// CUDA Winograd convolution F(m x m, 3 x 3), m = 2 or 4 (transforms from dlk/winograd.h):
//   U = G g G^T per (k, c)          winograd_transform_weight_cuda, once per weight
//   V = B^T d B per (tile, c)       kernel 1 below, into the workspace
//   M[xi] = V[xi] U[xi]^T           kernel 2: alpha^2 GEMMs (tiles x C) . (C x K) ...
//   Y = A^T M A, + bias + residual, act  ... with the output transform and epilogue fused in.
//
// Why the input transform is a separate pass: the GEMM kernel walks the alpha^2 positions one after
// the other and needs V[xi] for a block of tiles at each of them. Transforming in-kernel would mean
// either recomputing V for every xi or keeping all alpha^2 GEMM accumulators live at once, which
// limits a block to ~32x64 (tiles x K) and makes it starve on U traffic. Writing V costs
// alpha^2 / m^2 times the input (4x for F(2), 2.25x for F(4)) in DRAM traffic, which matters only
// for the layers with few channels.
//
// Why M never leaves the GEMM kernel: a block owns a (tiles x K) block for *every* xi. The output
// transform is linear, Y[o] = sum over xi of coef[o][xi] * M[xi] (coef = A^T e_xi A from
// winograd_output_tile, entries 0, +-1, +-2, ...), so after the reduction over C for one xi each
// thread folds its M fragment into m^2 running output accumulators and starts the next xi from zero.
// Registers hold (1 + m^2) accumulators per (tile, k): 5 for F(2) and 17 for F(4), which is what
// sizes the block tiles below (H100/A100: 64K 32-bit registers per SM, one 256-thread block each).
//
// GEMM operands are the "TN" case: V (alpha^2, tiles, Cp) and U (alpha^2, K, Cp) both have the
// reduction dimension contiguous. Rows are padded to Cp = a multiple of 8 channels with zeros (V by
// kernel 1; U by a copy when C is not a multiple of 8) so every row is a whole number of 16-byte
// cp.async copies. Stages hold 128 bytes of the reduction per row, multi-buffered with cp.async.
// Math per dtype:
//   fp16 / bf16   mma.sync m16n8k16, fp32 accumulate, fragments from ldmatrix
//   fp32 + TF32   mma.sync m16n8k8 (operands rounded to TF32 with cvt.rna), same smem layout
//   fp32, fp64    FMA on the same smem tiles, with threads owning the mma accumulator layout so
//                 the output transform and epilogue are shared
#include "conv2d_winograd.cuh"

#include "common.cuh"
#include "tensor_core.cuh"

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace dlk {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;
constexpr int kWarps = kThreads / kWarpSize;
// Elementwise kernels (input / weight transforms): a few waves of resident blocks in a grid-stride loop.
constexpr int kElementwiseBlocksPerSM = 2048 / kThreads;
constexpr int kElementwiseWaves = 4;

// GEMM staging: every operand row is copied 16 bytes at a time, 128 bytes of the reduction per
// pipeline stage. Rows are 144 bytes apart in shared memory: 144 = 9 x 16, so eight consecutive rows
// start in eight different 16-byte bank groups and each 8x16-byte ldmatrix phase (and each FMA-path
// vector load) is conflict-free without a swizzle.
constexpr int kCopyBytes = 16;
constexpr int kChunkBytes = 128;
constexpr int kCopiesPerRow = kChunkBytes / kCopyBytes;
constexpr int kSmemRowBytes = kChunkBytes + kCopyBytes;
// Three chunks in flight while one is consumed: with one block per SM (register bound) the copies
// must cover the L2/DRAM latency on their own.
constexpr int kStages = 4;
// V and U rows hold a multiple of this many channels (16 bytes even in fp16).
constexpr int kChannelMultiple = 8;
// One k-step of the tensor-core paths: 32 bytes of the reduction (k16 in fp16/bf16, k8 in TF32).
constexpr int kMmaStepBytes = 32;

DLK_HOST_DEVICE int64_t padded_channels(int64_t channels) {
  return (channels + kChannelMultiple - 1) / kChannelMultiple * kChannelMultiple;
}

// Block and warp tiles of the GEMM kernel, in tiles (GEMM rows) x output channels (GEMM columns).
// Each thread holds (1 + Tile^2) * kBlockTiles * kBlockK / kThreads accumulators:
//   tensor cores, F(2): 128 x 64 -> 160 fp32 registers; F(4): 64 x 32 -> 136.
//   FMA path (fp32 exact, fp64): 64 x 64 and 32 x 32, half as many, because fp64 takes two registers.
// kNarrow (tensor-core F(2) only) halves the block's tiles, 80 registers and two blocks per SM, for
// problems whose wide grid would not fill the GPU once (the 14x14 and 7x7 layers at batch 32).
// Warps tile the block 4 x 2 (wide tensor-core tiles) or 2 x 4; a warp's tile is a grid of 16 x 8
// fragments.
template <int Tile, typename T, bool kTensorCores, bool kNarrow>
struct GemmShape {
  static_assert(Tile == 2 || Tile == 4, "Winograd tile must be 2 or 4");
  static_assert(!kNarrow || (kTensorCores && Tile == 2), "only the tensor-core F(2) tiling has a narrow form");
  static constexpr int kBlockTiles = (kTensorCores ? (Tile == 2 ? 128 : 64) : (Tile == 2 ? 64 : 32)) / (kNarrow ? 2 : 1);
  static constexpr int kBlockK = Tile == 2 ? 64 : 32;
  static constexpr int kWarpsM = kTensorCores && !kNarrow ? 4 : 2;
  static constexpr int kMinBlocksPerSM = kNarrow ? 2 : 1;
  static constexpr int kWarpsN = kWarps / kWarpsM;
  static constexpr int kWarpTiles = kBlockTiles / kWarpsM;
  static constexpr int kWarpK = kBlockK / kWarpsN;
  static constexpr int kFragsM = kWarpTiles / 16;
  static constexpr int kFragsN = kWarpK / 8;
  static constexpr int kRows = kBlockTiles + kBlockK;  // V rows, then U rows, per stage
  static constexpr int kStageBytes = kRows * kSmemRowBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static constexpr int kCopiesPerThread = kRows * kCopiesPerRow / kThreads;
  static constexpr int kChunkElements = kChunkBytes / int(sizeof(T));
  static_assert(kRows * kCopiesPerRow % kThreads == 0, "every thread issues the same number of copies");
  static_assert(kWarpTiles % 16 == 0 && kWarpK % 8 == 0, "warp tiles are whole 16x8 fragments");
  static_assert(!kTensorCores || kFragsN % 2 == 0, "B fragments are loaded two n8 tiles at a time");
};

// ---------------------------------------------------------------------------------------------
// Index helpers, host-callable so that a host harness can check them against torch.

struct TileCoord {
  int64_t n, th, tw;
};

// GEMM row t = (n * tiles_h + th) * tiles_w + tw.
DLK_HOST_DEVICE TileCoord tile_coordinates(int64_t t, int64_t tiles_h, int64_t tiles_w) {
  const int64_t per_image = tiles_h * tiles_w;
  const int64_t n = t / per_image, rest = t - n * per_image;
  const int64_t th = rest / tiles_w;
  return {n, th, rest - th * tiles_w};
}

// Accumulator element e (0..3) of fragment (i, j) of a warp tile, relative to the warp's origin: the
// m16n8 C/D layout of mma.sync (c0, c1: row groupID, columns 2*tig, +1; c2, c3: row groupID + 8).
DLK_HOST_DEVICE int fragment_row(int lane, int i, int e) { return i * 16 + (lane >> 2) + (e >> 1) * 8; }
DLK_HOST_DEVICE int fragment_col(int lane, int j, int e) { return j * 8 + (lane & 3) * 2 + (e & 1); }

// Byte offset (from the warp's first row) each lane passes to ldmatrix.x4 for k-step `step`. Lanes
// 8q..8q+7 address the eight rows of matrix q, whose fragment lands in register q.
// A, fragment row i (16 rows x 32 bytes): matrices (rows 0-7, bytes 0-15), (rows 8-15, 0-15),
// (rows 0-7, 16-31), (rows 8-15, 16-31) = a0..a3 of m16n8k16, and of m16n8k8 TF32, whose 4-byte
// columns make the same byte pattern.
DLK_HOST_DEVICE int ldmatrix_a_offset(int lane, int i, int step) {
  return (i * 16 + (lane & 15)) * kSmemRowBytes + step * kMmaStepBytes + (lane >> 4) * 16;
}
// B, fragment columns j and j + 1 (2 x 8 rows of U x 32 bytes): matrices (n 0-7, bytes 0-15),
// (n 0-7, 16-31), (n 8-15, 0-15), (n 8-15, 16-31) = b0, b1 of column fragment j, then of j + 1.
DLK_HOST_DEVICE int ldmatrix_b_offset(int lane, int j, int step) {
  return (j * 8 + (lane & 7) + ((lane >> 4) << 3)) * kSmemRowBytes + step * kMmaStepBytes + ((lane >> 3) & 1) * 16;
}

// Arguments of the GEMM + output transform kernel. V and U rows are padded_channels long.
struct GemmArgs {
  const void* transformed_input = nullptr;   // V (alpha^2, tiles, padded_channels)
  const void* transformed_weight = nullptr;  // U (alpha^2, out_channels, padded_channels)
  const void* bias = nullptr;
  const void* residual = nullptr;
  void* output = nullptr;
  int64_t tiles = 0, out_channels = 0, padded_channels = 0;
  int64_t tiles_h = 0, tiles_w = 0, out_h = 0, out_w = 0;
  int64_t k_blocks = 0;
  int chunks_per_position = 0;  // pipeline stages per xi: ceil(padded_channels / chunk elements)
  bool activation = false;  // LeakyReLU(negative_slope), slope 0 = ReLU (dlk/activation.h)
  double negative_slope = 0;
  bool channels_last = false;
  bool paired_stores = false;  // channels_last, K even, output/residual aligned: (k, k+1) as one store
};

// The 16-byte copy number `copy` (0 .. kRows * kCopiesPerRow) of pipeline step (xi, c0): where it
// goes in the stage and which element of V or U it reads. Copies beyond the tiles, K or the padded
// row are zero-filled (`valid` false).
struct StageCopy {
  int smem_offset;      // bytes from the stage's start
  bool from_weight;     // U row, else V row
  int64_t element;      // element offset into V or U
  bool valid;
};

template <class Shape, typename T>
DLK_HOST_DEVICE StageCopy stage_copy(const GemmArgs& a, int copy, int64_t tile0, int64_t k0, int xi, int64_t c0) {
  const int row = copy / kCopiesPerRow, byte = (copy % kCopiesPerRow) * kCopyBytes;
  const int64_t channel = c0 + byte / int(sizeof(T));
  StageCopy s;
  s.smem_offset = row * kSmemRowBytes + byte;
  s.from_weight = row >= Shape::kBlockTiles;
  const int64_t gemm_row = s.from_weight ? k0 + (row - Shape::kBlockTiles) : tile0 + row;
  const int64_t rows = s.from_weight ? a.out_channels : a.tiles;
  s.valid = gemm_row < rows && channel < a.padded_channels;
  s.element = (int64_t(xi) * rows + gemm_row) * a.padded_channels + channel;
  return s;
}

// Coefficients of M[position] in the m x m output tile: A^T e A for the unit matrix e at `position`.
template <int Tile, typename Acc>
DLK_HOST_DEVICE void output_coefficients(int position, Acc (&coefficient)[Tile * Tile]) {
  constexpr int kPoints = (Tile + 2) * (Tile + 2);
  Acc unit[kPoints];
  DLK_UNROLL
  for (int x = 0; x < kPoints; ++x) unit[x] = x == position ? Acc(1) : Acc(0);
  winograd_output_tile<Tile>(unit, coefficient);
}

// Folds one finished M fragment into the output accumulators. A zero coefficient skips the term, as
// the explicit sums of winograd_output_1d do, so an inf in M cannot turn into 0 * inf = NaN.
template <int Tile, typename Acc, int kCount>
DLK_HOST_DEVICE void accumulate_output_transform(int position, const Acc (&m)[kCount],
                                                 Acc (&y)[Tile * Tile][kCount]) {
  Acc coefficient[Tile * Tile];
  output_coefficients<Tile>(position, coefficient);
  DLK_UNROLL
  for (int o = 0; o < Tile * Tile; ++o) {
    if (coefficient[o] == Acc(0)) continue;
    DLK_UNROLL
    for (int x = 0; x < kCount; ++x) y[o][x] += coefficient[o] * m[x];
  }
}

// The fused activation; NaN propagates, as in torch.
template <typename Acc>
DLK_HOST_DEVICE Acc apply_activation(Acc v, const GemmArgs& a) {
  return activate(v, a.activation, Acc(a.negative_slope));
}

// Output channels k and k+1 (k + 1 may be past K) of output pixel (n, oh, ow): + bias + residual, activation.
template <typename T>
DLK_HOST_DEVICE void store_output_pair(const GemmArgs& a, int64_t n, int64_t oh, int64_t ow, int64_t k,
                                       AccumulateType<T> v0, AccumulateType<T> v1, AccumulateType<T> bias0,
                                       AccumulateType<T> bias1) {
  using Pair = Vector<T, 2>;
  const T* residual = static_cast<const T*>(a.residual);
  T* output = static_cast<T*>(a.output);
  const int64_t offset = conv_offset(n, k, oh, ow, a.out_channels, a.out_h, a.out_w, a.channels_last);
  v0 += bias0;
  v1 += bias1;
  if (a.paired_stores) {
    if (residual != nullptr) {
      const Pair r = *reinterpret_cast<const Pair*>(residual + offset);
      v0 += to_accumulate(r.val[0]);
      v1 += to_accumulate(r.val[1]);
    }
    const Pair result{{from_accumulate<T>(apply_activation(v0, a)), from_accumulate<T>(apply_activation(v1, a))}};
    *reinterpret_cast<Pair*>(output + offset) = result;
    return;
  }
  if (residual != nullptr) v0 += to_accumulate(residual[offset]);
  output[offset] = from_accumulate<T>(apply_activation(v0, a));
  if (k + 1 < a.out_channels) {
    const int64_t offset1 = conv_offset(n, k + 1, oh, ow, a.out_channels, a.out_h, a.out_w, a.channels_last);
    if (residual != nullptr) v1 += to_accumulate(residual[offset1]);
    output[offset1] = from_accumulate<T>(apply_activation(v1, a));
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 1: V[xi][t][c] = (B^T d B)[xi] for each tile t and channel c, rounded to T.

struct InputTransformArgs {
  const void* input = nullptr;
  void* transformed_input = nullptr;  // V (alpha^2, tiles, padded_channels)
  int64_t channels = 0, padded_channels = 0, in_h = 0, in_w = 0;
  int64_t tiles = 0, tiles_h = 0, tiles_w = 0;
  int pad_h = 0, pad_w = 0;
};

// Channels c0 .. c0 + kVec - 1 of tile t. Taps outside the input, and channels in the padding
// (c0 >= channels; kVec divides the channel count), are zero.
template <typename T, int Tile, bool kChannelsLast, int kVec>
DLK_HOST_DEVICE void transform_input_item(const InputTransformArgs& a, int64_t t, int64_t c0) {
  using Acc = AccumulateType<T>;
  using Pack = Vector<T, kVec>;
  constexpr int kAlpha = Tile + 2, kPoints = kAlpha * kAlpha;
  const T* input = static_cast<const T*>(a.input);
  T* transformed = static_cast<T*>(a.transformed_input);
  const TileCoord tile = tile_coordinates(t, a.tiles_h, a.tiles_w);
  const int64_t row0 = tile.th * Tile - a.pad_h, col0 = tile.tw * Tile - a.pad_w;
  const bool real_channels = c0 < a.channels;

  Pack zero;
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) zero.val[j] = from_accumulate<T>(Acc(0));
  // All loads first, then the arithmetic: alpha^2 independent loads in flight per thread.
  Pack patch[kPoints];
  DLK_UNROLL
  for (int r = 0; r < kAlpha; ++r) {
    const int64_t ih = row0 + r;
    DLK_UNROLL
    for (int s = 0; s < kAlpha; ++s) {
      const int64_t iw = col0 + s;
      const bool inside = real_channels && ih >= 0 && ih < a.in_h && iw >= 0 && iw < a.in_w;
      patch[r * kAlpha + s] =
          inside ? *reinterpret_cast<const Pack*>(
                       input + conv_offset(tile.n, c0, ih, iw, a.channels, a.in_h, a.in_w, kChannelsLast))
                 : zero;
    }
  }
  Pack result[kPoints];
  DLK_UNROLL
  for (int j = 0; j < kVec; ++j) {
    Acc d[kPoints], v[kPoints];
    DLK_UNROLL
    for (int x = 0; x < kPoints; ++x) d[x] = to_accumulate(patch[x].val[j]);
    winograd_input_tile<Tile>(d, v);
    DLK_UNROLL
    for (int x = 0; x < kPoints; ++x) result[x].val[j] = from_accumulate<T>(v[x]);
  }
  DLK_UNROLL
  for (int x = 0; x < kPoints; ++x) {
    *reinterpret_cast<Pack*>(transformed + (int64_t(x) * a.tiles + t) * a.padded_channels + c0) = result[x];
  }
}

// Work items are (tile, channel vector) with the channel vector fastest: in channels_last a warp
// reads and writes whole runs of channels; in NCHW the writes stay contiguous and the reads gather
// (each thread reads an alpha x alpha window of its own plane, served by L1/L2 across the alpha^2 loads).
template <typename T, int Tile, bool kChannelsLast, int kVec, typename IndexT>
__global__ void __launch_bounds__(kThreads)
    winograd_input_transform_kernel(const InputTransformArgs a, const IndexT total, const Divider<IndexT> vectors) {
  const IndexT grid_stride = static_cast<IndexT>(gridDim.x) * blockDim.x;
  for (IndexT i = static_cast<IndexT>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += grid_stride) {
    IndexT t, vector;
    vectors.divmod(i, t, vector);
    transform_input_item<T, Tile, kChannelsLast, kVec>(a, static_cast<int64_t>(t), static_cast<int64_t>(vector) * kVec);
  }
}

// ---------------------------------------------------------------------------------------------
// Weight transform and the padded copy of U.

template <typename T, int Tile>
DLK_HOST_DEVICE void transform_weight_item(const WinogradWeightParams& p, int64_t k, int64_t c) {
  using Acc = AccumulateType<T>;
  constexpr int kAlpha = Tile + 2;
  const T* weight = static_cast<const T*>(p.weight);
  T* transformed = static_cast<T*>(p.transformed);
  Acc g[9], u[kAlpha * kAlpha];
  DLK_UNROLL
  for (int r = 0; r < 3; ++r) {
    DLK_UNROLL
    for (int s = 0; s < 3; ++s) {
      g[r * 3 + s] = to_accumulate(weight[conv_weight_offset(k, c, r, s, p.in_channels, 3, 3, p.channels_last)]);
    }
  }
  winograd_weight_tile<Tile>(g, u);
  const int64_t plane = p.out_channels * p.in_channels;
  DLK_UNROLL
  for (int xi = 0; xi < kAlpha * kAlpha; ++xi) {
    transformed[xi * plane + k * p.in_channels + c] = from_accumulate<T>(u[xi]);
  }
}

// One thread per (k, c), c fastest: the alpha^2 stores of a warp are contiguous runs of U.
template <typename T, int Tile>
__global__ void __launch_bounds__(kThreads) winograd_weight_transform_kernel(const WinogradWeightParams p) {
  const int64_t total = p.out_channels * p.in_channels;
  const int64_t grid_stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += grid_stride) {
    transform_weight_item<T, Tile>(p, i / p.in_channels, i % p.in_channels);
  }
}

// U (rows, channels) -> (rows, padded_channels) with zeros after each row: the GEMM reads 16-byte
// copies, which a row length that is not a multiple of 8 channels (or a misaligned U) would break.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    pad_weight_rows_kernel(const T* __restrict__ source, T* __restrict__ padded, int64_t rows, int64_t channels,
                           int64_t padded_channels) {
  const int64_t total = rows * padded_channels;
  const int64_t grid_stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += grid_stride) {
    const int64_t row = i / padded_channels, c = i % padded_channels;
    padded[i] = c < channels ? source[row * channels + c] : from_accumulate<T>(AccumulateType<T>(0));
  }
}

// ---------------------------------------------------------------------------------------------
// Kernel 2: the alpha^2 GEMMs, output transform and epilogue.

// PTX wrappers (cp.async, ldmatrix, mma.sync, cvt.rna.tf32): tensor_core.cuh. The stage copies are
// cp.async.cg (L2 only): each operand byte is used once per block.
static_assert(kCopyBytes == 16, "stage copies are cp_async_16 copies");

// One stage (128 bytes of the reduction) on tensor cores: per 32-byte k-step, ldmatrix the warp's
// A fragments (V rows) and B fragments (U rows), then every fragment pair's mma.
template <class Shape, typename T>
__device__ __forceinline__ void mma_stage(uint32_t a_smem, uint32_t b_smem, int lane,
                                          float (&acc)[Shape::kFragsM][Shape::kFragsN][4]) {
  DLK_UNROLL
  for (int step = 0; step < kChunkBytes / kMmaStepBytes; ++step) {
    uint32_t a[Shape::kFragsM][4], b[Shape::kFragsN][2];
    DLK_UNROLL
    for (int i = 0; i < Shape::kFragsM; ++i) {
      ldmatrix_x4(a[i], a_smem + ldmatrix_a_offset(lane, i, step));
    }
    DLK_UNROLL
    for (int j = 0; j < Shape::kFragsN; j += 2) {
      uint32_t pair[4];
      ldmatrix_x4(pair, b_smem + ldmatrix_b_offset(lane, j, step));
      b[j][0] = pair[0];
      b[j][1] = pair[1];
      b[j + 1][0] = pair[2];
      b[j + 1][1] = pair[3];
    }
    if constexpr (std::is_same_v<T, float>) {
      DLK_UNROLL
      for (int i = 0; i < Shape::kFragsM; ++i) {
        DLK_UNROLL
        for (int r = 0; r < 4; ++r) a[i][r] = cvt_rna_tf32(a[i][r]);
      }
      DLK_UNROLL
      for (int j = 0; j < Shape::kFragsN; ++j) {
        b[j][0] = cvt_rna_tf32(b[j][0]);
        b[j][1] = cvt_rna_tf32(b[j][1]);
      }
    }
    DLK_UNROLL
    for (int i = 0; i < Shape::kFragsM; ++i) {
      DLK_UNROLL
      for (int j = 0; j < Shape::kFragsN; ++j) mma_sync(acc[i][j], a[i], b[j], TypeTag<T>{});
    }
  }
}

// One stage on the FMA path. Each thread owns the elements the mma C layout would give it (rows
// groupID and groupID + 8 of each 16-row fragment, columns 2*tig and 2*tig + 1 of each 8-column one,
// see fragment_row / fragment_col) and reads its rows 16 bytes of the reduction at a time.
// Host-callable, like the epilogue below, so the harness runs this very code.
template <class Shape, typename T>
DLK_HOST_DEVICE void fma_stage(const unsigned char* a_tile, const unsigned char* b_tile, int lane,
                               T (&acc)[Shape::kFragsM][Shape::kFragsN][4]) {
  constexpr int kVec = kCopyBytes / int(sizeof(T));
  using Pack = Vector<T, kVec>;
  DLK_UNROLL
  for (int byte = 0; byte < kChunkBytes; byte += kCopyBytes) {
    // a[i][h]: row of elements 2h, 2h + 1 of fragment row i; b[j][h]: column of element h (and h + 2).
    Pack a[Shape::kFragsM][2], b[Shape::kFragsN][2];
    DLK_UNROLL
    for (int i = 0; i < Shape::kFragsM; ++i) {
      DLK_UNROLL
      for (int h = 0; h < 2; ++h) {
        a[i][h] = *reinterpret_cast<const Pack*>(a_tile + fragment_row(lane, i, 2 * h) * kSmemRowBytes + byte);
      }
    }
    DLK_UNROLL
    for (int j = 0; j < Shape::kFragsN; ++j) {
      DLK_UNROLL
      for (int h = 0; h < 2; ++h) {
        b[j][h] = *reinterpret_cast<const Pack*>(b_tile + fragment_col(lane, j, h) * kSmemRowBytes + byte);
      }
    }
    DLK_UNROLL
    for (int x = 0; x < kVec; ++x) {
      DLK_UNROLL
      for (int i = 0; i < Shape::kFragsM; ++i) {
        DLK_UNROLL
        for (int j = 0; j < Shape::kFragsN; ++j) {
          DLK_UNROLL
          for (int e = 0; e < 4; ++e) acc[i][j][e] += a[i][e >> 1].val[x] * b[j][e & 1].val[x];
        }
      }
    }
  }
}

// Epilogue straight from registers for one thread: accumulator x is one (tile, k) pair, i.e. m x m
// output pixels of channel k, and x + 1 is channel k + 1 of the same pixels.
template <class Shape, typename T, int Tile, int kAccumulators>
DLK_HOST_DEVICE void store_outputs(const GemmArgs& a, int64_t tile0, int64_t k0, int warp_row, int warp_col, int lane,
                                   const AccumulateType<T> (&y)[Tile * Tile][kAccumulators]) {
  using Acc = AccumulateType<T>;
  const T* bias = static_cast<const T*>(a.bias);
  DLK_UNROLL
  for (int i = 0; i < Shape::kFragsM; ++i) {
    DLK_UNROLL
    for (int half = 0; half < 2; ++half) {
      const int64_t t = tile0 + warp_row + fragment_row(lane, i, half * 2);
      if (t >= a.tiles) continue;
      const TileCoord tile = tile_coordinates(t, a.tiles_h, a.tiles_w);
      DLK_UNROLL
      for (int j = 0; j < Shape::kFragsN; ++j) {
        const int64_t k = k0 + warp_col + fragment_col(lane, j, 0);
        if (k >= a.out_channels) continue;
        const Acc bias0 = bias != nullptr ? to_accumulate(bias[k]) : Acc(0);
        const Acc bias1 = bias != nullptr && k + 1 < a.out_channels ? to_accumulate(bias[k + 1]) : Acc(0);
        const int x = (i * Shape::kFragsN + j) * 4 + half * 2;
        DLK_UNROLL
        for (int pi = 0; pi < Tile; ++pi) {
          const int64_t oh = tile.th * Tile + pi;
          if (oh >= a.out_h) continue;
          DLK_UNROLL
          for (int pj = 0; pj < Tile; ++pj) {
            const int64_t ow = tile.tw * Tile + pj;
            if (ow >= a.out_w) continue;
            store_output_pair<T>(a, tile.n, oh, ow, k, y[pi * Tile + pj][x], y[pi * Tile + pj][x + 1], bias0, bias1);
          }
        }
      }
    }
  }
}

// Block b owns GEMM rows (tiles) [tile0, tile0 + kBlockTiles) and columns (output channels)
// [k0, k0 + kBlockK) for every xi. Consecutive blocks share their tile block (K blocks fastest) so
// the V rows they all read are fetched from DRAM once and then hit in L2.
// Pipeline steps run over (xi, channel chunk) with the chunk fastest, so the cp.async pipeline flows
// across xi boundaries; after the last chunk of an xi the M fragments are folded into the output
// accumulators.
template <typename T, int Tile, bool kTensorCores, bool kNarrow>
__global__ void __launch_bounds__(kThreads, (GemmShape<Tile, T, kTensorCores, kNarrow>::kMinBlocksPerSM))
    winograd_gemm_kernel(const GemmArgs a) {
  using Shape = GemmShape<Tile, T, kTensorCores, kNarrow>;
  using Acc = AccumulateType<T>;
  constexpr int kOutputs = Tile * Tile;
  constexpr int kAccumulators = Shape::kFragsM * Shape::kFragsN * 4;
  extern __shared__ __align__(16) unsigned char smem[];

  const int thread = threadIdx.x, lane = thread % kWarpSize, warp = thread / kWarpSize;
  const int warp_row = (warp % Shape::kWarpsM) * Shape::kWarpTiles;
  const int warp_col = (warp / Shape::kWarpsM) * Shape::kWarpK;
  const int64_t tile0 = int64_t(blockIdx.x) / a.k_blocks * Shape::kBlockTiles;
  const int64_t k0 = int64_t(blockIdx.x) % a.k_blocks * Shape::kBlockK;
  const T* transformed_input = static_cast<const T*>(a.transformed_input);
  const T* transformed_weight = static_cast<const T*>(a.transformed_weight);

  auto load_stage = [&](int step) {
    const int xi = step / a.chunks_per_position;
    const int64_t c0 = int64_t(step - xi * a.chunks_per_position) * Shape::kChunkElements;
    unsigned char* stage = smem + (step % kStages) * Shape::kStageBytes;
    DLK_UNROLL
    for (int j = 0; j < Shape::kCopiesPerThread; ++j) {
      const StageCopy s = stage_copy<Shape, T>(a, thread + j * kThreads, tile0, k0, xi, c0);
      const T* source = s.from_weight ? transformed_weight : transformed_input;
      cp_async_16(shared_address(stage + s.smem_offset), s.valid ? source + s.element : source, s.valid);
    }
  };

  // acc holds M[xi] for the warp's fragments; y[o] the output-transform sums for output pixel o.
  Acc acc[Shape::kFragsM][Shape::kFragsN][4];
  Acc y[kOutputs][kAccumulators];
  auto& flat_acc = reinterpret_cast<Acc(&)[kAccumulators]>(acc);
  DLK_UNROLL
  for (int x = 0; x < kAccumulators; ++x) {
    flat_acc[x] = Acc(0);
    DLK_UNROLL
    for (int o = 0; o < kOutputs; ++o) y[o][x] = Acc(0);
  }

  const int steps = (Tile + 2) * (Tile + 2) * a.chunks_per_position;
  DLK_UNROLL
  for (int step = 0; step < kStages - 1; ++step) {
    if (step < steps) load_stage(step);
    cp_async_commit();
  }
  int position = 0, chunk = 0;
  for (int step = 0; step < steps; ++step) {
    // Stage `step` has landed for this thread; the barrier makes every thread's copies visible and
    // guarantees that all warps are done with the stage the next copies overwrite (read at step - 1).
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if (step + kStages - 1 < steps) load_stage(step + kStages - 1);
    cp_async_commit();

    const unsigned char* stage = smem + (step % kStages) * Shape::kStageBytes;
    const unsigned char* a_tile = stage + warp_row * kSmemRowBytes;
    const unsigned char* b_tile = stage + (Shape::kBlockTiles + warp_col) * kSmemRowBytes;
    if constexpr (kTensorCores) {
      mma_stage<Shape, T>(shared_address(a_tile), shared_address(b_tile), lane, acc);
    } else {
      fma_stage<Shape, T>(a_tile, b_tile, lane, acc);
    }

    if (++chunk == a.chunks_per_position) {
      accumulate_output_transform<Tile>(position, flat_acc, y);
      DLK_UNROLL
      for (int x = 0; x < kAccumulators; ++x) flat_acc[x] = Acc(0);
      chunk = 0;
      ++position;
    }
  }
  cp_async_wait<0>();

  store_outputs<Shape, T, Tile>(a, tile0, k0, warp_row, warp_col, lane, y);
}

// ---------------------------------------------------------------------------------------------
// Host side.

unsigned elementwise_grid(int64_t work_items) {
  const int64_t blocks = (work_items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(
      std::min<int64_t>(blocks, int64_t(sm_count()) * kElementwiseBlocksPerSM * kElementwiseWaves));
}

template <typename Fn>
Status dispatch_tile(int tile, Fn&& fn) {
  if (tile == 2) return fn(std::integral_constant<int, 2>{});
  if (tile == 4) return fn(std::integral_constant<int, 4>{});
  return Status::kInvalidArgument;
}

size_t element_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}

bool forward_args_valid(const WinogradFwdParams& p) {
  return (p.tile == 2 || p.tile == 4) && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 &&
         p.dilation_h == 1 && p.dilation_w == 1 && p.groups == 1 && p.batch >= 0 && p.in_channels >= 0 &&
         p.in_h >= 0 && p.in_w >= 0 && p.out_channels >= 0 && p.out_h >= 0 && p.out_w >= 0;
}

// U can be read in place when its rows are whole 16-byte copies.
bool weight_needs_padding(const WinogradFwdParams& p) {
  return p.in_channels > 0 &&
         (p.in_channels % kChannelMultiple != 0 || !is_aligned(p.transformed_weight, kCopyBytes));
}

// Workspace: V, then (256-byte aligned) the padded copy of U when one is needed.
struct WorkspaceLayout {
  size_t input_bytes = 0, weight_offset = 0, weight_bytes = 0, total = 0;
};

WorkspaceLayout workspace_layout(const WinogradFwdParams& p, size_t element) {
  WorkspaceLayout w;
  const int64_t positions = int64_t(p.tile + 2) * (p.tile + 2);
  const int64_t tiles = p.batch * winograd_tiles(p.out_h, p.tile) * winograd_tiles(p.out_w, p.tile);
  const int64_t channels = padded_channels(p.in_channels);
  w.input_bytes = size_t(positions * tiles * channels) * element;
  if (weight_needs_padding(p)) {
    w.weight_offset = (w.input_bytes + 255) / 256 * 256;
    w.weight_bytes = size_t(positions * p.out_channels * channels) * element;
  }
  w.total = w.weight_bytes > 0 ? w.weight_offset + w.weight_bytes : w.input_bytes;
  return w;
}

template <typename T, int Tile>
Status launch_input_transform(const InputTransformArgs& a, bool channels_last, cudaStream_t stream) {
  // Two 16-bit channels per thread (4-byte accesses, 128 bytes per warp) in channels_last when the
  // channel count and pointer allow; one element otherwise.
  const bool pairs = channels_last && sizeof(T) == 2 && a.channels % 2 == 0 && is_aligned(a.input, 4);
  const int vec = pairs ? 2 : 1;
  const int64_t total = a.tiles * (a.padded_channels / vec);
  const unsigned grid = elementwise_grid(total);
  return dispatch_index_type(total <= INT32_MAX, [&](auto index_tag) {
    using IndexT = typename decltype(index_tag)::type;
    const Divider<IndexT> vectors(static_cast<IndexT>(a.padded_channels / vec));
    if constexpr (sizeof(T) == 2) {
      if (pairs) {
        winograd_input_transform_kernel<T, Tile, true, 2, IndexT>
            <<<grid, kThreads, 0, stream>>>(a, static_cast<IndexT>(total), vectors);
        return check_launch();
      }
    }
    if (channels_last) {
      winograd_input_transform_kernel<T, Tile, true, 1, IndexT>
          <<<grid, kThreads, 0, stream>>>(a, static_cast<IndexT>(total), vectors);
    } else {
      winograd_input_transform_kernel<T, Tile, false, 1, IndexT>
          <<<grid, kThreads, 0, stream>>>(a, static_cast<IndexT>(total), vectors);
    }
    return check_launch();
  });
}

template <typename T, int Tile, bool kTensorCores, bool kNarrow>
Status launch_gemm(GemmArgs a, cudaStream_t stream) {
  using Shape = GemmShape<Tile, T, kTensorCores, kNarrow>;
  a.chunks_per_position = static_cast<int>((a.padded_channels + Shape::kChunkElements - 1) / Shape::kChunkElements);
  a.k_blocks = (a.out_channels + Shape::kBlockK - 1) / Shape::kBlockK;
  const int64_t blocks = (a.tiles + Shape::kBlockTiles - 1) / Shape::kBlockTiles * a.k_blocks;
  if (blocks > INT32_MAX || int64_t(Tile + 2) * (Tile + 2) * a.chunks_per_position > INT32_MAX) {
    return Status::kInvalidArgument;
  }
  // Operands reach shared memory through L2 only (cp.async.cg), so L1 may shrink to the smallest
  // carveout: that is what lets two narrow blocks (2 x 72 KB) share an SM.
  const auto kernel = winograd_gemm_kernel<T, Tile, kTensorCores, kNarrow>;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Shape::kSmemBytes) != cudaSuccess ||
      cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) !=
          cudaSuccess) {
    clear_query_error();
    return Status::kLaunchFailed;
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, Shape::kSmemBytes, stream>>>(a);
  return check_launch();
}

// Tensor-core F(2) in fp16 / bf16: the wide tiling unless its grid is less than one block per SM.
// A narrow grid then has twice the blocks at two per SM, so each SM gets work and nothing waits for
// a second wave. (A first guess, to be tuned against measurements; TF32, not a speed target, stays
// wide: its narrow form would not fit 128 registers without spilling.)
template <typename T, int Tile>
Status launch_tensor_core_gemm(const GemmArgs& a, cudaStream_t stream) {
  if constexpr (Tile == 2 && sizeof(T) == 2) {
    using Wide = GemmShape<Tile, T, true, false>;
    const int64_t wide_blocks = (a.tiles + Wide::kBlockTiles - 1) / Wide::kBlockTiles *
                                ((a.out_channels + Wide::kBlockK - 1) / Wide::kBlockK);
    if (wide_blocks < sm_count()) return launch_gemm<T, Tile, true, true>(a, stream);
  }
  return launch_gemm<T, Tile, true, false>(a, stream);
}

}  // namespace

Status winograd_transform_weight_cuda(const WinogradWeightParams& p, DType dtype, cudaStream_t stream) {
  if (p.out_channels < 0 || p.in_channels < 0) return Status::kInvalidArgument;
  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    return dispatch_tile(p.tile, [&](auto tile_c) {
      const int64_t total = p.out_channels * p.in_channels;
      if (total == 0) return Status::kOk;
      if (p.weight == nullptr || p.transformed == nullptr) return Status::kInvalidArgument;
      winograd_weight_transform_kernel<T, decltype(tile_c)::value><<<elementwise_grid(total), kThreads, 0, stream>>>(p);
      return check_launch();
    });
  });
}

size_t conv2d_winograd_workspace_bytes(const WinogradFwdParams& p, DType dtype) {
  const size_t element = element_size(dtype);
  if (element == 0 || !forward_args_valid(p)) return 0;
  if (p.batch * p.out_channels * p.out_h * p.out_w == 0) return 0;
  return workspace_layout(p, element).total;
}

Status conv2d_winograd_cuda(const WinogradFwdParams& p, DType dtype, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  const size_t element = element_size(dtype);
  if (element == 0) return Status::kUnsupportedDType;
  if (!forward_args_valid(p)) return Status::kInvalidArgument;
  if (p.batch * p.out_channels * p.out_h * p.out_w == 0) return Status::kOk;
  if (p.output == nullptr || (p.in_channels > 0 && (p.input == nullptr || p.transformed_weight == nullptr))) {
    return Status::kInvalidArgument;
  }
  const WorkspaceLayout layout = workspace_layout(p, element);
  if (layout.total > 0 && (workspace == nullptr || workspace_bytes < layout.total || !is_aligned(workspace, kCopyBytes))) {
    return Status::kInvalidArgument;
  }

  const int64_t tiles_h = winograd_tiles(p.out_h, p.tile), tiles_w = winograd_tiles(p.out_w, p.tile);
  GemmArgs gemm;
  gemm.transformed_input = workspace;
  gemm.transformed_weight = p.transformed_weight;
  gemm.bias = p.bias;
  gemm.residual = p.residual;
  gemm.output = p.output;
  gemm.tiles = p.batch * tiles_h * tiles_w;
  gemm.out_channels = p.out_channels;
  gemm.padded_channels = padded_channels(p.in_channels);
  gemm.tiles_h = tiles_h;
  gemm.tiles_w = tiles_w;
  gemm.out_h = p.out_h;
  gemm.out_w = p.out_w;
  gemm.activation = p.activation;
  gemm.negative_slope = p.negative_slope;
  gemm.channels_last = p.channels_last;
  gemm.paired_stores = p.channels_last && p.out_channels % 2 == 0 && is_aligned(p.output, 2 * element) &&
                       is_aligned(p.residual, 2 * element);

  InputTransformArgs transform;
  transform.input = p.input;
  transform.transformed_input = workspace;
  transform.channels = p.in_channels;
  transform.padded_channels = gemm.padded_channels;
  transform.in_h = p.in_h;
  transform.in_w = p.in_w;
  transform.tiles = gemm.tiles;
  transform.tiles_h = tiles_h;
  transform.tiles_w = tiles_w;
  transform.pad_h = p.pad_h;
  transform.pad_w = p.pad_w;

  return dispatch_dtype(dtype, [&](auto type_tag) {
    using T = typename decltype(type_tag)::type;
    return dispatch_tile(p.tile, [&](auto tile_c) {
      constexpr int kTile = decltype(tile_c)::value;
      if (layout.weight_bytes > 0) {
        T* padded = reinterpret_cast<T*>(static_cast<unsigned char*>(workspace) + layout.weight_offset);
        const int64_t rows = int64_t(kTile + 2) * (kTile + 2) * p.out_channels;
        pad_weight_rows_kernel<T><<<elementwise_grid(rows * gemm.padded_channels), kThreads, 0, stream>>>(
            static_cast<const T*>(p.transformed_weight), padded, rows, p.in_channels, gemm.padded_channels);
        if (check_launch() != Status::kOk) return Status::kLaunchFailed;
        gemm.transformed_weight = padded;
      }
      if (gemm.padded_channels > 0) {
        const Status status = launch_input_transform<T, kTile>(transform, p.channels_last, stream);
        if (status != Status::kOk) return status;
      }
      if constexpr (std::is_same_v<T, double>) {
        return launch_gemm<T, kTile, false, false>(gemm, stream);
      } else if constexpr (std::is_same_v<T, float>) {
        return p.allow_tf32 ? launch_tensor_core_gemm<T, kTile>(gemm, stream)
                            : launch_gemm<T, kTile, false, false>(gemm, stream);
      } else {
        return launch_tensor_core_gemm<T, kTile>(gemm, stream);
      }
    });
  });
}

}  // namespace dlk
