// The emulator's warp primitives composed as kernels use them, against plain matrix products: one
// warp, one block, through tensor_core.cuh's own wrapper names (tensor_core_emu.h).
//   1. A (16 x 16, row-major) through ldmatrix.x4 and B (n-major: 8 rows of n, 16 k each) through
//      ldmatrix.x4, then mma.sync m16n8k16 f16 and bf16: D = A B for both n8 tiles.
//   2. The same B stored k-major (rows of k, n contiguous) through ldmatrix.x4.trans, the way a
//      P V product loads V: the transposed matrices must be exactly the B fragments of step 1.
//   3. Shuffles: a butterfly sum (__shfl_xor_sync) and a broadcast within groups of 4 (__shfl_sync,
//      width 4).
// The conv kernel exercises ldmatrix.x4 and the mma shapes end to end (conv2d_emulate.cpp); .trans
// and the shuffles only run here. Prints "ok" and exits 0 when every check holds.
#include "warp_emu.h"

#define __CUDA_ARCH__ 800
#include "tensor_core_emu.h"
#undef __CUDA_ARCH__

namespace {

int failures = 0;

void expect(bool ok, const char* what, int i, double got, double want) {
  if (ok) return;
  if (++failures <= 10) std::printf("FAIL %s [%d]: got %g, want %g\n", what, i, got, want);
}

alignas(128) char smem[4096];

template <typename T>
void check_mma(const char* name) {
  // A at 0 (16 rows x 32 bytes), B n-major at 512 (16 rows of n x 32 bytes of k), B k-major at
  // 1024 (16 rows of k x 32 bytes of n). Small integers: every product and sum is exact.
  float a[16][16], b[16][16];  // b[k][n]
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      a[i][j] = float((i * 7 + j * 3) % 9 - 4);
      b[i][j] = float((i * 5 + j * 11) % 7 - 3);
    }
  float d[2][32][4], d_trans[2][32][4];
  uint32_t b_regs[32][4], b_trans_regs[32][4];
  const std::function<void()> body = [&] {
    const int lane = int(threadIdx.x);
    char* s = dlk_emu::g_block->smem();
    if (lane == 0) {
      for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
          reinterpret_cast<T*>(s)[i * 16 + j] = dlk::from_accumulate<T>(a[i][j]);
          reinterpret_cast<T*>(s + 512)[j * 16 + i] = dlk::from_accumulate<T>(b[i][j]);  // [n][k]
          reinterpret_cast<T*>(s + 1024)[i * 16 + j] = dlk::from_accumulate<T>(b[i][j]);  // [k][n]
        }
    }
    __syncthreads();
    uint32_t fa[4], fb[4], fbt[4];
    // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    dlk::ldmatrix_x4(fa, dlk::shared_address(s + (lane % 16) * 32 + (lane / 16) * 16));
    // B n-major: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
    dlk::ldmatrix_x4(fb, dlk::shared_address(s + 512 + (lane % 8 + (lane / 16) * 8) * 32 + ((lane / 8) % 2) * 16));
    // B k-major, transposed: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
    dlk::ldmatrix_x4_trans(fbt, dlk::shared_address(s + 1024 + (lane % 16) * 32 + (lane / 16) * 16));
    for (int i = 0; i < 4; ++i) {
      b_regs[lane][i] = fb[i];
      b_trans_regs[lane][i] = fbt[i];
    }
    for (int nt = 0; nt < 2; ++nt) {
      float acc[4] = {0, 0, 0, 0}, acc_t[4] = {0, 0, 0, 0};
      const uint32_t frag_b[2] = {fb[2 * nt], fb[2 * nt + 1]}, frag_bt[2] = {fbt[2 * nt], fbt[2 * nt + 1]};
      dlk::mma_sync(acc, fa, frag_b, dlk::TypeTag<T>{});
      dlk::mma_sync_unordered(acc_t, fa, frag_bt, dlk::TypeTag<T>{});
      for (int e = 0; e < 4; ++e) {
        d[nt][lane][e] = acc[e];
        d_trans[nt][lane][e] = acc_t[e];
      }
    }
  };
  dlk_emu::Findings findings;
  const bool ran = dlk_emu::launch(dim3(1), dim3(32), smem, sizeof(smem), body, dlk_emu::Options{}, findings);
  expect(ran && findings.total() == 0, name, -1, findings.total(), 0);
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < 4; ++i) expect(b_regs[lane][i] == b_trans_regs[lane][i], "trans == B fragment", lane, i, 0);
    for (int nt = 0; nt < 2; ++nt)
      for (int e = 0; e < 4; ++e) {
        const int row = lane / 4 + 8 * (e / 2), col = nt * 8 + 2 * (lane % 4) + e % 2;
        double want = 0;
        for (int k = 0; k < 16; ++k) want += double(a[row][k]) * b[k][col];
        expect(d[nt][lane][e] == want, name, row * 16 + col, d[nt][lane][e], want);
        expect(d_trans[nt][lane][e] == want, name, row * 16 + col, d_trans[nt][lane][e], want);
      }
  }
}

void check_shuffles() {
  float sums[32], groups[32];
  const std::function<void()> body = [&] {
    const int lane = int(threadIdx.x);
    float v = float(lane);
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    sums[lane] = v;
    groups[lane] = __shfl_sync(0xffffffffu, float(lane * 10), 2, 4);
  };
  dlk_emu::Findings findings;
  dlk_emu::launch(dim3(1), dim3(32), smem, sizeof(smem), body, dlk_emu::Options{}, findings);
  for (int lane = 0; lane < 32; ++lane) {
    expect(sums[lane] == 496.f, "shfl_xor butterfly", lane, sums[lane], 496);
    expect(groups[lane] == float((lane / 4 * 4 + 2) * 10), "shfl width 4", lane, groups[lane], (lane / 4 * 4 + 2) * 10);
  }
}

}  // namespace

int main() {
  check_mma<__half>("mma f16");
  check_mma<__nv_bfloat16>("mma bf16");
  check_shuffles();
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
