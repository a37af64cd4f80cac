// Host versions of csrc/cuda/tensor_core.cuh's PTX wrappers (cp.async, ldmatrix, mma.sync, cvt.rna.tf32)
// for the warp emulator (warp_emu.h). The real header is included with its function names moved out
// of the way (its inline asm is never instantiated, so never reaches the host assembler); the same
// names are then defined here, so that kernel code calling them compiles unchanged.
//
// Layouts, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type",
// "... for mma.m16n8k8" (.tf32), and "Warp-level matrix load instruction: ldmatrix"), with
// g = lane / 4 and t = lane % 4:
//   m16n8k16 .f16/.bf16  A reg q holds (row g + 8 * (q % 2), cols 2t + 8 * (q / 2) + {0, 1}), low half first
//                        B reg q holds (k = 2t + 8q + {0, 1}, n = g)
//   m16n8k8 .tf32        A reg q holds (row g + 8 * (q % 2), col t + 4 * (q / 2)); B reg q (k = t + 4q, n = g)
//   C/D (both)           element e is (row g + 8 * (e / 2), col 2t + e % 2)
//   ldmatrix .xN         lanes 8j .. 8j+7 give the row addresses of matrix j (j < N; other lanes'
//                        addresses are ignored); register j of lane l is 32-bit word l % 4 of row l / 4.
//   ldmatrix .trans      register j of lane l is (row 2 (l % 4), col l / 4) in its low half and
//                        (row 2 (l % 4) + 1, col l / 4) in its high half, of matrix j.
// The mma's arithmetic: products of the operands are exact in fp32 (f16, bf16) or taken at TF32
// precision (the low 13 mantissa bits of a .tf32 operand are ignored), summed in double and added to
// C once, rounded to fp32. Hardware sums in an unspecified order with its own rounding: results agree
// to fp32 accumulation accuracy, not bit for bit.
#pragma once

#include "warp_emu.h"

#define shared_address dlk_device_shared_address
#define cp_async_16 dlk_device_cp_async_16
#define cp_async_commit dlk_device_cp_async_commit
#define cp_async_wait dlk_device_cp_async_wait
#define ldmatrix_x4 dlk_device_ldmatrix_x4
#define ldmatrix_x4_memory_clobber dlk_device_ldmatrix_x4_memory_clobber
#define ldmatrix_x4_trans dlk_device_ldmatrix_x4_trans
#define cvt_rna_tf32 dlk_device_cvt_rna_tf32
#define mma_sync dlk_device_mma_sync
#define mma_sync_unordered dlk_device_mma_sync_unordered
#define __cvta_generic_to_shared(p) 0u
#define __uint_as_float(x) 0.f
#include "tensor_core.cuh"
#undef shared_address
#undef cp_async_16
#undef cp_async_commit
#undef cp_async_wait
#undef ldmatrix_x4
#undef ldmatrix_x4_memory_clobber
#undef ldmatrix_x4_trans
#undef cvt_rna_tf32
#undef mma_sync
#undef mma_sync_unordered
#undef __cvta_generic_to_shared
#undef __uint_as_float

namespace dlk_emu {

enum MmaType { kMmaF16 = 0, kMmaBF16 = 1, kMmaTF32 = 2 };

inline float half_bits_to_float(uint16_t h, int type) {
  if (type == kMmaBF16) {
    const uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  __half_raw raw;
  raw.x = h;
  return __half2float(__half(raw));
}

inline float tf32_bits_to_float(uint32_t bits) {
  bits &= 0xffffe000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// ---------------------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16

inline void ldmatrix_execute(Block& b, int warp, Lane* lanes[kWarpSize]) {
  const int count = lanes[0]->variant & 15;
  const bool trans = (lanes[0]->variant >> 4) != 0;
  uint32_t row_addr[4][8];
  b.detector.where = "ldmatrix";
  for (int j = 0; j < count; ++j) {
    for (int i = 0; i < 8; ++i) {
      const uint32_t addr = lanes[8 * j + i]->addr;
      b.check_shared(addr, 16, 16, "ldmatrix");
      b.detector.read(warp * kWarpSize + 8 * j + i, addr, 16, b.findings());
      row_addr[j][i] = addr;
    }
  }
  const char* smem = b.smem();
  for (int l = 0; l < kWarpSize; ++l) {
    for (int j = 0; j < count; ++j) {
      uint32_t r;
      if (!trans) {
        std::memcpy(&r, smem + row_addr[j][l / 4] + 4 * (l % 4), 4);
      } else {
        uint16_t lo, hi;
        std::memcpy(&lo, smem + row_addr[j][2 * (l % 4)] + 2 * (l / 4), 2);
        std::memcpy(&hi, smem + row_addr[j][2 * (l % 4) + 1] + 2 * (l / 4), 2);
        r = uint32_t(lo) | uint32_t(hi) << 16;
      }
      lanes[l]->out[j] = r;
    }
  }
}

template <int kCount>
inline void ldmatrix(uint32_t (&r)[kCount], uint32_t smem, bool trans) {
  Block& b = *g_block;
  Lane& x = b.self().lane;
  x.op = WarpOp::kLdmatrix;
  x.variant = kCount | (trans ? 16 : 0);
  x.addr = smem;
  Block::op_table(WarpOp::kLdmatrix) = &ldmatrix_execute;
  b.warp_op();
  for (int j = 0; j < kCount; ++j) r[j] = x.out[j];
}

// ---------------------------------------------------------------------------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 and m16n8k8 .tf32

inline void mma_execute(Block&, int, Lane* lanes[kWarpSize]) {
  const int type = lanes[0]->variant;
  const int depth = type == kMmaTF32 ? 8 : 16;
  float A[16][16] = {}, B[16][8] = {}, C[16][8] = {};
  for (int l = 0; l < kWarpSize; ++l) {
    const Lane& x = *lanes[l];
    const int g = l / 4, t = l % 4;
    for (int q = 0; q < 4; ++q) {
      const int row = g + 8 * (q % 2);
      if (type == kMmaTF32) {
        A[row][t + 4 * (q / 2)] = tf32_bits_to_float(x.a[q]);
      } else {
        const int col = 2 * t + 8 * (q / 2);
        A[row][col] = half_bits_to_float(uint16_t(x.a[q] & 0xffff), type);
        A[row][col + 1] = half_bits_to_float(uint16_t(x.a[q] >> 16), type);
      }
    }
    for (int q = 0; q < 2; ++q) {
      if (type == kMmaTF32) {
        B[t + 4 * q][g] = tf32_bits_to_float(x.b[q]);
      } else {
        const int k = 2 * t + 8 * q;
        B[k][g] = half_bits_to_float(uint16_t(x.b[q] & 0xffff), type);
        B[k + 1][g] = half_bits_to_float(uint16_t(x.b[q] >> 16), type);
      }
    }
    for (int e = 0; e < 4; ++e) C[g + 8 * (e / 2)][2 * t + e % 2] = x.c[e];
  }
  for (int l = 0; l < kWarpSize; ++l) {
    const int g = l / 4, t = l % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e / 2), col = 2 * t + e % 2;
      double sum = 0;
      for (int k = 0; k < depth; ++k) sum += double(A[row][k]) * double(B[k][col]);
      lanes[l]->d[e] = float(double(C[row][col]) + sum);
    }
  }
}

inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&bb)[2], int type) {
  Block& b = *g_block;
  Lane& x = b.self().lane;
  x.op = WarpOp::kMma;
  x.variant = type;
  for (int i = 0; i < 4; ++i) x.a[i] = a[i];
  for (int i = 0; i < 2; ++i) x.b[i] = bb[i];
  for (int i = 0; i < 4; ++i) x.c[i] = d[i];
  Block::op_table(WarpOp::kMma) = &mma_execute;
  b.warp_op();
  for (int i = 0; i < 4; ++i) d[i] = x.d[i];
}

}  // namespace dlk_emu

namespace dlk {

// The .shared window address of a pointer into the block's shared memory: its offset.
inline uint32_t shared_address(const void* p) {
  dlk_emu::Block& b = *dlk_emu::g_block;
  const ptrdiff_t offset = static_cast<const char*>(p) - b.smem();
  if (offset < 0 || size_t(offset) > b.smem_bytes()) {
    b.findings().add("execution", "a shared-memory address outside the block's dynamic shared memory");
    std::fprintf(stderr, "fatal: shared_address of a pointer %td bytes from shared memory\n", offset);
    std::exit(3);
  }
  return uint32_t(offset);
}

inline void cp_async_16(uint32_t smem, const void* global, bool valid) { dlk_emu::g_block->cp_async(smem, global, valid); }
inline void cp_async_commit() { dlk_emu::g_block->cp_async_commit(); }
template <int kPending>
inline void cp_async_wait() {
  dlk_emu::g_block->cp_async_wait(kPending);
}

inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) { dlk_emu::ldmatrix(r, smem, false); }
inline void ldmatrix_x4_memory_clobber(uint32_t (&r)[4], uint32_t smem) { dlk_emu::ldmatrix(r, smem, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t smem) { dlk_emu::ldmatrix(r, smem, true); }

// cvt.rna.tf32.f32: to nearest, ties away from zero; NaN and infinity pass through.
inline uint32_t cvt_rna_tf32(uint32_t bits) {
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;
  return (bits + 0x1000u) & 0xffffe000u;
}

inline void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], TypeTag<__half>) {
  dlk_emu::mma(d, a, b, dlk_emu::kMmaF16);
}
inline void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], TypeTag<__nv_bfloat16>) {
  dlk_emu::mma(d, a, b, dlk_emu::kMmaBF16);
}
inline void mma_sync(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], TypeTag<float>) {
  dlk_emu::mma(d, a, b, dlk_emu::kMmaTF32);
}
inline void mma_sync_unordered(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], TypeTag<__half>) {
  dlk_emu::mma(d, a, b, dlk_emu::kMmaF16);
}
inline void mma_sync_unordered(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                               TypeTag<__nv_bfloat16>) {
  dlk_emu::mma(d, a, b, dlk_emu::kMmaBF16);
}
inline void mma_sync_unordered(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], TypeTag<float>) {
  dlk_emu::mma(d, a, b, dlk_emu::kMmaTF32);
}

}  // namespace dlk
