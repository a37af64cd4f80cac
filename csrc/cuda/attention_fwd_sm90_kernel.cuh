// Flash-attention forward for Hopper (sm_90a): FlashAttention-2's algorithm on warpgroup MMAs
// (wgmma.mma_async), fp16 / bf16, head dims 64, 128 and 256. Included by attention_fwd_sm90.cu
// (instantiations, the availability check) and attention_fwd.cu (dispatch).
//
// OPT-IN: nothing of this kernel has run on a GPU yet. attention_fwd.cu takes it only when
// DLK_ATTENTION_WGMMA=1 (read at every launch) and the binary holds its sm_90a code and the device is
// compute capability 9.0. Flip the default to on once a GPU run has verified it (the cuda-marked tests
// in tests/test_attention.py with DLK_ATTENTION_WGMMA=1) and measured it faster than the mma.sync
// kernel of attention_fwd_kernel.cuh.
//
// One CTA per (block of kBlockM = 128 query rows, query head, sequence): 2 warpgroups of 128 threads,
// warpgroup g owning rows [64 g, 64 g + 64) (wgmma's M is 64 per warpgroup). Per key block of kBlockN
// keys (everything in registers except the operands read from shared memory):
//   S = Q K^T     wgmma m64nNk16, N = kBlockN, A = Q and B = K from shared memory (both K-major)
//   online softmax on the accumulators (the rules and helpers of attention_fwd_kernel.cuh)
//   O += P V      wgmma m64nDk16, A = P from registers (the S accumulators of two n8 tiles are the
//                 A fragment of one k16 step, as in FA2), B = V from shared memory, MN-major
//                 (imm-trans-b = 1: V is stored keys x head dim, head dim contiguous)
// Pipelining inside a warpgroup (FlashAttention-3's intra-warpgroup overlap): iteration j issues
// S(j+1) = Q K(j+1)^T and then O += P(j) V(j); it waits for S(j+1) only, runs the softmax of block j+1
// while P(j) V(j) is still on the tensor cores, then waits for it, rescales O and turns S(j+1) into
// P(j+1). The two warpgroups overlap each other's softmax and MMAs through the warp schedulers.
//
// Memory: Q (kBlockM x D) and a 2-stage ring of (K, V) tiles (kBlockN x D each), filled by cp.async
// (any strides, varlen, GQA and zero-filled ragged tails exactly as the mma.sync kernel), stored in
// TileLayout (attention_common.cuh): for D % 64 == 0 that is the 128-byte-swizzle layout wgmma's
// descriptors describe (column blocks of 64 elements, rows of 128 bytes, chunk c of row r at c ^ r % 8),
// provided every tile starts 1024-byte aligned (the kernel aligns the dynamic shared memory itself).
// Written data reaches wgmma through cp.async.wait_group, fence.proxy.async (generic -> async proxy)
// and a barrier. The output is staged through Q's shared memory for 16-byte stores.
// Copy pipeline: K(j) is done with once S(j) is (iteration j - 1), V(j) once P(j) V(j) is (iteration j),
// so K and V are separate cp.async groups, each refilled as soon as its tile is free: iteration j
// waits for K(j + 1) and V(j) with one group (V(j + 1)) left in flight, then issues K(j + 2); V(j + 2)
// follows at its end. A single (K, V) group per block, refilled at the end of iteration j, would be
// waited for at the top of iteration j + 1 with nothing left in flight (tests/test_cuda_sass.py
// checks the wait depth in the main loop's SASS).
//
// Tiles and resources (nvcc 13.0, sm_90a, ptxas -v, fp16 and bf16 alike; 1 CTA of 256 threads per
// SM; accumulator registers per thread in parentheses):
//   D = 64:  kBlockN 128, smem  82944 B (80 KB + 1 KB alignment slack), 236 registers, no spills
//            (S 64, O 32, P 32)
//   D = 128: kBlockN 128, smem 164864 B (160 KB + 1 KB), 238 registers, no spills (S 64, O 64, P 32)
//   D = 256: kBlockN 64,  smem 197632 B (192 KB + 1 KB), 242 registers, no spills (S 32, O 128, P 16)
// cuobjdump -sass shows HGMMA.64x{64,128,256}x16.F32.{F16,BF16} and no "wgmma serialized" (C7514)
// or injected warpgroup.arrive (C7519) notes from ptxas; keep it so when editing the main loop
// (branches around the wgmmas brought both back: hence the peeled last iteration).
//
// Not handled here (the dispatcher keeps the mma.sync kernel for them): bias, dropout, head dims
// 32 / 96, rows not 16-byte aligned, fp32, devices other than 9.0, builds without sm_90a.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attention_common.cuh"
#include "attention_fwd_kernel.cuh"  // ForwardArgs, score_log2, online_softmax_step, softmax_finish, launch_over_batches
#include "common.cuh"
#include "dlk/attention.h"
#include "tensor_core.cuh"
#include "wgmma.cuh"

namespace dlk {
namespace attn {

template <int kHeadDim>
struct Sm90ForwardConfig {
  static_assert(kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256, "wgmma path: head dims 64, 128, 256");
  static constexpr int kWarpgroupThreads = 128;
  static constexpr int kWarpgroups = 2;
  static constexpr int kThreads = kWarpgroups * kWarpgroupThreads;
  static constexpr int kWarpgroupRows = 64;  // wgmma M
  static constexpr int kBlockM = kWarpgroups * kWarpgroupRows;
  // S (kBlockN / 2) + O (D / 2) + P (kBlockN / 4) registers per thread must stay well below 255.
  static constexpr int kBlockN = kHeadDim == 256 ? 64 : 128;
  static constexpr int kStages = 2;
  using QLayout = TileLayout<kBlockM, kHeadDim>;
  using KVLayout = TileLayout<kBlockN, kHeadDim>;
  static_assert(QLayout::kAtomChunks == 8, "128-byte swizzle: 8 chunks of 16 bytes per row");
  static constexpr int kAlignment = int(wgmma::kSwizzleAtomBytes);
  static_assert(QLayout::kBytes % kAlignment == 0 && KVLayout::kBytes % kAlignment == 0,
                "every tile starts on a swizzle-atom boundary");
  static constexpr int kSmemBytes = QLayout::kBytes + kStages * 2 * KVLayout::kBytes + kAlignment;
  static_assert(kSmemBytes <= 227 * 1024, "sm_90 opt-in shared memory per block");
  static constexpr int kSRegs = kBlockN / 2;   // S accumulators (m64 x kBlockN over 128 threads)
  static constexpr int kORegs = kHeadDim / 2;  // O accumulators
  static constexpr int kPSteps = kBlockN / 16;  // k16 steps of P V
  static constexpr int kDSteps = kHeadDim / 16;  // k16 steps of Q K^T
};

// ---------------------------------------------------------------------------------------------
// Layout math (host-callable: tests/wgmma_layout_check.cu checks it against the PTX ISA's canonical
// layouts and fragment maps).

// Row (0 .. 63 within the warpgroup) and column of accumulator register i of warpgroup thread t
// (PTX ISA wgmma D fragment; CUTLASS CLayout_64xN).
DLK_HOST_DEVICE int accumulator_row(int thread, int i) {
  return 16 * (thread / kWarpSize) + (thread % kWarpSize) / 4 + 8 * ((i / 2) % 2);
}
DLK_HOST_DEVICE int accumulator_col(int thread, int i) { return 8 * (i / 4) + 2 * (thread % 4) + i % 2; }

// The S accumulator whose value becomes element `half` (0: low 16 bits) of register `reg` of the P
// A fragment of k16 step `step`: the A fragment of step s covers columns 16 s .. 16 s + 15, i.e. the
// accumulator n8 tiles 2 s (registers 8 s .. 8 s + 3) and 2 s + 1 (8 s + 4 .. 8 s + 7); A register r
// holds row + 8 (r % 2), columns 8 (r / 2) + 2 t + half.
DLK_HOST_DEVICE int p_source_register(int step, int reg, int half) {
  return 8 * step + 4 * (reg / 2) + 2 * (reg % 2) + half;
}

// Descriptors of the operands of k16 step `step`. Tile addresses are shared-window addresses of
// TileLayout tiles, 1024-byte aligned.
template <int kHeadDim>
struct Sm90Descriptors {
  using Config = Sm90ForwardConfig<kHeadDim>;
  static constexpr uint32_t kSwizzleAtom = wgmma::kSwizzleAtomBytes;  // SBO: the next 8 rows
  static constexpr uint32_t kStepBytes = 16 * 2;                       // k16 of 16-bit elements
  static constexpr int kStepsPerColumnBlock = 64 / 16;                 // a 128-byte row holds 64 elements
  // K-major LBO is unused with the 128-byte swizzle; 16 bytes (encoded 1) as CUTLASS writes.
  static constexpr uint32_t kUnusedLeading = 16;

  // Q rows [64 warpgroup, +64) x k [16 step, +16): K-major A.
  DLK_HOST_DEVICE static uint64_t q(uint32_t q_tile, int warpgroup, int step) {
    const uint32_t column_block = uint32_t(step / kStepsPerColumnBlock) * Config::kBlockM * wgmma::kSwizzleBytes;
    const uint32_t rows = uint32_t(warpgroup * Config::kWarpgroupRows) * wgmma::kSwizzleBytes;
    return wgmma::make_descriptor(q_tile + column_block + rows + uint32_t(step % kStepsPerColumnBlock) * kStepBytes,
                                  kUnusedLeading, kSwizzleAtom);
  }
  // K keys [0, kBlockN) x k [16 step, +16): K-major B (S = Q K^T reads K^T column-major = K rows).
  DLK_HOST_DEVICE static uint64_t k(uint32_t k_tile, int step) {
    const uint32_t column_block = uint32_t(step / kStepsPerColumnBlock) * Config::kBlockN * wgmma::kSwizzleBytes;
    return wgmma::make_descriptor(k_tile + column_block + uint32_t(step % kStepsPerColumnBlock) * kStepBytes,
                                  kUnusedLeading, kSwizzleAtom);
  }
  // V keys [16 step, +16) (= k) x head dim [0, D) (= N): MN-major B. LBO: the next 64 columns of the
  // head dim (the next column block of the tile); SBO: the next 8 keys.
  DLK_HOST_DEVICE static uint64_t v(uint32_t v_tile, int step) {
    return wgmma::make_descriptor(v_tile + uint32_t(16 * step) * wgmma::kSwizzleBytes,
                                  uint32_t(Config::kBlockN) * wgmma::kSwizzleBytes, kSwizzleAtom);
  }
};

// ---------------------------------------------------------------------------------------------
// The kernel.

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(Sm90ForwardConfig<kHeadDim>::kThreads, 1)
    attention_forward_sm90_kernel(const __grid_constant__ ForwardArgs args) {
#ifdef DLK_WGMMA_AVAILABLE
  using Config = Sm90ForwardConfig<kHeadDim>;
  using QLayout = typename Config::QLayout;
  using KVLayout = typename Config::KVLayout;
  using Desc = Sm90Descriptors<kHeadDim>;
  constexpr int kBlockM = Config::kBlockM, kBlockN = Config::kBlockN, kThreads = Config::kThreads;
  constexpr int kSRegs = Config::kSRegs, kORegs = Config::kORegs, kPSteps = Config::kPSteps;
  constexpr int kDSteps = Config::kDSteps;
  constexpr TypeTag<T> kTag{};
  constexpr int kVMajorMN = 1;  // imm-trans-b of P V

  // The swizzle is a function of address bits [4, 10): tiles must start 1024-byte aligned, which the
  // declared alignment of dynamic shared memory does not promise; round up (kSmemBytes has the slack).
  extern __shared__ __align__(1024) char smem_raw[];
  char* const smem = smem_raw + ((Config::kAlignment - (shared_address(smem_raw) % Config::kAlignment)) %
                                 Config::kAlignment);
  char* const q_tile = smem;
  const auto k_tile = [&](int stage) { return smem + QLayout::kBytes + stage * 2 * KVLayout::kBytes; };
  const auto v_tile = [&](int stage) { return k_tile(stage) + KVLayout::kBytes; };

  const AttentionFwdParams& p = args.params;
  const int b = int(blockIdx.z) + args.batch_offset, h = blockIdx.y;
  const int row_begin = int(blockIdx.x) * kBlockM;
  const AttentionSequence seq = attention_sequence(p, b);
  if (attention_sequence_too_long(p, seq)) {  // a caller's error: NaN, not stale memory (as the mma.sync kernel)
    if (blockIdx.x == 0) fill_forward_with_nan<T>(p, seq, b, h);
    return;
  }
  if (row_begin >= seq.len_q) return;  // varlen: this sequence is shorter than max_seqlen_q
  const int h_kv = h / args.group_size;
  const int valid_rows = seq.len_q - row_begin;

  // Named pointers, not a structured binding: C++17 lambdas cannot capture those.
  const ForwardInputs<T> inputs = forward_inputs<T>(p, seq, b, h, h_kv, row_begin);
  const T* const q = inputs.q;
  const T* const k = inputs.k;
  const T* const v = inputs.v;

  const int tid = threadIdx.x;
  const int warpgroup = tid / Config::kWarpgroupThreads, wg_thread = tid % Config::kWarpgroupThreads;
  const int wg_row_begin = row_begin + warpgroup * Config::kWarpgroupRows;
  const int key_blocks = attention_key_block_end(p, row_begin, row_begin + kBlockM, seq.len_q, seq.len_k, kBlockN);
  const int unmasked_blocks = attention_unmasked_key_blocks(p, wg_row_begin, seq.len_q, seq.len_k, kBlockN);
  const int quad_lane = wg_thread % 4;

  // This thread's two rows (accumulator registers i with (i / 2) % 2 == rr).
  int key_end[2];
  int local_row[2];  // within the CTA's kBlockM rows
  DLK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    local_row[rr] = warpgroup * Config::kWarpgroupRows + accumulator_row(wg_thread, 2 * rr);
    key_end[rr] = attention_key_end(p, row_begin + local_row[rr], seq.len_q, seq.len_k);
  }

  // Rows are 16-byte aligned (attention_forward_sm90_supported): cp.async only, no element-wise
  // fallback compiled in.
  constexpr bool kAligned = true;
  // K and V of a key block are loaded (and committed) apart: K(j) is free one iteration before V(j) (see the
  // main loop), so each refill starts as early as its tile is free.
  const auto load_keys = [&](int block, int stage) {
    const int64_t key0 = int64_t(block) * kBlockN;
    load_tile<kBlockN, kHeadDim, kThreads>(k_tile(stage), k + key0 * p.k_row_stride, p.k_row_stride,
                                           seq.len_k - int(key0), kAligned, tid);
  };
  const auto load_values = [&](int block, int stage) {
    const int64_t key0 = int64_t(block) * kBlockN;
    load_tile<kBlockN, kHeadDim, kThreads>(v_tile(stage), v + key0 * p.v_row_stride, p.v_row_stride,
                                           seq.len_k - int(key0), kAligned, tid);
  };
  // cp.async data of this thread -> visible to every thread's wgmma.
  const auto publish_copies = [] {
    wgmma::fence_shared_for_async_proxy();
    __syncthreads();
  };

  // Prologue: cp.async groups {Q, K(0), V(0)}, {K(1)}, {V(1)}. The main loop then commits K(j + 2) at the top
  // and V(j + 2) at the end of iteration j. Every group is committed even when empty, so that the waits count
  // right: at the top of iteration j the newest group is V(j + 1), the only one allowed to stay in flight.
  static_assert(Config::kStages == 2, "the commit order above is that of a two-stage ring");
  load_tile<kBlockM, kHeadDim, kThreads>(q_tile, q, p.q_row_stride, valid_rows, kAligned, tid);
  if (key_blocks > 0) {
    load_keys(0, 0);
    load_values(0, 0);
  }
  cp_async_commit();
  if (key_blocks > 1) load_keys(1, 1);
  cp_async_commit();
  if (key_blocks > 1) load_values(1, 1);
  cp_async_commit();

  float acc_o[kORegs];
  DLK_UNROLL
  for (int i = 0; i < kORegs; ++i) acc_o[i] = 0.0f;
  float acc_s[kSRegs];
  uint32_t p_frag[kPSteps][4];
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this lane's part of l; the quad's lanes are summed at the end
  float rescale[2] = {1.0f, 1.0f};  // of O, from the latest softmax step, applied once P V is done

  const uint32_t q_smem = shared_address(q_tile);
  // S = Q K^T into acc_s (issued, committed, not waited for).
  const auto issue_scores = [&](int stage) {
    const uint32_t k_smem = shared_address(k_tile(stage));
    DLK_UNROLL
    for (int step = 0; step < kDSteps; ++step) {
      wgmma::mma_ss<0, 0>(acc_s, Desc::q(q_smem, warpgroup, step), Desc::k(k_smem, step), step > 0 ? 1 : 0, kTag);
    }
    wgmma::commit_group();
  };
  // O += P V (issued, committed, not waited for).
  const auto issue_pv = [&](int stage) {
    const uint32_t v_smem = shared_address(v_tile(stage));
    DLK_UNROLL
    for (int step = 0; step < kPSteps; ++step) {
      wgmma::mma_rs<kVMajorMN>(acc_o, p_frag[step], Desc::v(v_smem, step), 1, kTag);
    }
    wgmma::commit_group();
  };
  // Online softmax of key block `block` in acc_s (scores -> unnormalized P, fp32); sets rescale.
  const auto softmax = [&](int block) {
    const int key0 = block * kBlockN;
    const bool masked = block >= unmasked_blocks;
    const T* const no_bias = nullptr;
    DLK_UNROLL
    for (int rr = 0; rr < 2; ++rr) {
      float block_max = -INFINITY;
      DLK_UNROLL
      for (int n = 0; n < kSRegs / 4; ++n) {
        DLK_UNROLL
        for (int e = 0; e < 2; ++e) {
          const int i = 4 * n + 2 * rr + e;
          const int key = key0 + accumulator_col(wg_thread, i);
          acc_s[i] = score_log2(acc_s[i], args.scale_log2, no_bias, key, !masked || key < key_end[rr]);
          block_max = fmaxf(block_max, acc_s[i]);
        }
      }
      float base;
      rescale[rr] = online_softmax_step(row_max[rr], quad_max(block_max), base);
      row_sum[rr] *= rescale[rr];
      DLK_UNROLL
      for (int n = 0; n < kSRegs / 4; ++n) {
        DLK_UNROLL
        for (int e = 0; e < 2; ++e) {
          float& s = acc_s[4 * n + 2 * rr + e];
          s = exp2f(s - base);
          row_sum[rr] += s;
        }
      }
    }
  };
  const auto scores_to_p = [&] {
    DLK_UNROLL
    for (int step = 0; step < kPSteps; ++step) {
      DLK_UNROLL
      for (int r = 0; r < 4; ++r) {
        p_frag[step][r] = pack_pair<T>(acc_s[p_source_register(step, r, 0)], acc_s[p_source_register(step, r, 1)]);
      }
    }
  };
  const auto rescale_o = [&] {
    DLK_UNROLL
    for (int i = 0; i < kORegs; ++i) acc_o[i] *= rescale[(i / 2) % 2];
  };

  if (key_blocks > 0) {
    cp_async_wait<2>();  // Q, K(0), V(0); K(1) and V(1) may still be in flight
    publish_copies();
    wgmma::fence_registers(acc_s);
    wgmma::fence();
    issue_scores(0);
    wgmma::wait_group<0>();
    wgmma::fence_registers(acc_s);
    softmax(0);  // O is still 0: its rescale is moot
    scores_to_p();
  }

  // Every block but the last: S of the next block overlaps this block's P V (see the top). Iteration j reads
  // K(j + 1) and V(j); the copies of V(j + 1) and K(j + 2) stay in flight while it computes.
  for (int block = 0; block + 1 < key_blocks; ++block) {
    const int stage = block % Config::kStages;
    cp_async_wait<Config::kStages - 1>();  // K(block + 1) and V(block) landed; V(block + 1) may be in flight
    publish_copies();  // also: both warpgroups waited for S(block), so K(block)'s tile is free
    if (block + Config::kStages < key_blocks) load_keys(block + Config::kStages, stage);
    cp_async_commit();

    // Everything ordinary code wrote to acc_o, acc_s and p_frag is done before the wgmmas read them.
    wgmma::fence_registers(acc_o);
    wgmma::fence_registers(acc_s);
    wgmma::fence_registers(p_frag);
    wgmma::fence();
    issue_scores((block + 1) % Config::kStages);
    issue_pv(stage);
    wgmma::wait_group<1>();  // S(block + 1) done; P(block) V(block) may still run
    wgmma::fence_registers(acc_s);
    softmax(block + 1);
    wgmma::wait_group<0>();  // P(block) V(block) done: acc_o and p_frag are ours again
    wgmma::fence_registers(acc_o);
    wgmma::fence_registers(p_frag);
    rescale_o();
    scores_to_p();

    __syncthreads();  // both warpgroups are done with V(block) before its tile is refilled
    if (block + Config::kStages < key_blocks) load_values(block + Config::kStages, stage);
    cp_async_commit();
  }
  if (key_blocks > 0) {  // the last block
    cp_async_wait<0>();  // its V may have been in flight until now
    publish_copies();
    wgmma::fence_registers(acc_o);
    wgmma::fence_registers(p_frag);
    wgmma::fence();
    issue_pv((key_blocks - 1) % Config::kStages);
    wgmma::wait_group<0>();
    wgmma::fence_registers(acc_o);
  }

  // Epilogue: normalize, write lse, stage O (as T) in Q's shared memory, store 16-byte chunks.
  cp_async_wait<0>();
  __syncthreads();  // no wgmma reads Q any more (every group was waited for), no copy in flight
  float* const lse = static_cast<float*>(p.lse) + b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q;
  DLK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    float out_factor, row_lse;
    softmax_finish(row_max[rr], quad_sum(row_sum[rr]), args.dropout_scale, out_factor, row_lse);
    if (quad_lane == 0 && local_row[rr] < valid_rows) lse[row_begin + local_row[rr]] = row_lse;
    DLK_UNROLL
    for (int n = 0; n < kORegs / 4; ++n) {
      const int i = 4 * n + 2 * rr;
      const int col = accumulator_col(wg_thread, i);
      const uint32_t pair = pack_pair<T>(acc_o[i] * out_factor, acc_o[i + 1] * out_factor);
      *reinterpret_cast<uint32_t*>(q_tile + QLayout::offset(local_row[rr], col / QLayout::kChunkElems) +
                                   (col % QLayout::kChunkElems) * int(sizeof(T))) = pair;
    }
  }
  __syncthreads();
  T* const out = static_cast<T*>(p.out) +
                 row_offset(p.out_batch_stride, p.out_head_stride, p.out_row_stride, b, h, seq.start_q + row_begin);
  constexpr int kChunkElems = QLayout::kChunkElems;
  DLK_UNROLL
  for (int pass = 0; pass < QLayout::kChunks / kThreads; ++pass) {
    int row, chunk;
    thread_chunk<kBlockM, kHeadDim, kThreads>(tid, pass, row, chunk);
    if (row >= valid_rows) continue;
    const auto value = *reinterpret_cast<const Vector<T, kChunkElems>*>(q_tile + QLayout::offset(row, chunk));
    *reinterpret_cast<Vector<T, kChunkElems>*>(out + int64_t(row) * p.out_row_stride + chunk * kChunkElems) = value;
  }
#else
  // Built for an architecture without wgmma: never launched (see attention_forward_sm90_available).
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Launch (instantiated in attention_fwd_sm90.cu). The caller has checked
// attention_forward_sm90_supported(args) and attention_forward_sm90_available().

template <typename T, int kHeadDim>
Status launch_attention_forward_sm90(const ForwardArgs& args, cudaStream_t stream) {
  using Config = Sm90ForwardConfig<kHeadDim>;
  return launch_over_batches(attention_forward_sm90_kernel<T, kHeadDim>, args, Config::kBlockM, Config::kThreads,
                             Config::kSmemBytes, stream);
}

// The head dims this kernel is instantiated for (in attention_fwd_sm90.cu), fp16 and bf16.
// BEGIN GENERATED by csrc/cuda/generate_kernels.py: do not edit by hand
using AttentionSm90HeadDimList = std::integer_sequence<int, 64, 128, 256>;
extern template Status launch_attention_forward_sm90<__half, 64>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward_sm90<__half, 128>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward_sm90<__half, 256>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward_sm90<__nv_bfloat16, 64>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward_sm90<__nv_bfloat16, 128>(const ForwardArgs&, cudaStream_t);
extern template Status launch_attention_forward_sm90<__nv_bfloat16, 256>(const ForwardArgs&, cudaStream_t);
// END GENERATED by csrc/cuda/generate_kernels.py

// The inputs this kernel handles: fp16 / bf16 (the caller's choice of T), the head dims of
// AttentionSm90HeadDimList, 16-byte aligned rows (cp.async, 16-byte stores), no bias, no dropout.
inline bool attention_forward_sm90_supported(const ForwardArgs& args) {
  const bool listed = dispatch_int(AttentionSm90HeadDimList{}, args.params.head_dim, false, [](auto) { return true; });
  return listed && args.aligned && args.params.bias == nullptr && !args.dropout;
}

// Whether the launch may use this kernel on the current device: DLK_ATTENTION_WGMMA=1 (read on every
// call), a build that holds sm_90a code (DLK_CUDA_ARCHS lists 90a and not plain 90, whose kernel body
// would be the trap), a compute capability 9.0 device, and the runtime picking the sm_90 binary.
bool attention_forward_sm90_available();

}  // namespace attn
}  // namespace dlk
