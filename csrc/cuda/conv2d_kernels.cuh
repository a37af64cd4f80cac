// The implicit-GEMM convolution kernel shared by forward, dgrad and wgrad. Included by conv2d.cu
// (planning, launchers) and by the conv2d_gemm_*.cu files, which instantiate the kernels of one dtype
// each so that the instantiations compile in parallel.
//
// Every op is a GEMM per group, C[rows, cols] = sum_k A[rows, k] * B[cols, k]:
//   forward  rows = N*P*Q output pixels, cols = K/groups, k = (C/groups)*R*S
//   dgrad    rows = N*H*W input pixels,  cols = C/groups, k = (K/groups)*R*S
//   wgrad    rows = K/groups,            cols = (C/groups)*R*S, k = N*P*Q (split over blocks)
// The reduction index k walks (r, s, c) with c fastest in channels_last and (c, r, s) in NCHW, the
// order in which both operands are contiguous; the KRSC/KCRS weight is then a row-major
// (K, (C/groups)*R*S) matrix in that same order.
//
// Block tile kRows x kCols x one 64-byte row of k per operand row (32 fp16/bf16, 16 fp32, 8 fp64
// elements). Both operands sit in shared memory "k-major": tile row = GEMM row (or column), 64 bytes
// of k, the four 16-byte chunks of row r XOR-swizzled by (r / 2) % 4 so that the 8 rows of an
// ldmatrix phase, and 8 consecutive cp.async chunks, hit 8 distinct 16-byte bank groups. A kStages
// deep ring of such tiles is filled ahead of the math:
//   - chunk loaders (cp.async, 16 bytes, zero-filled outside the image), the fast path: channels_last
//     activations whose channels per group are a multiple of 16 bytes (8 fp16, 4 fp32, 2 fp64),
//     and the forward weight beside them;
//   - gather loaders (element by element through registers): everything else (NCHW, odd channel
//     counts, operands contiguous along the tile rows such as dgrad's weight and wgrad's operands).
// Math, per dtype:
//   - fp16 / bf16: mma.sync m16n8k16 (TF32 m16n8k8 for fp32 with allow_tf32), fp32 accumulators,
//     fragments through ldmatrix.x4. 4 warps as 2 x 2, each warp a (kRows/2) x (kCols/2) tile. A
//     64-byte row is two 32-byte k-steps, and a 16 x 32-byte block is the A fragment of both
//     m16n8k16 (16 fp16 of k) and m16n8k8.tf32 (8 fp32), so one fragment loader serves both.
//   - exact fp32 and fp64: SIMT FMA, 256 threads as 16 x 16, each owning a strided micro-tile.
// Epilogue: accumulators are staged through shared memory (reusing the ring) so that a thread then
// owns 16 contiguous output bytes in channels_last (one vector load of the residual and one store),
// or consecutive pixels of one channel in NCHW.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include "common.cuh"
#include "conv2d_tiles.cuh"
#include "dlk/activation.h"
#include "tensor_core.cuh"
#include "dlk/conv2d.h"

namespace dlk {
namespace conv {

constexpr int kRowBytes = 64;
constexpr int kChunkBytes = 16;
constexpr int kChunksPerRow = kRowBytes / kChunkBytes;
constexpr int kStages = 4;
constexpr int kWarpSize = 32;
// Staged accumulator rows are padded by 32 bytes: the 4 rows that one half-warp's float2 stores
// touch then start 32 bytes apart modulo 128 and cover the 32 banks once.
constexpr int kStagingPadBytes = 32;

template <typename T> constexpr int kTileK = kRowBytes / int(sizeof(T));
template <typename T> constexpr int kChunkElems = kChunkBytes / int(sizeof(T));

DLK_HOST_DEVICE int min_int(int a, int b) { return a < b ? a : b; }

// Byte offset of byte `byte` (0..63) of tile row `row`, 16-byte chunks swizzled (see the top).
DLK_HOST_DEVICE uint32_t tile_offset(int row, int byte) {
  const int chunk = (byte / kChunkBytes) ^ ((row >> 1) & 3);
  return uint32_t(row) * kRowBytes + uint32_t(chunk * kChunkBytes + byte % kChunkBytes);
}

// ---------------------------------------------------------------------------------------------
// Asynchronous copies and tensor-core instructions (sm_80+): the PTX wrappers are in tensor_core.cuh;
// the host branches below replay what the instruction does, so that a host harness can run a block's
// loaders and fragment addressing.

// Loops kept rolled in device code (host compilers warn about the unknown pragma).
#ifdef __CUDA_ARCH__
#define DLK_CONV_NO_UNROLL _Pragma("unroll 1")
#else
#define DLK_CONV_NO_UNROLL
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "the convolution kernels need sm_80 or newer (cp.async, ldmatrix, mma.sync m16n8k16)"
#endif

// 16 bytes from global memory to shared memory, or 16 zero bytes when !valid (src must still be a
// valid address: it is not read).
static_assert(kChunkBytes == 16, "chunks are cp_async_16 copies");
DLK_HOST_DEVICE void copy_chunk_async(char* dst, const void* src, bool valid) {
#ifdef __CUDA_ARCH__
  cp_async_16(shared_address(dst), src, valid);
#else
  if (valid) std::memcpy(dst, src, kChunkBytes);
  else std::memset(dst, 0, kChunkBytes);
#endif
}

// ldmatrix.x4: lanes 8j .. 8j+7 supply the byte offsets (row_offset(lane)) of the 8 rows of matrix j
// (16 bytes each); register j of lane l receives 32-bit word l % 4 of row l / 4 of matrix j.
template <class RowOffset>
DLK_HOST_DEVICE void load_matrix_x4(uint32_t (&regs)[4], const char* tile, RowOffset&& row_offset, int lane) {
#ifdef __CUDA_ARCH__
  ldmatrix_x4_memory_clobber(regs, shared_address(tile + row_offset(lane)));
#else
  for (int j = 0; j < 4; ++j) std::memcpy(&regs[j], tile + row_offset(8 * j + lane / 4) + 4 * (lane % 4), 4);
#endif
}

// fp32 bits rounded to TF32 (10 mantissa bits, to nearest, ties away from zero), as the TF32 mma
// expects its operands.
DLK_HOST_DEVICE uint32_t round_to_tf32(uint32_t bits) {
#ifdef __CUDA_ARCH__
  return cvt_rna_tf32(bits);
#else
  return (bits + 0x1000u) & 0xffffe000u;  // finite inputs: what the host harness feeds
#endif
}

DLK_HOST_DEVICE float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
DLK_HOST_DEVICE double fused_multiply_add(double a, double b, double c) { return fma(a, b, c); }

// ---------------------------------------------------------------------------------------------
// Problem descriptions. Sizes are int: the launcher checks that every GEMM extent, spatial size and
// input coordinate fits, and splits the batch into launches of fewer than 2^31 GEMM rows. Element
// offsets are int64_t: a tensor may exceed 2^31 elements.

// One group's GEMM and how blockIdx covers it: x = row tile * tiles_n + column tile (columns
// fastest, so that the blocks resident together share their rows of A), y = group, z = split of the
// reduction (wgrad only; forward and dgrad have one split).
struct GemmGrid {
  int rows = 0, cols = 0, depth = 0;  // GEMM M, N and reduction length of one group
  int tiles_n = 1;
  int k_tiles_per_split = 0;
};

// Convolution geometry (the launch's images are the GEMM rows or reduction: no batch size here).
struct ConvShape {
  int channels = 0, in_h = 0, in_w = 0, out_channels = 0, out_h = 0, out_w = 0;
  int group_channels = 0, group_out_channels = 0;  // C / groups, K / groups
  int kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t in_image = 0, out_image = 0;  // elements per image: C*H*W, K*P*Q
};

// Reduction index of a (channel, r, s) triple: channels_last k = (r*S + s)*channels + c,
// NCHW k = (c*R + r)*S + s. `outer` divides by channels (channels_last) or R*S (NCHW).
struct Tap {
  int channel, r, s;
};

template <bool kChannelsLast>
DLK_HOST_DEVICE Tap split_reduction_index(uint32_t k, const Divider<uint32_t>& outer,
                                          const Divider<uint32_t>& kernel_w) {
  uint32_t high, low, r, s;
  outer.divmod(k, high, low);
  kernel_w.divmod(kChannelsLast ? high : low, r, s);
  return {static_cast<int>(kChannelsLast ? low : high), static_cast<int>(r), static_cast<int>(s)};
}

struct ForwardArgs {
  GemmGrid gemm;  // rows N*P*Q, cols K/groups, depth (C/groups)*R*S
  ConvShape shape;
  const void* input = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  const void* residual = nullptr;
  void* output = nullptr;
  bool activation = false;  // LeakyReLU(negative_slope), slope 0 = ReLU (dlk/activation.h)
  double negative_slope = 0;
  bool vector_store = false;  // channels_last and 16-byte aligned rows of K/groups channels
  Divider<uint32_t> out_pixels, out_width;             // P*Q, Q
  Divider<uint32_t> reduction_outer, kernel_width;     // C/groups (channels_last) or R*S; S
};

struct DgradArgs {
  GemmGrid gemm;  // rows N*H*W, cols C/groups, depth (K/groups)*R*S
  ConvShape shape;
  const void* grad_output = nullptr;
  const void* weight = nullptr;
  void* grad_input = nullptr;
  bool vector_store = false;
  Divider<uint32_t> in_pixels, in_width;            // H*W, W
  Divider<uint32_t> reduction_outer, kernel_width;  // K/groups (channels_last) or R*S; S
  Divider<uint32_t> stride_h, stride_w;
};

struct WgradArgs {
  GemmGrid gemm;  // rows K/groups, cols (C/groups)*R*S, depth N*P*Q
  ConvShape shape;
  const void* grad_output = nullptr;
  const void* input = nullptr;
  // Either grad_weight (weight dtype) when the launch is the only reduction slot, or the partial
  // sums (accumulate type): slot (first_slot + blockIdx.z) at partials + slot * slot_elements.
  void* grad_weight = nullptr;
  void* partials = nullptr;
  int64_t first_slot = 0, slot_elements = 0;
  bool vector_store = false;
  Divider<uint32_t> out_pixels, out_width;          // P*Q (at least 1), Q
  Divider<uint32_t> reduction_outer, kernel_width;  // C/groups (channels_last) or R*S; S
};

struct TileCoord {
  int row0 = 0, col0 = 0, group = 0, split = 0, k_tile_begin = 0, k_tile_end = 0;
};

template <int kRows, int kCols, int kDepth>
DLK_HOST_DEVICE TileCoord tile_coord(const GemmGrid& g, uint32_t bx, uint32_t by, uint32_t bz) {
  TileCoord t;
  const uint32_t tiles_n = static_cast<uint32_t>(g.tiles_n);
  t.row0 = static_cast<int>(bx / tiles_n) * kRows;
  t.col0 = static_cast<int>(bx % tiles_n) * kCols;
  t.group = static_cast<int>(by);
  t.split = static_cast<int>(bz);
  const int k_tiles = (g.depth + kDepth - 1) / kDepth;
  t.k_tile_begin = min_int(k_tiles, t.split * g.k_tiles_per_split);
  t.k_tile_end = min_int(k_tiles, t.k_tile_begin + g.k_tiles_per_split);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Operand sources: where element (row, k) of an operand lives. A source splits the address into a
// row part and a column part computed once each (Row, Column), then combines them in element(),
// which returns false for taps outside the image and for rows / columns past the GEMM's edges.

// Forward A: input pixels under output pixel `row` at reduction index k.
template <typename T, bool kChannelsLast>
struct ForwardInputSource {
  struct Row {
    int64_t offset;
    int ih0, iw0;
    bool valid;
  };
  struct Column {
    int64_t offset;
    int dh, dw;
    bool valid;
  };
  const ForwardArgs& args;
  const T* data;
  DLK_HOST_DEVICE ForwardInputSource(const ForwardArgs& a, int group)
      : args(a),
        data(static_cast<const T*>(a.input) + int64_t(group) * a.shape.group_channels *
                                                  (kChannelsLast ? 1 : int64_t(a.shape.in_h) * a.shape.in_w)) {}
  DLK_HOST_DEVICE Row row(int m) const {
    uint32_t image, pixel, oh, ow;
    args.out_pixels.divmod(static_cast<uint32_t>(m), image, pixel);
    args.out_width.divmod(pixel, oh, ow);
    return {int64_t(image) * args.shape.in_image, int(oh) * args.shape.stride_h - args.shape.pad_h,
            int(ow) * args.shape.stride_w - args.shape.pad_w, m < args.gemm.rows};
  }
  DLK_HOST_DEVICE Column column(int k) const {
    const Tap tap = split_reduction_index<kChannelsLast>(static_cast<uint32_t>(k), args.reduction_outer,
                                                         args.kernel_width);
    const int64_t channel_stride = kChannelsLast ? 1 : int64_t(args.shape.in_h) * args.shape.in_w;
    return {tap.channel * channel_stride, tap.r * args.shape.dilation_h, tap.s * args.shape.dilation_w,
            k < args.gemm.depth};
  }
  DLK_HOST_DEVICE bool element(const Row& row, const Column& col, int64_t& offset) const {
    const int ih = row.ih0 + col.dh, iw = row.iw0 + col.dw;
    if (!row.valid || !col.valid || ih < 0 || ih >= args.shape.in_h || iw < 0 || iw >= args.shape.in_w) return false;
    offset = row.offset + col.offset + (int64_t(ih) * args.shape.in_w + iw) * (kChannelsLast ? args.shape.channels : 1);
    return true;
  }
};

// Forward B: row j of the weight, a row-major (K, depth) matrix in the reduction order (KCRS and
// KRSC alike).
template <typename T>
struct ForwardWeightSource {
  struct Row {
    int64_t offset;
    bool valid;
  };
  struct Column {
    int k;
    bool valid;
  };
  const ForwardArgs& args;
  const T* data;
  DLK_HOST_DEVICE ForwardWeightSource(const ForwardArgs& a, int group)
      : args(a), data(static_cast<const T*>(a.weight) + int64_t(group) * a.shape.group_out_channels * a.gemm.depth) {}
  DLK_HOST_DEVICE Row row(int j) const { return {int64_t(j) * args.gemm.depth, j < args.gemm.cols}; }
  DLK_HOST_DEVICE Column column(int k) const { return {k, k < args.gemm.depth}; }
  DLK_HOST_DEVICE bool element(const Row& row, const Column& col, int64_t& offset) const {
    offset = row.offset + col.k;
    return row.valid && col.valid;
  }
};

// Dgrad A: grad_output at the output pixel that tap k of input pixel `row` came from, if any:
// oh = (h + pad_h - r * dilation_h) / stride_h when that divides exactly and lands in [0, P).
template <typename T, bool kChannelsLast>
struct DgradGradOutputSource {
  struct Row {
    int64_t offset;
    int th0, tw0;  // h + pad_h, w + pad_w
    bool valid;
  };
  struct Column {
    int64_t offset;
    int dh, dw;
    bool valid;
  };
  const DgradArgs& args;
  const T* data;
  DLK_HOST_DEVICE DgradGradOutputSource(const DgradArgs& a, int group)
      : args(a),
        data(static_cast<const T*>(a.grad_output) + int64_t(group) * a.shape.group_out_channels *
                                                        (kChannelsLast ? 1 : int64_t(a.shape.out_h) * a.shape.out_w)) {}
  DLK_HOST_DEVICE Row row(int m) const {
    uint32_t image, pixel, h, w;
    args.in_pixels.divmod(static_cast<uint32_t>(m), image, pixel);
    args.in_width.divmod(pixel, h, w);
    return {int64_t(image) * args.shape.out_image, int(h) + args.shape.pad_h, int(w) + args.shape.pad_w,
            m < args.gemm.rows};
  }
  DLK_HOST_DEVICE Column column(int k) const {
    const Tap tap = split_reduction_index<kChannelsLast>(static_cast<uint32_t>(k), args.reduction_outer,
                                                         args.kernel_width);
    const int64_t channel_stride = kChannelsLast ? 1 : int64_t(args.shape.out_h) * args.shape.out_w;
    return {tap.channel * channel_stride, tap.r * args.shape.dilation_h, tap.s * args.shape.dilation_w,
            k < args.gemm.depth};
  }
  DLK_HOST_DEVICE bool element(const Row& row, const Column& col, int64_t& offset) const {
    const int th = row.th0 - col.dh, tw = row.tw0 - col.dw;
    if (!row.valid || !col.valid || th < 0 || tw < 0) return false;
    uint32_t oh, rest_h, ow, rest_w;
    args.stride_h.divmod(static_cast<uint32_t>(th), oh, rest_h);
    args.stride_w.divmod(static_cast<uint32_t>(tw), ow, rest_w);
    if (rest_h != 0 || rest_w != 0 || oh >= uint32_t(args.shape.out_h) || ow >= uint32_t(args.shape.out_w)) {
      return false;
    }
    offset = row.offset + col.offset +
             (int64_t(oh) * args.shape.out_w + ow) * (kChannelsLast ? args.shape.out_channels : 1);
    return true;
  }
};

// Dgrad B: weight[g*K/G + kk, c, r, s] for tile row c and reduction index k = (kk, r, s), in the
// layout's order.
template <typename T, bool kChannelsLast>
struct DgradWeightSource {
  struct Row {
    int64_t offset;
    bool valid;
  };
  struct Column {
    int64_t offset;
    bool valid;
  };
  const DgradArgs& args;
  const T* data;
  DLK_HOST_DEVICE DgradWeightSource(const DgradArgs& a, int group)
      : args(a),
        data(static_cast<const T*>(a.weight) + int64_t(group) * a.shape.group_out_channels *
                                                   a.shape.group_channels * a.shape.kernel_h * a.shape.kernel_w) {}
  DLK_HOST_DEVICE int taps() const { return args.shape.kernel_h * args.shape.kernel_w; }
  DLK_HOST_DEVICE Row row(int c) const {
    return {kChannelsLast ? int64_t(c) : int64_t(c) * taps(), c < args.gemm.cols};
  }
  DLK_HOST_DEVICE Column column(int k) const {
    const Tap tap = split_reduction_index<kChannelsLast>(static_cast<uint32_t>(k), args.reduction_outer,
                                                         args.kernel_width);
    const int64_t rs = int64_t(tap.r) * args.shape.kernel_w + tap.s;
    // KRSC: ((kk*R + r)*S + s)*C/G + c; KCRS: (kk*C/G + c)*R*S + r*S + s.
    const int64_t offset = kChannelsLast ? (int64_t(tap.channel) * taps() + rs) * args.shape.group_channels
                                         : int64_t(tap.channel) * args.shape.group_channels * taps() + rs;
    return {offset, k < args.gemm.depth};
  }
  DLK_HOST_DEVICE bool element(const Row& row, const Column& col, int64_t& offset) const {
    offset = row.offset + col.offset;
    return row.valid && col.valid;
  }
};

// Wgrad A: grad_output[n, g*K/G + kk, p, q] for tile row kk and reduction index k = (n, p, q).
template <typename T, bool kChannelsLast>
struct WgradGradOutputSource {
  struct Row {
    int64_t offset;
    bool valid;
  };
  struct Column {
    int64_t offset;
    bool valid;
  };
  const WgradArgs& args;
  const T* data;
  DLK_HOST_DEVICE WgradGradOutputSource(const WgradArgs& a, int group)
      : args(a),
        data(static_cast<const T*>(a.grad_output) + int64_t(group) * a.shape.group_out_channels *
                                                        (kChannelsLast ? 1 : int64_t(a.shape.out_h) * a.shape.out_w)) {}
  DLK_HOST_DEVICE Row row(int kk) const {
    return {int64_t(kk) * (kChannelsLast ? 1 : int64_t(args.shape.out_h) * args.shape.out_w), kk < args.gemm.rows};
  }
  DLK_HOST_DEVICE Column column(int k) const {
    uint32_t image, pixel;
    args.out_pixels.divmod(static_cast<uint32_t>(k), image, pixel);
    return {int64_t(image) * args.shape.out_image + int64_t(pixel) * (kChannelsLast ? args.shape.out_channels : 1),
            k < args.gemm.depth};
  }
  DLK_HOST_DEVICE bool element(const Row& row, const Column& col, int64_t& offset) const {
    offset = row.offset + col.offset;
    return row.valid && col.valid;
  }
};

// Wgrad B: input[n, g*C/G + c, p*stride - pad + r*dil, ...] for tile row (c, r, s) (a column of
// grad_weight, in the weight's own order) and reduction index k = (n, p, q).
template <typename T, bool kChannelsLast>
struct WgradInputSource {
  struct Row {
    int64_t offset;
    int dh, dw;  // r * dilation_h - pad_h, s * dilation_w - pad_w
    bool valid;
  };
  struct Column {
    int64_t offset;
    int ih0, iw0;  // p * stride_h, q * stride_w
    bool valid;
  };
  const WgradArgs& args;
  const T* data;
  DLK_HOST_DEVICE WgradInputSource(const WgradArgs& a, int group)
      : args(a),
        data(static_cast<const T*>(a.input) + int64_t(group) * a.shape.group_channels *
                                                  (kChannelsLast ? 1 : int64_t(a.shape.in_h) * a.shape.in_w)) {}
  DLK_HOST_DEVICE Row row(int j) const {
    const Tap tap = split_reduction_index<kChannelsLast>(static_cast<uint32_t>(j), args.reduction_outer,
                                                         args.kernel_width);
    const int64_t channel_stride = kChannelsLast ? 1 : int64_t(args.shape.in_h) * args.shape.in_w;
    return {tap.channel * channel_stride, tap.r * args.shape.dilation_h - args.shape.pad_h,
            tap.s * args.shape.dilation_w - args.shape.pad_w, j < args.gemm.cols};
  }
  DLK_HOST_DEVICE Column column(int k) const {
    uint32_t image, pixel, p, q;
    args.out_pixels.divmod(static_cast<uint32_t>(k), image, pixel);
    args.out_width.divmod(pixel, p, q);
    return {int64_t(image) * args.shape.in_image, int(p) * args.shape.stride_h, int(q) * args.shape.stride_w,
            k < args.gemm.depth};
  }
  DLK_HOST_DEVICE bool element(const Row& row, const Column& col, int64_t& offset) const {
    const int ih = col.ih0 + row.dh, iw = col.iw0 + row.dw;
    if (!row.valid || !col.valid || ih < 0 || ih >= args.shape.in_h || iw < 0 || iw >= args.shape.in_w) return false;
    offset = row.offset + col.offset + (int64_t(ih) * args.shape.in_w + iw) * (kChannelsLast ? args.shape.channels : 1);
    return true;
  }
};

// ---------------------------------------------------------------------------------------------
// Loaders: fill one stage's tile of kTileRows rows from a source.

// cp.async, 16 bytes at a time: thread t owns chunk t % 4 of rows t / 4 + i * (kThreads / 4). Only
// for sources whose 16-byte chunks are contiguous, 16-byte aligned and all-valid or all-invalid
// (the launcher's "fast" condition); element() of a chunk's first element decides for all of it.
template <typename T, class Source, int kTileRows, int kThreads>
struct ChunkLoader {
  static constexpr int kRowStep = kThreads / kChunksPerRow;
  static constexpr int kRowsPerThread = kTileRows / kRowStep;
  static_assert(kTileRows % kRowStep == 0, "tile rows must be a multiple of the rows one pass covers");

  Source source;
  typename Source::Row rows[kRowsPerThread];
  int first_row, chunk;

  DLK_HOST_DEVICE ChunkLoader(const Source& s, int tile_row0, int thread)
      : source(s), first_row(thread / kChunksPerRow), chunk(thread % kChunksPerRow) {
    DLK_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) rows[i] = source.row(tile_row0 + first_row + i * kRowStep);
  }

  DLK_HOST_DEVICE void fetch(int k_tile, char* tile) const {
    const typename Source::Column col = source.column(k_tile * kTileK<T> + chunk * kChunkElems<T>);
    DLK_UNROLL
    for (int i = 0; i < kRowsPerThread; ++i) {
      int64_t offset = 0;
      const bool valid = source.element(rows[i], col, offset);
      copy_chunk_async(tile + tile_offset(first_row + i * kRowStep, chunk * kChunkBytes),
                       valid ? source.data + offset : source.data, valid);
    }
  }
};

// Element by element. kRowFast: consecutive threads take consecutive tile rows (for operands
// contiguous along their rows, e.g. NCHW pixels); each thread keeps its row's Row state and walks
// columns. Otherwise consecutive threads take consecutive k (contiguous along k); each thread has
// one column per tile and walks rows. Loads go out in batches of kBatch before their stores, enough
// to overlap their latency without holding a whole tile's worth of addresses in registers.
template <typename T, class Source, int kTileRows, int kThreads, bool kRowFast>
struct GatherLoader {
  static constexpr int kTileCols = kTileK<T>;
  static constexpr int kElems = kTileRows * kTileCols / kThreads;
  static constexpr int kBatch = kElems < 8 ? kElems : 8;
  static_assert(kThreads % kTileRows == 0 && kThreads % kTileCols == 0, "a pass must cover whole rows / columns");
  static_assert(kElems % kBatch == 0, "whole batches");
  // Element e of this thread: row-fast (thread % kTileRows, thread / kTileRows + e * kColStep),
  // k-fast (thread / kTileCols + e * kRowStep, thread % kTileCols).
  static constexpr int kColStep = kThreads / kTileRows;
  static constexpr int kRowStep = kThreads / kTileCols;

  Source source;
  typename Source::Row fixed_row;  // row-fast only
  int tile_row0, thread;

  DLK_HOST_DEVICE GatherLoader(const Source& s, int row0, int t) : source(s), fixed_row(), tile_row0(row0), thread(t) {
    if constexpr (kRowFast) fixed_row = source.row(row0 + thread % kTileRows);
  }

  DLK_HOST_DEVICE void fetch(int k_tile, char* tile) const {
    const int k0 = k_tile * kTileCols;
    typename Source::Column fixed_col{};
    if constexpr (!kRowFast) fixed_col = source.column(k0 + thread % kTileCols);
    DLK_CONV_NO_UNROLL
    for (int e0 = 0; e0 < kElems; e0 += kBatch) {
      T values[kBatch];
      uint32_t offsets[kBatch];
      DLK_UNROLL
      for (int b = 0; b < kBatch; ++b) {
        const int e = e0 + b;
        const int row = kRowFast ? thread % kTileRows : thread / kTileCols + e * kRowStep;
        const int col = kRowFast ? thread / kTileRows + e * kColStep : thread % kTileCols;
        int64_t offset = 0;
        const bool valid = kRowFast ? source.element(fixed_row, source.column(k0 + col), offset)
                                    : source.element(source.row(tile_row0 + row), fixed_col, offset);
        values[b] = valid ? source.data[offset] : from_accumulate<T>(AccumulateType<T>(0));
        offsets[b] = tile_offset(row, col * int(sizeof(T)));
      }
      DLK_UNROLL
      for (int b = 0; b < kBatch; ++b) *reinterpret_cast<T*>(tile + offsets[b]) = values[b];
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Math.

// Tensor cores: 4 warps as 2 x 2, warp tile kWarpRows x kWarpCols of m16n8 accumulator tiles.
template <typename T, int kTileRows, int kTileCols>
struct MmaThread {
  static constexpr int kWarpsM = 2, kWarpsN = 2;
  static constexpr int kWarpRows = kTileRows / kWarpsM, kWarpCols = kTileCols / kWarpsN;
  static constexpr int kMi = kWarpRows / 16, kNi = kWarpCols / 8;
  static constexpr int kKSteps = kRowBytes / 32;
  static_assert(kWarpRows % 16 == 0 && kWarpCols % 16 == 0, "warp tiles are made of 16 x 16 fragment blocks");

  // What one lane holds for one 32-byte k-step: a[mi] is the A fragment of m16 tile mi, b[ni] the
  // B fragment of n8 tile ni.
  struct Fragments {
    uint32_t a[kMi][4];
    uint32_t b[kNi][2];
  };

  float acc[kMi][kNi][4];
  int warp_row0, warp_col0, lane;

  DLK_HOST_DEVICE explicit MmaThread(int thread) : lane(thread % kWarpSize) {
    const int warp = thread / kWarpSize;
    warp_row0 = (warp % kWarpsM) * kWarpRows;
    warp_col0 = (warp / kWarpsM) * kWarpCols;
    DLK_UNROLL
    for (int mi = 0; mi < kMi; ++mi)
      DLK_UNROLL
      for (int ni = 0; ni < kNi; ++ni)
        DLK_UNROLL
        for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.f;
  }

  // Matrices 0..3 of the 16-row x 32-byte A block at row0: (rows 0-7, bytes 0-15), (rows 8-15,
  // bytes 0-15), (rows 0-7, bytes 16-31), (rows 8-15, bytes 16-31) = registers a0a1, a2a3, a4a5, a6a7
  // of m16n8k16, and a0, a1, a2, a3 of m16n8k8.tf32.
  DLK_HOST_DEVICE static uint32_t a_row_offset(int row0, int k_step, int lane) {
    return tile_offset(row0 + lane % 16, k_step * 32 + (lane / 16) * 16);
  }
  // Matrices 0..3 of the 16-column x 32-byte B block at col0: (cols 0-7, bytes 0-15), (cols 0-7,
  // bytes 16-31), (cols 8-15, bytes 0-15), (cols 8-15, bytes 16-31) = {b0b1, b2b3} of n8 tile 0, then
  // of n8 tile 1 (b0, b1 of m16n8k8.tf32).
  DLK_HOST_DEVICE static uint32_t b_row_offset(int col0, int k_step, int lane) {
    return tile_offset(col0 + lane % 8 + (lane / 16) * 8, k_step * 32 + ((lane / 8) % 2) * 16);
  }

  DLK_HOST_DEVICE void load_fragments(Fragments& f, const char* a_tile, const char* b_tile, int k_step) const {
    DLK_UNROLL
    for (int mi = 0; mi < kMi; ++mi) {
      const int row0 = warp_row0 + mi * 16;
      load_matrix_x4(f.a[mi], a_tile, [&](int l) { return a_row_offset(row0, k_step, l); }, lane);
    }
    DLK_UNROLL
    for (int nj = 0; nj < kNi / 2; ++nj) {
      const int col0 = warp_col0 + nj * 16;
      uint32_t regs[4];
      load_matrix_x4(regs, b_tile, [&](int l) { return b_row_offset(col0, k_step, l); }, lane);
      f.b[2 * nj][0] = regs[0];
      f.b[2 * nj][1] = regs[1];
      f.b[2 * nj + 1][0] = regs[2];
      f.b[2 * nj + 1][1] = regs[3];
    }
    if constexpr (std::is_same_v<T, float>) {
      DLK_UNROLL
      for (int mi = 0; mi < kMi; ++mi)
        DLK_UNROLL
        for (int i = 0; i < 4; ++i) f.a[mi][i] = round_to_tf32(f.a[mi][i]);
      DLK_UNROLL
      for (int ni = 0; ni < kNi; ++ni)
        DLK_UNROLL
        for (int i = 0; i < 2; ++i) f.b[ni][i] = round_to_tf32(f.b[ni][i]);
    }
  }

#ifdef __CUDA_ARCH__
  __device__ __forceinline__ void compute(const char* a_tile, const char* b_tile) {
    DLK_UNROLL
    for (int k_step = 0; k_step < kKSteps; ++k_step) {
      Fragments f;
      load_fragments(f, a_tile, b_tile, k_step);
      DLK_UNROLL
      for (int mi = 0; mi < kMi; ++mi)
        DLK_UNROLL
        for (int ni = 0; ni < kNi; ++ni) mma_sync_unordered(acc[mi][ni], f.a[mi], f.b[ni], TypeTag<T>{});
    }
  }
#endif

  // Element i of accumulator tile (mi, ni): row lane / 4 (+ 8 for i >= 2), column 2 * (lane % 4) + i % 2.
  DLK_HOST_DEVICE void stage(char* staging, int row_bytes) const {
    DLK_UNROLL
    for (int mi = 0; mi < kMi; ++mi) {
      DLK_UNROLL
      for (int ni = 0; ni < kNi; ++ni) {
        DLK_UNROLL
        for (int half = 0; half < 2; ++half) {
          const int row = warp_row0 + mi * 16 + lane / 4 + 8 * half;
          const int col = warp_col0 + ni * 8 + 2 * (lane % 4);
          *reinterpret_cast<float2*>(staging + row * row_bytes + col * int(sizeof(float))) =
              make_float2(acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
        }
      }
    }
  }
};

// SIMT: 256 threads as 16 x 16; thread (tm, tn) owns rows tm + 16 i and columns tn + 16 j. A warp
// covers 4 consecutive rows and 8 consecutive columns, which the tile swizzle spreads over distinct
// banks, so the k-major tiles serve scalar reads without conflicts.
template <typename T, int kTileRows, int kTileCols>
struct SimtThread {
  using Acc = AccumulateType<T>;
  static constexpr int kTm = kTileRows / 16, kTn = kTileCols / 16;

  Acc acc[kTm][kTn];
  int tm, tn;

  DLK_HOST_DEVICE explicit SimtThread(int thread) {
    const int warp = thread / kWarpSize, lane = thread % kWarpSize;
    tm = (warp / 2) * 4 + lane % 4;
    tn = (warp % 2) * 8 + lane / 4;
    DLK_UNROLL
    for (int i = 0; i < kTm; ++i)
      DLK_UNROLL
      for (int j = 0; j < kTn; ++j) acc[i][j] = Acc(0);
  }

  DLK_HOST_DEVICE void compute(const char* a_tile, const char* b_tile) {
    DLK_UNROLL
    for (int k = 0; k < kTileK<T>; ++k) {
      const auto at = [&](const char* tile, int row) {
        return to_accumulate(*reinterpret_cast<const T*>(tile + tile_offset(row, k * int(sizeof(T)))));
      };
      Acc a[kTm], b[kTn];
      DLK_UNROLL
      for (int i = 0; i < kTm; ++i) a[i] = at(a_tile, tm + 16 * i);
      DLK_UNROLL
      for (int j = 0; j < kTn; ++j) b[j] = at(b_tile, tn + 16 * j);
      DLK_UNROLL
      for (int i = 0; i < kTm; ++i)
        DLK_UNROLL
        for (int j = 0; j < kTn; ++j) acc[i][j] = fused_multiply_add(a[i], b[j], acc[i][j]);
    }
  }

  DLK_HOST_DEVICE void stage(char* staging, int row_bytes) const {
    DLK_UNROLL
    for (int i = 0; i < kTm; ++i)
      DLK_UNROLL
      for (int j = 0; j < kTn; ++j)
        *reinterpret_cast<Acc*>(staging + (tm + 16 * i) * row_bytes + (tn + 16 * j) * int(sizeof(Acc))) = acc[i][j];
  }
};

struct TensorCoreMath {
  static constexpr bool kTensorCores = true;
  static constexpr int kThreads = 128;
  template <typename T, int kRows, int kCols> using Thread = MmaThread<T, kRows, kCols>;
};

struct SimtMath {
  static constexpr bool kTensorCores = false;
  static constexpr int kThreads = 256;
  template <typename T, int kRows, int kCols> using Thread = SimtThread<T, kRows, kCols>;
};

// ---------------------------------------------------------------------------------------------
// Epilogue helpers.

// The fused activation of a forward's args (ForwardArgs, DepthwiseArgs); NaN propagates as in torch.
template <typename Acc, typename Args>
DLK_HOST_DEVICE Acc epilogue_activation(Acc y, const Args& a) {
  return activate(y, a.activation, Acc(a.negative_slope));
}

template <typename T, int kVec>
DLK_HOST_DEVICE Vector<T, kVec> load_elements(const T* base, int64_t offset) {
  return *reinterpret_cast<const Vector<T, kVec>*>(base + offset);
}

template <typename T, int kVec>
DLK_HOST_DEVICE void store_elements(T* base, int64_t offset, const Vector<T, kVec>& v) {
  *reinterpret_cast<Vector<T, kVec>*>(base + offset) = v;
}

// ---------------------------------------------------------------------------------------------
// The three ops: operand sources, loader layouts and where GEMM element (row, col) goes.

template <typename TT, bool kCL>
struct ForwardOp {
  using T = TT;
  using Args = ForwardArgs;
  using SourceA = ForwardInputSource<T, kCL>;
  using SourceB = ForwardWeightSource<T>;
  static constexpr bool kFastA = kCL, kFastB = kCL;  // NCHW gathers; its weight is cheap to gather
  static constexpr bool kRowFastA = true, kRowFastB = false;
  static constexpr bool kContiguousCols = kCL;

  template <int kVec>
  DLK_HOST_DEVICE static void store(const Args& a, const TileCoord& t, int m, int j,
                                    const AccumulateType<T> (&v)[kVec]) {
    using Acc = AccumulateType<T>;
    const int channel = t.group * a.shape.group_out_channels + j;
    int64_t offset;
    if constexpr (kCL) {
      offset = int64_t(m) * a.shape.out_channels + channel;
    } else {
      uint32_t image, pixel;
      a.out_pixels.divmod(static_cast<uint32_t>(m), image, pixel);
      offset = int64_t(image) * a.shape.out_image + int64_t(channel) * a.out_pixels.divisor + pixel;
    }
    Vector<T, kVec> residual{}, out;
    if (a.residual != nullptr) residual = load_elements<T, kVec>(static_cast<const T*>(a.residual), offset);
    DLK_UNROLL
    for (int i = 0; i < kVec; ++i) {
      Acc y = v[i];
      if (a.bias != nullptr) y += to_accumulate(static_cast<const T*>(a.bias)[channel + i]);
      if (a.residual != nullptr) y += to_accumulate(residual.val[i]);
      out.val[i] = from_accumulate<T>(epilogue_activation(y, a));
    }
    store_elements<T, kVec>(static_cast<T*>(a.output), offset, out);
  }
};

template <typename TT, bool kCL>
struct DgradOp {
  using T = TT;
  using Args = DgradArgs;
  using SourceA = DgradGradOutputSource<T, kCL>;
  using SourceB = DgradWeightSource<T, kCL>;
  static constexpr bool kFastA = kCL, kFastB = false;  // the weight is contiguous along c, a tile row
  static constexpr bool kRowFastA = true, kRowFastB = false;
  static constexpr bool kContiguousCols = kCL;

  template <int kVec>
  DLK_HOST_DEVICE static void store(const Args& a, const TileCoord& t, int m, int c,
                                    const AccumulateType<T> (&v)[kVec]) {
    const int channel = t.group * a.shape.group_channels + c;
    int64_t offset;
    if constexpr (kCL) {
      offset = int64_t(m) * a.shape.channels + channel;
    } else {
      uint32_t image, pixel;
      a.in_pixels.divmod(static_cast<uint32_t>(m), image, pixel);
      offset = int64_t(image) * a.shape.in_image + int64_t(channel) * a.in_pixels.divisor + pixel;
    }
    Vector<T, kVec> out;
    DLK_UNROLL
    for (int i = 0; i < kVec; ++i) out.val[i] = from_accumulate<T>(v[i]);
    store_elements<T, kVec>(static_cast<T*>(a.grad_input), offset, out);
  }
};

template <typename TT, bool kCL>
struct WgradOp {
  using T = TT;
  using Args = WgradArgs;
  using SourceA = WgradGradOutputSource<T, kCL>;
  using SourceB = WgradInputSource<T, kCL>;
  static constexpr bool kFastA = false, kFastB = false;  // both contiguous along tile rows, or gathered (NCHW)
  static constexpr bool kRowFastA = kCL, kRowFastB = kCL;
  static constexpr bool kContiguousCols = true;  // grad_weight is row-major (K, C/G*R*S) in both layouts

  template <int kVec>
  DLK_HOST_DEVICE static void store(const Args& a, const TileCoord& t, int kk, int j,
                                    const AccumulateType<T> (&v)[kVec]) {
    using Acc = AccumulateType<T>;
    const int64_t offset = (int64_t(t.group) * a.shape.group_out_channels + kk) * a.gemm.cols + j;
    if (a.partials != nullptr) {
      Vector<Acc, kVec> out;
      DLK_UNROLL
      for (int i = 0; i < kVec; ++i) out.val[i] = v[i];
      const int64_t slot = a.first_slot + t.split;
      store_elements<Acc, kVec>(static_cast<Acc*>(a.partials), slot * a.slot_elements + offset, out);
    } else {
      Vector<T, kVec> out;
      DLK_UNROLL
      for (int i = 0; i < kVec; ++i) out.val[i] = from_accumulate<T>(v[i]);
      store_elements<T, kVec>(static_cast<T*>(a.grad_weight), offset, out);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// The kernel.

// One instantiation: op (with dtype and layout), math, block tile kRows x kCols, and whether the
// operands that can come through cp.async do.
template <class Op, class Math, int kTileRows, int kTileCols, bool kFast>
struct ConvGemm {
  using T = typename Op::T;
  using Acc = AccumulateType<T>;
  using Args = typename Op::Args;
  static constexpr int kRows = kTileRows, kCols = kTileCols;
  static constexpr int kThreads = Math::kThreads;
  static constexpr int kDepth = kTileK<T>;
  static_assert(!kFast || Op::kFastA || Op::kFastB, "no fast loader for this op");
  using SourceA = typename Op::SourceA;
  using SourceB = typename Op::SourceB;
  using LoaderA = std::conditional_t<kFast && Op::kFastA, ChunkLoader<T, SourceA, kRows, kThreads>,
                                     GatherLoader<T, SourceA, kRows, kThreads, Op::kRowFastA>>;
  using LoaderB = std::conditional_t<kFast && Op::kFastB, ChunkLoader<T, SourceB, kCols, kThreads>,
                                     GatherLoader<T, SourceB, kCols, kThreads, Op::kRowFastB>>;
  using Compute = typename Math::template Thread<T, kRows, kCols>;

  static constexpr int kStageBytes = (kRows + kCols) * kRowBytes;
  static constexpr int kStagingRowBytes = kCols * int(sizeof(Acc)) + kStagingPadBytes;
  static constexpr int kSmemBytes =
      kStages * kStageBytes > kRows * kStagingRowBytes ? kStages * kStageBytes : kRows * kStagingRowBytes;

  DLK_HOST_DEVICE static char* a_tile(char* smem, int stage) { return smem + stage * kStageBytes; }
  DLK_HOST_DEVICE static char* b_tile(char* smem, int stage) { return smem + stage * kStageBytes + kRows * kRowBytes; }

  // After the main loop every thread reads staged accumulators: with vector_store, kVec contiguous
  // columns at a time (16 output bytes); otherwise one element at a time, consecutive threads on
  // consecutive elements along the output's contiguous dimension.
  DLK_HOST_DEVICE static void epilogue(const Args& args, const TileCoord& tile, const char* staging, int thread) {
    const auto staged = [&](int row, int col) {
      return *reinterpret_cast<const Acc*>(staging + row * kStagingRowBytes + col * int(sizeof(Acc)));
    };
    if constexpr (Op::kContiguousCols) {
      constexpr int kVec = kChunkElems<T>;
      if (args.vector_store) {
        // The launcher sets vector_store only when cols % kVec == 0: no vector straddles the edge.
        for (int e = thread; e < kRows * kCols / kVec; e += kThreads) {
          const int row = e / (kCols / kVec), col = (e % (kCols / kVec)) * kVec;
          const int m = tile.row0 + row, j = tile.col0 + col;
          if (m >= args.gemm.rows || j >= args.gemm.cols) continue;
          Acc v[kVec];
          DLK_UNROLL
          for (int i = 0; i < kVec; ++i) v[i] = staged(row, col + i);
          Op::template store<kVec>(args, tile, m, j, v);
        }
        return;
      }
    }
    for (int e = thread; e < kRows * kCols; e += kThreads) {
      const int row = Op::kContiguousCols ? e / kCols : e % kRows;
      const int col = Op::kContiguousCols ? e % kCols : e / kRows;
      const int m = tile.row0 + row, j = tile.col0 + col;
      if (m >= args.gemm.rows || j >= args.gemm.cols) continue;
      const Acc v[1] = {staged(row, col)};
      Op::template store<1>(args, tile, m, j, v);
    }
  }
};

// A kStages-deep ring: tile k is requested kStages - 1 iterations before it is used. Each iteration
// waits for its own tile's copies, then one barrier both publishes that tile to every warp and
// proves that the stage about to be refilled (read in the previous iteration) is no longer read.
// Gather loaders store synchronously into that same stage, after the same barrier. Empty commit
// groups keep the wait count uniform at the tail.
template <class Gemm>
__global__ void __launch_bounds__(Gemm::kThreads) conv_gemm_kernel(const __grid_constant__ typename Gemm::Args args) {
  extern __shared__ uint4 smem_storage[];
  char* smem = reinterpret_cast<char*>(smem_storage);
  const int thread = static_cast<int>(threadIdx.x);
  const TileCoord tile =
      tile_coord<Gemm::kRows, Gemm::kCols, Gemm::kDepth>(args.gemm, blockIdx.x, blockIdx.y, blockIdx.z);
  const typename Gemm::LoaderA loader_a(typename Gemm::SourceA(args, tile.group), tile.row0, thread);
  const typename Gemm::LoaderB loader_b(typename Gemm::SourceB(args, tile.group), tile.col0, thread);
  typename Gemm::Compute compute(thread);
  const int k_tiles = tile.k_tile_end - tile.k_tile_begin;

  DLK_UNROLL
  for (int stage = 0; stage < kStages - 1; ++stage) {
    if (stage < k_tiles) {
      loader_a.fetch(tile.k_tile_begin + stage, Gemm::a_tile(smem, stage));
      loader_b.fetch(tile.k_tile_begin + stage, Gemm::b_tile(smem, stage));
    }
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    const int ahead = kt + kStages - 1;
    if (ahead < k_tiles) {
      loader_a.fetch(tile.k_tile_begin + ahead, Gemm::a_tile(smem, ahead % kStages));
      loader_b.fetch(tile.k_tile_begin + ahead, Gemm::b_tile(smem, ahead % kStages));
    }
    cp_async_commit();
    compute.compute(Gemm::a_tile(smem, kt % kStages), Gemm::b_tile(smem, kt % kStages));
  }
  cp_async_wait<0>();
  __syncthreads();  // the ring is free: reuse it for the staged accumulators
  compute.stage(smem, Gemm::kStagingRowBytes);
  __syncthreads();
  Gemm::epilogue(args, tile, smem, thread);
}

// ---------------------------------------------------------------------------------------------
// Host side: tile shapes, kernel selection and launch.

struct GemmChoice {
  bool tensor_cores = false;  // fp16/bf16 always; fp32 with allow_tf32 (TF32); otherwise SIMT FMA
  bool channels_last = false;
  bool fast = false;          // cp.async loaders for the operands that have one (see each op)
  TileShape tile = TileShape::k64x64;
};

// Kernel selection: fn(TypeTag<ConvGemm<...>>) for the instantiation that serves `c`. The launchers
// pass a lambda that launches it; a host harness can pass one that runs the same per-thread code.
// fn for kConvTiles[kIndex] when it is `tile` and this GEMM instantiates it (conv2d_tiles.cuh).
template <class Op, class Math, bool kFast, size_t kIndex, class Fn>
bool dispatch_listed_tile(TileShape tile, Fn& fn, Status& status) {
  constexpr ConvTileConfig kTile = kConvTiles[kIndex];
  if constexpr (tile_instantiated(kTile, Math::kTensorCores, int(sizeof(typename Op::T)), kFast && Op::kFastA)) {
    if (tile == static_cast<TileShape>(kIndex)) {
      status = fn(TypeTag<ConvGemm<Op, Math, kTile.rows, kTile.cols, kFast>>{});
      return true;
    }
  }
  return false;
}

// The planner sized the grid for `tile`: running another tile would leave rows unwritten, so a tile
// that available_tiles offered but is not instantiated here is an error, never a silent fallback.
template <class Op, class Math, bool kFast, class Fn, size_t... kIndex>
Status dispatch_listed_tiles(TileShape tile, Fn&& fn, std::index_sequence<kIndex...>) {
  Status status = Status::kInvalidArgument;
  (void)(dispatch_listed_tile<Op, Math, kFast, kIndex>(tile, fn, status) || ...);
  return status;
}

template <class Op, class Math, bool kFast, class Fn>
Status dispatch_tile(TileShape tile, Fn&& fn) {
  return dispatch_listed_tiles<Op, Math, kFast>(tile, fn, std::make_index_sequence<kConvTileCount>{});
}

template <template <typename, bool> class Op, typename T, class Math, bool kCL, class Fn>
Status dispatch_loaders(const GemmChoice& c, Fn&& fn) {
  using O = Op<T, kCL>;
  if constexpr (O::kFastA || O::kFastB) {
    if (c.fast) return dispatch_tile<O, Math, true>(c.tile, fn);
  }
  return dispatch_tile<O, Math, false>(c.tile, fn);
}

template <typename T> constexpr bool kHasTensorCorePath = !std::is_same_v<T, double>;
template <typename T> constexpr bool kHasSimtPath = std::is_same_v<T, float> || std::is_same_v<T, double>;

template <template <typename, bool> class Op, typename T, class Fn>
Status dispatch_gemm(const GemmChoice& c, Fn&& fn) {
  const auto with_math = [&](auto math_tag) {
    using Math = typename decltype(math_tag)::type;
    if (c.channels_last) return dispatch_loaders<Op, T, Math, true>(c, fn);
    return dispatch_loaders<Op, T, Math, false>(c, fn);
  };
  if constexpr (kHasTensorCorePath<T>) {
    if (c.tensor_cores) return with_math(TypeTag<TensorCoreMath>{});
  }
  if constexpr (kHasSimtPath<T>) {
    if (!c.tensor_cores) return with_math(TypeTag<SimtMath>{});
  }
  return Status::kUnsupportedDType;
}

// The launches need a CUDA compiler (<<<>>>). A host compiler stops here: the warp emulator
// (tests/emulator) compiles everything above, kernel included, with g++ and runs it on the CPU.
#ifdef __CUDACC__

template <class Gemm>
Status launch_conv_gemm(const typename Gemm::Args& args, dim3 grid, cudaStream_t stream) {
  if (!allow_dynamic_smem(conv_gemm_kernel<Gemm>, Gemm::kSmemBytes)) return Status::kLaunchFailed;
  conv_gemm_kernel<Gemm><<<grid, Gemm::kThreads, Gemm::kSmemBytes, stream>>>(args);
  return check_launch();
}

// Entry points, instantiated once per dtype in the generated conv2d_gemm_<dtype>.cu files.
template <typename T>
Status launch_forward_gemm(const ForwardArgs& args, const GemmChoice& c, dim3 grid, cudaStream_t stream) {
  return dispatch_gemm<ForwardOp, T>(
      c, [&](auto gemm) { return launch_conv_gemm<typename decltype(gemm)::type>(args, grid, stream); });
}
template <typename T>
Status launch_dgrad_gemm(const DgradArgs& args, const GemmChoice& c, dim3 grid, cudaStream_t stream) {
  return dispatch_gemm<DgradOp, T>(
      c, [&](auto gemm) { return launch_conv_gemm<typename decltype(gemm)::type>(args, grid, stream); });
}
template <typename T>
Status launch_wgrad_gemm(const WgradArgs& args, const GemmChoice& c, dim3 grid, cudaStream_t stream) {
  return dispatch_gemm<WgradOp, T>(
      c, [&](auto gemm) { return launch_conv_gemm<typename decltype(gemm)::type>(args, grid, stream); });
}

// BEGIN GENERATED by csrc/cuda/generate_kernels.py: do not edit by hand
extern template Status launch_forward_gemm<__half>(const ForwardArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_dgrad_gemm<__half>(const DgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_wgrad_gemm<__half>(const WgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_forward_gemm<__nv_bfloat16>(const ForwardArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_dgrad_gemm<__nv_bfloat16>(const DgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_wgrad_gemm<__nv_bfloat16>(const WgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_forward_gemm<float>(const ForwardArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_dgrad_gemm<float>(const DgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_wgrad_gemm<float>(const WgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_forward_gemm<double>(const ForwardArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_dgrad_gemm<double>(const DgradArgs&, const GemmChoice&, dim3, cudaStream_t);
extern template Status launch_wgrad_gemm<double>(const WgradArgs&, const GemmChoice&, dim3, cudaStream_t);
// END GENERATED by csrc/cuda/generate_kernels.py

#endif  // __CUDACC__

}  // namespace conv
}  // namespace dlk
