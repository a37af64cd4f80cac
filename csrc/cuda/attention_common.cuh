// Device helpers shared by the flash-attention kernels (forward in attention_fwd_kernel.cuh,
// backward in attention_bwd_kernel.cuh): where a sequence lives, which key blocks a query block sees
// (and the first query that sees a key), the swizzled shared-memory layout of a
// (rows x head_dim) fp16/bf16 tile and its cp.async loader, the lane -> row/chunk maps that feed
// ldmatrix for the mma.sync m16n8k16 fragments, and the accumulator -> A fragment conversion.
//
// Everything that is pure index math is DLK_HOST_DEVICE so that a host harness can check it (block
// ranges against attention_key_end, the swizzle being a bijection and bank-conflict free, fragment
// addressing against a plain matrix product). The semantics are those of dlk/attention.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "dlk/attention.h"
#include "tensor_core.cuh"

namespace dlk {
namespace attn {

// Loops kept rolled in device code (host compilers warn about the unknown pragma).
#ifdef __CUDA_ARCH__
#define DLK_ATTN_NO_UNROLL _Pragma("unroll 1")
#else
#define DLK_ATTN_NO_UNROLL
#endif

constexpr int kWarpSize = 32;
constexpr int kChunkBytes = 16;  // one cp.async / one ldmatrix row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

DLK_HOST_DEVICE int ceil_div_int(int a, int b) { return (a + b - 1) / b; }
DLK_HOST_DEVICE int min_int(int a, int b) { return a < b ? a : b; }
DLK_HOST_DEVICE int max_int(int a, int b) { return a > b ? a : b; }

// Offset of element (b, h, token, 0) of a q/k/v/out-like tensor: the one indexing rule of
// dlk/attention.h (token = sequence start + row; the batch stride is 0 in varlen mode).
DLK_HOST_DEVICE int64_t row_offset(int64_t batch_stride, int64_t head_stride, int64_t row_stride, int b, int h,
                                   int64_t token) {
  return b * batch_stride + h * head_stride + token * row_stride;
}

// ---------------------------------------------------------------------------------------------
// Where sequence b lives (dense: the batch stride moves between sequences; varlen: cu_seqlens).
struct AttentionSequence {
  int64_t start_q = 0, start_k = 0;  // row offsets added to i / j (multiplied by the row strides)
  int64_t token_q = 0;               // first query token in the flattened total_q (dropout counter)
  int len_q = 0, len_k = 0;
};

// Host side: whether every row of a (batch, head, row)-strided tensor starts on a 16-byte boundary,
// as cp.async and the 16-byte stores of the tensor-core kernels need (an aligned base and strides
// that are multiples of 16 bytes).
inline bool rows_16_byte_aligned(const void* base, int64_t batch_stride, int64_t head_stride, int64_t row_stride,
                                 int64_t element_bytes) {
  const int64_t elements = kChunkBytes / element_bytes;
  return is_aligned(base, kChunkBytes) && batch_stride % elements == 0 &&
         head_stride % elements == 0 && row_stride % elements == 0;
}

DLK_HOST_DEVICE AttentionSequence attention_sequence(const AttentionParams& p, int b) {
  AttentionSequence s;
  if (p.cu_seqlens_q != nullptr) {
    s.start_q = p.cu_seqlens_q[b];
    s.start_k = p.cu_seqlens_k[b];
    s.token_q = s.start_q;
    s.len_q = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
    s.len_k = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
  } else {
    // Dense: the dropout counter needs a token index unique over the batch, hence b * Nq
    // (dlk/attention.h: "unique per element of the batch"; total_q = B * Nq).
    s.token_q = int64_t(b) * p.seqlen_q;
    s.len_q = p.seqlen_q;
    s.len_k = p.seqlen_k;
  }
  return s;
}

// A packed sequence longer than max_seqlen_q / max_seqlen_k (p.seqlen_q / p.seqlen_k): the grids are
// sized by those maxima, so its last rows would never be written. dlkernels.attention refuses such calls
// in eager mode, but under torch.compile it cannot read cu_seqlens, and the launcher could only read them
// with a device sync: the kernels fill the sequence's outputs with NaN instead, as the Triton ones do.
DLK_HOST_DEVICE bool attention_sequence_too_long(const AttentionParams& p, const AttentionSequence& s) {
  return p.cu_seqlens_q != nullptr && (s.len_q > p.seqlen_q || s.len_k > p.seqlen_k);
}

// NaN into rows [0, rows) of head h of a q/k/v-like tensor, from token first_token on; by a whole block.
template <typename T>
__device__ void fill_rows_with_nan(void* base, int64_t batch_stride, int64_t head_stride, int64_t row_stride, int b,
                                   int h, int64_t first_token, int rows, int head_dim) {
  T* const start = static_cast<T*>(base) + row_offset(batch_stride, head_stride, row_stride, b, h, first_token);
  const T nan = from_accumulate<T>(__int_as_float(0x7fc00000));
  for (int64_t e = threadIdx.x; e < int64_t(rows) * head_dim; e += blockDim.x)
    start[(e / head_dim) * row_stride + e % head_dim] = nan;
}

// The forward's outputs of (sequence s, head h): out and lse rows.
template <typename T>
__device__ void fill_forward_with_nan(const AttentionFwdParams& p, const AttentionSequence& s, int b, int h) {
  fill_rows_with_nan<T>(p.out, p.out_batch_stride, p.out_head_stride, p.out_row_stride, b, h, s.start_q, s.len_q,
                        p.head_dim);
  float* const lse = static_cast<float*>(p.lse) + b * p.lse_batch_stride + h * p.lse_head_stride + s.start_q;
  for (int i = threadIdx.x; i < s.len_q; i += blockDim.x) lse[i] = __int_as_float(0x7fc00000);
}

// What a forward CTA reads: q from query row first_row of head h, k and v from key 0 of KV head h_kv,
// all of sequence b.
template <typename T>
struct ForwardInputs {
  const T* q;
  const T* k;
  const T* v;
};

template <typename T>
DLK_HOST_DEVICE ForwardInputs<T> forward_inputs(const AttentionParams& p, const AttentionSequence& seq, int b,
                                                int h, int h_kv, int first_row) {
  const int64_t q_offset = row_offset(p.q_batch_stride, p.q_head_stride, p.q_row_stride, b, h, seq.start_q + first_row);
  const int64_t k_offset = row_offset(p.k_batch_stride, p.k_head_stride, p.k_row_stride, b, h_kv, seq.start_k);
  const int64_t v_offset = row_offset(p.v_batch_stride, p.v_head_stride, p.v_row_stride, b, h_kv, seq.start_k);
  return {static_cast<const T*>(p.q) + q_offset, static_cast<const T*>(p.k) + k_offset,
          static_cast<const T*>(p.v) + v_offset};
}

// ---------------------------------------------------------------------------------------------
// Causal block ranges. attention_key_end(i) is non-decreasing in i, so the keys visible to any row
// of [row_begin, row_end) end at key_end(row_end - 1), and every row sees at least the keys below
// key_end(row_begin).

// Number of key blocks (of block_n keys) that some row of [row_begin, row_end) sees; row_end is
// clipped to len_q. Blocks [0, result) are processed; 0 when no row sees any key.
DLK_HOST_DEVICE int attention_key_block_end(const AttentionParams& p, int row_begin, int row_end, int len_q,
                                            int len_k, int block_n) {
  const int last_row = min_int(row_end, len_q) - 1;
  if (last_row < row_begin) return 0;
  return ceil_div_int(attention_key_end(p, last_row, len_q, len_k), block_n);
}

// Key blocks below this index are visible in full to every row >= row_begin (no mask needed);
// blocks from here on hold a causal diagonal or the ragged end of the keys and are masked.
DLK_HOST_DEVICE int attention_unmasked_key_blocks(const AttentionParams& p, int row_begin, int len_q, int len_k,
                                                  int block_n) {
  return attention_key_end(p, row_begin, len_q, len_k) / block_n;
}

// First query row that sees key j (len_q when none does): the inverse of attention_key_end, for
// loops over query blocks per key block (the backward).
DLK_HOST_DEVICE int attention_first_query(const AttentionParams& p, int j, int len_q, int len_k) {
  if (!p.causal) return len_k > 0 ? 0 : len_q;
  const int shift = p.causal_bottom_right ? len_k - len_q : 0;
  const int first = j - shift;  // j <= i + shift
  return first < 0 ? 0 : (first > len_q ? len_q : first);
}

// ---------------------------------------------------------------------------------------------
// Shared-memory tile of kRows x kHeadDim 16-bit elements (fp16 / bf16).
//
// Stored as column blocks ("atoms") of kAtomChunks 16-byte chunks per row: 8 chunks (128 bytes,
// one full bank sweep) when kHeadDim % 64 == 0, else 4 chunks (64 bytes: head dims 32 and 96).
// Block after block, each block row after row. Within a block, chunk c of row r sits at physical
// chunk c ^ swizzle(r), swizzle(r) = (r / rows_per_128_bytes) % kAtomChunks. ldmatrix reads one
// logical chunk of 8 consecutive rows (8 aligned to 8): the XOR spreads them over the 8 distinct
// 16-byte bank groups of a 128-byte line, so every phase is conflict-free; so are the cp.async
// writes, which fill the tile in storage order (8 consecutive chunks = one 128-byte line).
template <int kRows, int kHeadDim>
struct TileLayout {
  static constexpr int kElemBytes = 2;
  static constexpr int kChunkElems = kChunkBytes / kElemBytes;  // 8
  static constexpr int kChunksPerRow = kHeadDim / kChunkElems;
  static constexpr int kAtomChunks = kHeadDim % 64 == 0 ? 8 : 4;
  static constexpr int kRowsPer128Bytes = 8 / kAtomChunks;
  static constexpr int kAtoms = kChunksPerRow / kAtomChunks;
  static constexpr int kChunks = kRows * kChunksPerRow;
  static constexpr int kBytes = kChunks * kChunkBytes;
  static_assert(kHeadDim % 32 == 0, "head dims are multiples of 32");
  static_assert(kRows % 8 == 0, "ldmatrix reads rows in groups of 8");

  // Byte offset of logical chunk `chunk` (0 .. kChunksPerRow) of row `row`.
  DLK_HOST_DEVICE static uint32_t offset(int row, int chunk) {
    const int atom = chunk / kAtomChunks;
    const int physical = (chunk % kAtomChunks) ^ ((row / kRowsPer128Bytes) % kAtomChunks);
    return uint32_t(((atom * kRows + row) * kAtomChunks + physical) * kChunkBytes);
  }
  // offset(row0 + r, chunk0 + c) from offset(r, c), for row0 % 8 == 0 (the swizzle repeats every 8
  // rows), chunk0 even and c in {0, 1} (chunk0 + c then stays in chunk0's atom and (chunk0 % A) + c
  // == (chunk0 % A) ^ c). The swizzle bits of an offset (bits 4 .. 4 + log2 A) are untouched by the
  // row and atom terms, so the step is one XOR plus a constant: ldmatrix addresses are a per-lane
  // base computed once, not one live register per fragment.
  DLK_HOST_DEVICE static uint32_t shifted_offset(uint32_t lane_offset, int row0, int chunk0) {
    return (lane_offset ^ uint32_t((chunk0 % kAtomChunks) * kChunkBytes)) +
           uint32_t(((chunk0 / kAtomChunks) * kRows + row0) * kAtomChunks * kChunkBytes);
  }
  // Inverse of the storage order: the i-th chunk in storage order (before the swizzle) is logical
  // (row, chunk). Loaders walk this order so that consecutive lanes write one 128-byte line.
  DLK_HOST_DEVICE static void storage_chunk(int i, int& row, int& chunk) {
    const int atom = i / (kRows * kAtomChunks);
    const int rest = i % (kRows * kAtomChunks);
    row = rest / kAtomChunks;
    chunk = atom * kAtomChunks + rest % kAtomChunks;
  }
};

// 16 bytes global -> shared, or zeros when !valid (src must still be a valid address). Aligned:
// cp.async (asynchronous: complete after cp_async_wait + a barrier). Unaligned sources (a q/k/v
// view whose base or strides are not 16-byte multiples): element loads through registers, complete
// before the next barrier.
template <typename T>
DLK_HOST_DEVICE void copy_chunk(char* dst, const T* src, bool valid, bool aligned) {
#ifdef __CUDA_ARCH__
  if (aligned) {
    cp_async_16(shared_address(dst), src, valid);
    return;
  }
#endif
  (void)aligned;
  constexpr int kElems = kChunkBytes / int(sizeof(T));
  Vector<T, kElems> chunk;
  for (int e = 0; e < kElems; ++e) chunk.val[e] = valid ? src[e] : T(0.0f);
  *reinterpret_cast<Vector<T, kElems>*>(dst) = chunk;
}

// The chunk thread `tid` of kThreads copies in pass `pass`: chunk tid + pass * kThreads in storage
// order (TileLayout::storage_chunk), written so that the row advances by a constant per pass and
// the thread's chunk within its atom stays fixed: the shared offset is then a per-thread base plus
// a constant (the swizzle repeats every 8 rows), and the global address a base plus pass * stride.
template <int kRows, int kHeadDim, int kThreads>
DLK_HOST_DEVICE void thread_chunk(int tid, int pass, int& row, int& chunk) {
  using Layout = TileLayout<kRows, kHeadDim>;
  constexpr int kAtomChunks = kRows * Layout::kAtomChunks;  // chunks per atom (column block)
  static_assert(kAtomChunks % kThreads == 0, "a pass stays within one atom");
  static_assert((kThreads / Layout::kAtomChunks) % 8 == 0, "a pass advances by whole swizzle periods");
  const int first = pass * kThreads;  // compile-time in unrolled loops
  row = tid / Layout::kAtomChunks + (first % kAtomChunks) / Layout::kAtomChunks;
  chunk = (first / kAtomChunks) * Layout::kAtomChunks + tid % Layout::kAtomChunks;
}

// Loads rows [0, kRows) of a tile whose row r starts at base + r * row_stride (elements); rows at
// or past valid_rows are zero-filled (so masked keys contribute 0 * 0, never 0 * garbage).
template <int kRows, int kHeadDim, int kThreads, typename T>
DLK_HOST_DEVICE void load_tile(char* tile, const T* base, int64_t row_stride, int valid_rows, bool aligned, int tid) {
  using Layout = TileLayout<kRows, kHeadDim>;
  static_assert(Layout::kChunks % kThreads == 0, "every thread copies the same number of chunks");
  DLK_UNROLL
  for (int pass = 0; pass < Layout::kChunks / kThreads; ++pass) {
    int row, chunk;
    thread_chunk<kRows, kHeadDim, kThreads>(tid, pass, row, chunk);
    const bool valid = row < valid_rows;
    const T* src = base + (valid ? int64_t(row) * row_stride + chunk * Layout::kChunkElems : 0);
    copy_chunk(tile + Layout::offset(row, chunk), src, valid, aligned);
  }
}

// ---------------------------------------------------------------------------------------------
// ldmatrix.x4 addressing (lane l supplies the row address of row l % 8 of matrix l / 8). Each
// function returns the (tile row, logical chunk) lane `lane` points at; the caller adds the layout
// offset. Fragment layouts: tensor_core.cuh.

// A fragment of m16n8k16 (16 rows x 16 k) from a row-major tile (rows = M, chunks along k):
// matrix j = rows row0 + 8 * (j % 2) .. +7, chunk chunk0 + j / 2 -> a[j] as the mma expects.
DLK_HOST_DEVICE void a_fragment_lane(int lane, int row0, int chunk0, int& row, int& chunk) {
  const int j = lane / 8;
  row = row0 + 8 * (j % 2) + lane % 8;
  chunk = chunk0 + j / 2;
}

// B fragments of two adjacent n8 tiles from a tile whose rows are n (K in S = Q K^T: rows = keys,
// chunks along the head dim = k): matrix j = rows n0 + 8 * (j / 2) .. +7, chunk chunk0 + j % 2;
// regs {0, 1} are the B fragment of n-tile n0, regs {2, 3} of n-tile n0 + 8.
DLK_HOST_DEVICE void b_fragment_lane(int lane, int n0, int chunk0, int& row, int& chunk) {
  const int j = lane / 8;
  row = n0 + 8 * (j / 2) + lane % 8;
  chunk = chunk0 + j % 2;
}

// B fragments of two adjacent n8 tiles from a tile whose rows are k (V in O = P V: rows = keys = k,
// chunks along the head dim = n), loaded with ldmatrix.trans: matrix j = rows k0 + 8 * (j % 2) ..
// +7, chunk chunk0 + j / 2; regs {0, 1} serve n-tile chunk0 (k0 .. k0+7, k0+8 .. k0+15), regs
// {2, 3} n-tile chunk0 + 1.
DLK_HOST_DEVICE void b_trans_fragment_lane(int lane, int k0, int chunk0, int& row, int& chunk) {
  const int j = lane / 8;
  row = k0 + 8 * (j % 2) + lane % 8;
  chunk = chunk0 + j / 2;
}

// ---------------------------------------------------------------------------------------------
// Small device helpers.

// Two floats -> one 32-bit register of two 16-bit values (low half = first), the operand format of
// the mma A/B fragments.
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack_pair<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack_pair<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The C fragments of n-tiles 2s and 2s+1 (rows g, g+8; columns 16s + 2t + {0, 1}, + 8) as the A
// fragment of k-step s (FlashAttention-2's register reuse: P or dS feed the next mma directly):
// a[0] = (g, 2t), a[1] = (g + 8, 2t), a[2] = (g, 2t + 8), a[3] = (g + 8, 2t + 8).
template <typename T>
__device__ __forceinline__ void accumulators_to_a_fragment(uint32_t (&a)[4], const float (&lo)[4],
                                                           const float (&hi)[4]) {
  a[0] = pack_pair<T>(lo[0], lo[1]);
  a[1] = pack_pair<T>(lo[2], lo[3]);
  a[2] = pack_pair<T>(hi[0], hi[1]);
  a[3] = pack_pair<T>(hi[2], hi[3]);
}

// Max / sum over the 4 lanes of a quad (the lanes holding one row of an mma C fragment).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace attn
}  // namespace dlk
