// Host-only check of the layout math of the Hopper attention forward (attention_fwd_sm90_kernel.cuh),
// run on the CPU (built by nvcc for its headers; no kernel is launched). It checks the kernel's own
// functions against independent readings of the PTX ISA / CUTLASS rules:
//
//  1. For every element of every Q, K and V operand of every k16 step, the shared-memory byte the
//     kernel's cp.async loader writes it to (TileLayout::offset) is the byte wgmma reads it from, as
//     decoded from the kernel's descriptor by the canonical 128-byte-swizzle layouts:
//       K-major  ((8,m),(T,2)) : ((8T,SBO),(1,T))          (16-byte units, T = 8 elements)
//       MN-major ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))
//     then the swizzle on the absolute address: bits [4,7) ^= bits [7,10).
//  2. accumulator_row / accumulator_col equal CUTLASS's CLayout_64xN, and the S accumulator ->
//     P A-fragment conversion (p_source_register) puts the right (row, key) into each slot of
//     ALayout_64x16 (= CLayout_64x16).
//  3. The loader's thread -> chunk map covers each chunk of each tile exactly once.
//
// Exit status 0 and "ok" when everything holds; the first mismatches are printed otherwise.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "attention_fwd_sm90_kernel.cuh"

using namespace dlk;
using namespace dlk::attn;

namespace {

int failures = 0;

void expect(bool ok, const char* what, int a, int b, int c, int d) {
  if (ok) return;
  if (++failures <= 20) std::printf("FAIL %s (%d, %d, %d, %d)\n", what, a, b, c, d);
}

struct Decoded {
  uint32_t start, leading, stride, base_offset, layout;
};

Decoded decode(uint64_t desc) {
  Decoded d;
  d.start = uint32_t(desc & 0x3FFF) << 4;
  d.leading = uint32_t((desc >> 16) & 0x3FFF) << 4;
  d.stride = uint32_t((desc >> 32) & 0x3FFF) << 4;
  d.base_offset = uint32_t((desc >> 49) & 0x7);
  d.layout = uint32_t(desc >> 62);
  return d;
}

uint32_t swizzle_128(uint32_t address) { return address ^ (((address >> 7) & 7u) << 4); }

// Byte wgmma reads for element (mn, k), k < 16, of a K-major 128-byte-swizzled operand.
uint32_t k_major_address(uint64_t desc, int mn, int k) {
  const Decoded d = decode(desc);
  expect(d.layout == 1 && d.base_offset == 0, "K-major descriptor: 128B swizzle, base offset 0", mn, k, 0, 0);
  return swizzle_128(d.start + uint32_t(mn % 8) * 128 + uint32_t(mn / 8) * d.stride + uint32_t(k) * 2);
}

// Byte wgmma reads for element (mn, k), k < 16, of an MN-major 128-byte-swizzled operand.
uint32_t mn_major_address(uint64_t desc, int mn, int k) {
  const Decoded d = decode(desc);
  expect(d.layout == 1 && d.base_offset == 0, "MN-major descriptor: 128B swizzle, base offset 0", mn, k, 0, 0);
  return swizzle_128(d.start + uint32_t(mn % 64) * 2 + uint32_t(mn / 64) * d.leading + uint32_t(k % 8) * 128 +
                     uint32_t(k / 8) * d.stride);
}

// Byte the kernel's loader writes element (row, col) of a tile to.
template <typename Layout>
uint32_t written_address(uint32_t tile, int row, int col) {
  return tile + Layout::offset(row, col / Layout::kChunkElems) + uint32_t(col % Layout::kChunkElems) * 2;
}

// CUTLASS CLayout_64xN: ((4,8,4),(2,2,N/8)) : ((128,1,16),(64,8,512)) onto the column-major index
// m + 64 n of the 64 x N tile.
void clayout(int thread, int value, int& m, int& n) {
  const int index = 128 * (thread % 4) + 1 * ((thread / 4) % 8) + 16 * (thread / 32) + 64 * (value % 2) +
                    8 * ((value / 2) % 2) + 512 * (value / 4);
  m = index % 64;
  n = index / 64;
}

template <int kHeadDim>
void check_config() {
  using Config = Sm90ForwardConfig<kHeadDim>;
  using Desc = Sm90Descriptors<kHeadDim>;
  using QLayout = typename Config::QLayout;
  using KVLayout = typename Config::KVLayout;
  // Tiles where the kernel puts them, behind an arbitrary 1024-byte-aligned base.
  const uint32_t base = 3 * 1024;
  const uint32_t q_tile = base;
  for (int stage = 0; stage < Config::kStages; ++stage) {
    const uint32_t k_tile = base + QLayout::kBytes + stage * 2 * KVLayout::kBytes;
    const uint32_t v_tile = k_tile + KVLayout::kBytes;
    for (int step = 0; step < Config::kDSteps; ++step) {
      for (int n = 0; n < Config::kBlockN; ++n) {
        for (int k = 0; k < 16; ++k) {
          expect(k_major_address(Desc::k(k_tile, step), n, k) ==
                     written_address<KVLayout>(k_tile, n, 16 * step + k),
                 "K operand", kHeadDim, step, n, k);
        }
      }
    }
    for (int step = 0; step < Config::kPSteps; ++step) {
      for (int n = 0; n < kHeadDim; ++n) {
        for (int k = 0; k < 16; ++k) {
          expect(mn_major_address(Desc::v(v_tile, step), n, k) ==
                     written_address<KVLayout>(v_tile, 16 * step + k, n),
                 "V operand", kHeadDim, step, n, k);
        }
      }
    }
  }
  for (int warpgroup = 0; warpgroup < Config::kWarpgroups; ++warpgroup) {
    for (int step = 0; step < Config::kDSteps; ++step) {
      for (int m = 0; m < Config::kWarpgroupRows; ++m) {
        for (int k = 0; k < 16; ++k) {
          expect(k_major_address(Desc::q(q_tile, warpgroup, step), m, k) ==
                     written_address<QLayout>(q_tile, Config::kWarpgroupRows * warpgroup + m, 16 * step + k),
                 "Q operand", kHeadDim, warpgroup, step, m * 16 + k);
        }
      }
    }
  }

  // The loader (thread_chunk over kThreads threads) writes each chunk of each tile once, inside it.
  const auto check_loader = [](auto layout_tag, int rows, const char* what) {
    using Layout = typename decltype(layout_tag)::type;
    std::vector<int> hits(Layout::kChunks, 0);
    for (int tid = 0; tid < Config::kThreads; ++tid) {
      for (int pass = 0; pass < Layout::kChunks / Config::kThreads; ++pass) {
        int row, chunk;
        if (rows == Config::kBlockM) {
          thread_chunk<Config::kBlockM, kHeadDim, Config::kThreads>(tid, pass, row, chunk);
        } else {
          thread_chunk<Config::kBlockN, kHeadDim, Config::kThreads>(tid, pass, row, chunk);
        }
        const uint32_t offset = Layout::offset(row, chunk);
        const bool inside = offset % kChunkBytes == 0 && offset < uint32_t(Layout::kBytes);
        expect(inside, what, kHeadDim, tid, pass, 0);
        if (inside) ++hits[offset / kChunkBytes];
      }
    }
    for (int i = 0; i < Layout::kChunks; ++i) expect(hits[i] == 1, what, kHeadDim, i, hits[i], 1);
  };
  check_loader(TypeTag<QLayout>{}, Config::kBlockM, "Q loader covers each chunk once");
  check_loader(TypeTag<KVLayout>{}, Config::kBlockN, "K/V loader covers each chunk once");

  // Fragments: accumulators (S and O) and the P A fragment.
  for (int thread = 0; thread < Config::kWarpgroupThreads; ++thread) {
    for (int i = 0; i < Config::kSRegs || i < Config::kORegs; ++i) {
      int m, n;
      clayout(thread, i, m, n);
      expect(accumulator_row(thread, i) == m && accumulator_col(thread, i) == n, "accumulator map", kHeadDim,
             thread, i, 0);
      // The kernel keys a register's row by (i / 2) % 2 (softmax rows, rescale of O).
      expect(accumulator_row(thread, i) == accumulator_row(thread, 2 * ((i / 2) % 2)), "row of a register",
             kHeadDim, thread, i, 0);
    }
    for (int step = 0; step < Config::kPSteps; ++step) {
      for (int reg = 0; reg < 4; ++reg) {
        for (int half = 0; half < 2; ++half) {
          int m, kk;
          clayout(thread, 2 * reg + half, m, kk);  // ALayout_64x16 = CLayout_64x16; value 2 r + h
          const int source = p_source_register(step, reg, half);
          expect(source >= 0 && source < Config::kSRegs && accumulator_row(thread, source) == m &&
                     accumulator_col(thread, source) == 16 * step + kk,
                 "P fragment", kHeadDim, thread, step, 2 * reg + half);
        }
      }
    }
  }
}

}  // namespace

int main() {
  check_config<64>();
  check_config<128>();
  check_config<256>();
  if (failures != 0) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
