// Inline-PTX wrappers for the sm_80+ tensor-core path shared by the direct convolution
// (conv2d_kernels.cuh) and the Winograd GEMM (conv2d_winograd.cu): cp.async global -> shared copies,
// ldmatrix fragment loads, mma.sync (fp16 / bf16 m16n8k16 and TF32 m16n8k8, fp32 accumulate) and
// the fp32 -> TF32 rounding. Device-only and torch-free; host replays of these instructions, where a
// host harness needs them, live beside the callers.
//
// Fragment layouts: PTX ISA, "Warp-level Matrix Fragments for mma.m16n8k16 with floating point type"
// and "... for mma.m16n8k8" (.tf32), and "Warp-level matrix load instruction: ldmatrix". With
// g = lane / 4 (groupID) and t = lane % 4 (thread in group):
//   m16n8k16 .f16/.bf16  A reg q (two elements): row g + 8 * (q % 2), cols 2t + 8 * (q / 2) + {0, 1}
//                        B reg q (two elements): k = 2t + 8q + {0, 1}, col n = g
//   m16n8k8 .tf32        A reg q: row g + 8 * (q % 2), col t + 4 * (q / 2); B reg q: k = t + 4q, n = g
//   C/D (both shapes)    d[e]: row g + 8 * (e / 2), col 2t + e % 2
//   ldmatrix .x4         lanes 8j .. 8j+7 give the addresses of the eight 16-byte rows of matrix j;
//                        register j of lane l receives 32-bit word l % 4 of row l / 4 of matrix j.
//
// Ordering: every wrapper but cvt_rna_tf32 and mma_sync_unordered is `asm volatile` (kept, and kept
// in order relative to the other volatile asm). The cp.async wrappers clobber "memory" so that
// ordinary loads and stores are not moved across them; ldmatrix comes in both forms.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common.cuh"  // TypeTag

namespace dlk {

// Generic pointer into shared memory -> its 32-bit .shared window address, the address operand of
// cp.async and ldmatrix.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// cp.async.cg, 16 bytes global -> shared, through L2 only (.cg). When !valid the source size is 0:
// the 16 shared bytes are zero-filled and `global` is not read (it must still be a valid address).
__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* global, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(global), "r"(src_bytes)
               : "memory");
}

// Closes this thread's current group of cp.async copies.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most kPending of this thread's committed cp.async groups are still in flight (the
// copies are then visible to this thread only; other threads need a barrier as well).
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8x8 b16 matrices (8 rows of 16 bytes each) from
// shared memory into one register per matrix; `smem` is this lane's row address (layout above).
// No "memory" clobber: ordered only against other volatile asm (cp.async, barriers).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
}

// The same instruction with a "memory" clobber: also ordered against ordinary C++ loads and stores
// (e.g. shared memory reused by non-asm code after the fragment loads).
__device__ __forceinline__ void ldmatrix_x4_memory_clobber(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem)
               : "memory");
}

// cvt.rna.tf32.f32: fp32 bits rounded to TF32 (10 mantissa bits, to nearest, ties away from zero),
// the operand precision the TF32 mma expects. Plain asm: a pure function of its input.
__device__ __forceinline__ uint32_t cvt_rna_tf32(uint32_t bits) {
  uint32_t rounded;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(rounded) : "f"(__uint_as_float(bits)));
  return rounded;
}

// D += A * B for one 16 x 8 output tile, fp32 accumulators (d is both C and D), row-major A and
// column-major B (layouts above). TypeTag<__half> / <__nv_bfloat16>: mma.sync m16n8k16 (k = 16
// elements, 32 bytes); TypeTag<float>: mma.sync m16n8k8 .tf32 (k = 8, the same 32 bytes; operands
// should already be TF32, see cvt_rna_tf32).
//   mma_sync            asm volatile: issued in program order relative to the other volatile asm.
//   mma_sync_unordered  plain asm: the compiler may move it, e.g. overlap it with the next k-step's
//                       fragment loads.
#define DLK_TC_MMA_ASM(QUALIFIER, TYPES)                                                                  \
  asm QUALIFIER("mma.sync.aligned." TYPES " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n" \
                : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                            \
                : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
#define DLK_TC_MMA_F16 "m16n8k16.row.col.f32.f16.f16.f32"
#define DLK_TC_MMA_BF16 "m16n8k16.row.col.f32.bf16.bf16.f32"
#define DLK_TC_MMA_TF32 "m16n8k8.row.col.f32.tf32.tf32.f32"

__device__ __forceinline__ void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                         TypeTag<__half>) {
  DLK_TC_MMA_ASM(volatile, DLK_TC_MMA_F16);
}
__device__ __forceinline__ void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                         TypeTag<__nv_bfloat16>) {
  DLK_TC_MMA_ASM(volatile, DLK_TC_MMA_BF16);
}
__device__ __forceinline__ void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                         TypeTag<float>) {
  DLK_TC_MMA_ASM(volatile, DLK_TC_MMA_TF32);
}

__device__ __forceinline__ void mma_sync_unordered(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                   TypeTag<__half>) {
  DLK_TC_MMA_ASM(, DLK_TC_MMA_F16);
}
__device__ __forceinline__ void mma_sync_unordered(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                   TypeTag<__nv_bfloat16>) {
  DLK_TC_MMA_ASM(, DLK_TC_MMA_BF16);
}
__device__ __forceinline__ void mma_sync_unordered(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                   TypeTag<float>) {
  DLK_TC_MMA_ASM(, DLK_TC_MMA_TF32);
}

#undef DLK_TC_MMA_ASM
#undef DLK_TC_MMA_F16
#undef DLK_TC_MMA_BF16
#undef DLK_TC_MMA_TF32

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: as ldmatrix_x4, each 8x8 matrix transposed on the
// way: register j of lane l receives elements (row 2 * (l % 4) + {0, 1}, column l / 4) of matrix j.
// With the rows of a tile holding k (n contiguous), this is the m16n8k16 B fragment of that tile
// (k = 2t + {0, 1}, n = g). With a "memory" clobber, like ldmatrix_x4_memory_clobber.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem)
               : "memory");
}

}  // namespace dlk
