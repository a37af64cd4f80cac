// Host versions of csrc/cuda/wgmma.cuh (Hopper warpgroup MMA: wgmma.mma_async with its fence,
// commit_group and wait_group, and fence.proxy.async) for the warp emulator (warp_emu.h), so that
// an sm_90a kernel's own source runs on the CPU. The real header is included with its function names
// moved out of the way, as tensor_core_emu.h does for mma.sync; the same names are defined here.
//
// Semantics (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions"):
//   - wgmma.mma_async is issued by the 128 threads of a warpgroup (4 consecutive warps, warp index a
//     multiple of 4); each brings its own accumulator registers (and A registers for the
//     register-A form); the descriptors, shape and scale-d must agree. The op is asynchronous: its
//     operands are read and its accumulators written at some moment before the issuing thread's
//     wgmma.wait_group retires its group, and until then the thread must not touch those registers
//     and no one may write the shared-memory operands.
//   - wgmma.commit_group closes the thread's open ops into a group; wgmma.wait_group N returns once
//     at most N of the thread's groups are pending (groups complete in order).
//   - Shared memory written through the generic proxy (plain stores, cp.async) is visible to the
//     async proxy that wgmma reads through only after the writer's fence.proxy.async (and a barrier
//     for other threads' reads).
// Layouts: descriptors as csrc/cuda/wgmma.cuh describes them (start >> 4 in bits [0, 14), LBO >> 4
// in [16, 30), SBO >> 4 in [32, 46), base offset in [49, 52), layout type in [62, 64)); only the
// 128-byte swizzle (type 1) with base offset 0 is modelled (anything else is an "execution" finding).
// The canonical 128-byte-swizzle layouts, for element (mn, k), k < 16, of an operand (16-bit):
//   K-major:  start + (mn % 8) 128 + (mn / 8) SBO + 2 k
//   MN-major: start + 2 (mn % 64) + (mn / 64) LBO + (k % 8) 128 + (k / 8) SBO
// then the swizzle on the shared address: bits [4, 7) ^= bits [7, 10). Fragments (warp w of the
// warpgroup, g = lane / 4, q = lane % 4): accumulator d[i] is (row 16 w + g + 8 ((i / 2) % 2),
// col 8 (i / 4) + 2 q + i % 2); register A a[r] holds (row 16 w + g + 8 (r % 2),
// cols 8 (r / 2) + 2 q + {0, 1}), the low half first. Arithmetic as tensor_core_emu.h's mma.sync:
// exact products, summed in double, added to D (scale-d 1) or to 0, rounded to fp32 once.
//
// The emulation runs an op at the latest moment the hardware may: when the first thread of the
// warpgroup waits for it (every thread must have issued it by then: the waiter spins until they
// have). It reads shared memory and the A registers then, and writes every thread's accumulators.
// The detector (warp_emu.h) sees the shared operands as an async-proxy read by the warpgroup: at
// issue it flags bytes with a cp.async in flight, bytes written in the same barrier interval and
// bytes written after their writer's last fence.proxy.async ("proxy"); until every thread of the
// warpgroup has retired the op, a write or cp.async to them is a "wgmma-operand" finding; after it,
// the bytes count as read by many threads in that interval (so a refill needs a barrier).
// Registers: a thread that changes an accumulator or an A register of one of its in-flight ops
// between the issue and its own wait_group (seen when the op runs and again when the thread
// retires it) is a "wgmma-register" finding; the op computes with the changed values, as late
// hardware would. A value rewritten unchanged is invisible. Not modelled: wgmma.fence (that register
// writes are fenced before an op reads them: ptxas then reports serialised or fenced wgmmas, C75xx,
// which tests/test_cuda_sass.py fails on), and fence_registers (compiler-only). Ops of one warpgroup
// run in issue order; its threads must issue the same ops (an "execution" finding otherwise).
#pragma once

#include "tensor_core_emu.h"

// The device trap the real wrappers name in their non-sm_90a branch (never called here).
[[noreturn]] inline void __trap() { std::abort(); }

#define fence dlk_device_wgmma_fence
#define commit_group dlk_device_wgmma_commit_group
#define wait_group dlk_device_wgmma_wait_group
#define fence_shared_for_async_proxy dlk_device_wgmma_fence_shared_for_async_proxy
#define fence_registers dlk_device_wgmma_fence_registers
#define mma_ss dlk_device_wgmma_mma_ss
#define mma_rs dlk_device_wgmma_mma_rs
#include "wgmma.cuh"
#undef fence
#undef commit_group
#undef wait_group
#undef fence_shared_for_async_proxy
#undef fence_registers
#undef mma_ss
#undef mma_rs

// The kernels' wgmma branches from here on (wgmma.cuh defines it for sm_90a device code only).
#define DLK_WGMMA_AVAILABLE 1

namespace dlk_emu {

constexpr int kWarpgroupThreads = 128;

inline uint32_t swizzle_128_byte(uint32_t address) { return address ^ (((address >> 7) & 7u) << 4); }

// The shared byte of element (mn, k), k < 16, of a 128-byte-swizzled 16-bit operand; false for a
// descriptor the emulator does not model.
inline bool wgmma_operand_address(uint64_t desc, bool mn_major, int mn, int k, uint32_t& address) {
  const uint32_t start = uint32_t(desc & 0x3FFF) << 4;
  const uint32_t leading = uint32_t((desc >> 16) & 0x3FFF) << 4;
  const uint32_t stride = uint32_t((desc >> 32) & 0x3FFF) << 4;
  const uint32_t base_offset = uint32_t((desc >> 49) & 0x7);
  const uint32_t layout = uint32_t(desc >> 62);
  if (layout != 1 || base_offset != 0) return false;
  const uint32_t linear = mn_major ? start + uint32_t(mn % 64) * 2 + uint32_t(mn / 64) * leading +
                                         uint32_t(k % 8) * 128 + uint32_t(k / 8) * stride
                                   : start + uint32_t(mn % 8) * 128 + uint32_t(mn / 8) * stride + uint32_t(k) * 2;
  address = swizzle_128_byte(linear);
  return true;
}

// One wgmma.mma_async of a warpgroup: the k-th op each of its threads issues.
struct WgmmaOp {
  // Uniform over the warpgroup (set by the first thread to issue, compared by the others).
  int regs = 0, type = 0, trans_a = 0, trans_b = 0, scale_d = 0;
  bool a_in_registers = false;
  uint64_t desc_a = 0, desc_b = 0;
  struct Slot {
    float* d = nullptr;
    const uint32_t* a = nullptr;
    uint32_t a_at_issue[4] = {};
    std::vector<float> d_at_issue;
  };
  std::array<Slot, kWarpgroupThreads> slots;
  std::vector<uint32_t> operand_bytes;  // the 2-byte elements it reads (marked in flight)
  int issued = 0, retired = 0;
};

struct WgmmaThread {
  int issued = 0;              // ops issued
  std::vector<int> group_end;  // ops issued when each group was committed
  int retired = 0;             // ops retired by this thread's waits
  // Per accumulator array with ops in flight: how many, and the values the emulator last wrote.
  std::map<const float*, std::pair<int, std::vector<float>>> accumulators;
};

class WgmmaState : public Block::Extension {
 public:
  explicit WgmmaState(int threads)
      : threads_(size_t(threads)),
        warpgroups_(size_t(threads / kWarpgroupThreads)),
        executed_(size_t(threads / kWarpgroupThreads), 0) {}

  static WgmmaState& of(Block& b) {
    if (!b.extension) {
      if (b.thread_count() % kWarpgroupThreads != 0) {
        b.findings().add("execution", "wgmma in a block whose size is not a multiple of 128 threads");
      }
      b.extension = std::make_unique<WgmmaState>(b.thread_count());
    }
    return static_cast<WgmmaState&>(*b.extension);
  }

  void issue(Block& b, float* d, int regs, const uint32_t* a, uint64_t desc_a, uint64_t desc_b, int scale_d, int type,
             int trans_a, int trans_b) {
    const int t = b.current(), g = t / kWarpgroupThreads;
    WgmmaThread& th = threads_[size_t(t)];
    std::deque<WgmmaOp>& ops = warpgroups_[size_t(g)];
    const int k = th.issued++;
    if (int(ops.size()) <= k) {
      ops.emplace_back();
      WgmmaOp& op = ops.back();
      op.regs = regs;
      op.type = type;
      op.trans_a = trans_a;
      op.trans_b = trans_b;
      op.scale_d = scale_d != 0;
      op.a_in_registers = a != nullptr;
      op.desc_a = desc_a;
      op.desc_b = desc_b;
      mark_operands(b, g, op);
    }
    WgmmaOp& op = ops[size_t(k)];
    if (op.regs != regs || op.type != type || op.trans_a != trans_a || op.trans_b != trans_b ||
        op.scale_d != (scale_d != 0) || op.a_in_registers != (a != nullptr) || op.desc_a != desc_a ||
        op.desc_b != desc_b) {
      char text[160];
      std::snprintf(text, sizeof(text), "threads of warpgroup %d issue different operands as their wgmma %d", g, k);
      b.findings().add("execution", text);
    }
    WgmmaOp::Slot& slot = op.slots[size_t(t % kWarpgroupThreads)];
    slot.d = d;
    slot.d_at_issue.assign(d, d + regs);
    slot.a = a;
    if (a != nullptr) std::memcpy(slot.a_at_issue, a, sizeof(slot.a_at_issue));
    ++th.accumulators[d].first;
    ++op.issued;
  }

  void commit(Block& b) {
    WgmmaThread& th = threads_[size_t(b.current())];
    th.group_end.push_back(th.issued);
  }

  void wait(Block& b, int pending) {
    const int t = b.current(), g = t / kWarpgroupThreads;
    WgmmaThread& th = threads_[size_t(t)];
    const int groups = int(th.group_end.size());
    if (groups <= pending) return;
    const int target = th.group_end[size_t(groups - pending - 1)];
    std::deque<WgmmaOp>& ops = warpgroups_[size_t(g)];
    while (th.retired < target) {
      const int k = th.retired;
      while (ops[size_t(k)].issued < kWarpgroupThreads) b.spin();  // the rest of the warpgroup issues it
      for (int& ran = executed_[size_t(g)]; ran <= k; ++ran) execute(b, g, ops[size_t(ran)], ran);  // in issue order
      retire(b, t, ops[size_t(k)], k);
      ++th.retired;
    }
  }

  void thread_exit(Block& b, int t) override {
    const WgmmaThread& th = threads_[size_t(t)];
    if (th.retired < th.issued) {
      char text[160];
      std::snprintf(text, sizeof(text), "thread %d exits with %d wgmma ops never waited for", t, th.issued - th.retired);
      b.findings().add("pipeline", text);
    }
  }

 private:
  void mark_operands(Block& b, int g, WgmmaOp& op) {
    const int n = op.regs * 2;  // N: 128 threads x regs accumulators = 64 x N
    const auto add = [&](uint64_t desc, bool mn_major, int mn, int k) {
      uint32_t address = 0;
      if (!wgmma_operand_address(desc, mn_major, mn, k, address)) {
        b.findings().add("execution", "a wgmma descriptor other than 128-byte swizzle with base offset 0");
        std::fprintf(stderr, "fatal: unmodelled wgmma descriptor %#llx\n", static_cast<unsigned long long>(desc));
        std::exit(3);
      }
      b.check_shared(address, 2, 2, "wgmma operand");
      op.operand_bytes.push_back(address);
    };
    for (int k = 0; k < 16; ++k) {
      if (!op.a_in_registers)
        for (int m = 0; m < 64; ++m) add(op.desc_a, op.trans_a != 0, m, k);
      for (int c = 0; c < n; ++c) add(op.desc_b, op.trans_b != 0, c, k);
    }
    if (b.detecting()) {
      b.detector.where = "wgmma";
      for (uint32_t address : op.operand_bytes) b.detector.async_read_issue(g, address, 2, b.findings());
    }
  }

  float element(Block& b, uint32_t address, int type) {
    uint16_t bits;
    std::memcpy(&bits, b.smem() + address, 2);
    return half_bits_to_float(bits, type);
  }

  // Runs op k of warpgroup g: every thread's accumulators from the operands as they are now.
  void execute(Block& b, int g, WgmmaOp& op, int k) {
    const int n = op.regs * 2;  // N, as above
    std::vector<float> A(size_t(64) * 16), B(size_t(16) * size_t(n));
    size_t at = 0;
    for (int kk = 0; kk < 16; ++kk) {
      if (!op.a_in_registers)
        for (int m = 0; m < 64; ++m) A[size_t(m) * 16 + size_t(kk)] = element(b, op.operand_bytes[at++], op.type);
      for (int c = 0; c < n; ++c) B[size_t(kk) * size_t(n) + size_t(c)] = element(b, op.operand_bytes[at++], op.type);
    }
    for (int t = 0; t < kWarpgroupThreads; ++t) {
      WgmmaOp::Slot& s = op.slots[size_t(t)];
      const int thread = g * kWarpgroupThreads + t;
      check_registers(b, thread, op, s, k, "before the op ran");
      if (!op.a_in_registers) continue;
      const int w = t / kWarpSize, lane = t % kWarpSize;
      for (int r = 0; r < 4; ++r) {
        const int row = 16 * w + lane / 4 + 8 * (r % 2), col = 8 * (r / 2) + 2 * (lane % 4);
        A[size_t(row) * 16 + size_t(col)] = half_bits_to_float(uint16_t(s.a[r] & 0xffff), op.type);
        A[size_t(row) * 16 + size_t(col) + 1] = half_bits_to_float(uint16_t(s.a[r] >> 16), op.type);
      }
    }
    for (int t = 0; t < kWarpgroupThreads; ++t) {
      WgmmaOp::Slot& s = op.slots[size_t(t)];
      const int w = t / kWarpSize, lane = t % kWarpSize;
      for (int i = 0; i < op.regs; ++i) {
        const int row = 16 * w + lane / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
        double sum = 0;
        for (int kk = 0; kk < 16; ++kk) sum += double(A[size_t(row) * 16 + size_t(kk)]) * double(B[size_t(kk) * size_t(n) + size_t(col)]);
        s.d[i] = float((op.scale_d ? double(s.d[i]) : 0.0) + sum);
      }
      threads_[size_t(g * kWarpgroupThreads + t)].accumulators[s.d].second.assign(s.d, s.d + op.regs);
    }
  }

  // A thread's registers of op k: accumulators as the emulator last left them (or as at issue), A
  // registers as at issue.
  void check_registers(Block& b, int thread, const WgmmaOp& op, const WgmmaOp::Slot& s, int k, const char* when) {
    const auto& written = threads_[size_t(thread)].accumulators[s.d].second;
    const float* expected = written.empty() ? s.d_at_issue.data() : written.data();
    const bool d_changed = std::memcmp(s.d, expected, sizeof(float) * size_t(op.regs)) != 0;
    const bool a_changed = op.a_in_registers && std::memcmp(s.a, s.a_at_issue, sizeof(s.a_at_issue)) != 0;
    if (d_changed || a_changed) {
      char text[200];
      std::snprintf(text, sizeof(text), "thread %d changed %s of its wgmma %d %s (before its wait_group)", thread,
                    d_changed ? "an accumulator" : "an A register", k, when);
      b.findings().add("wgmma-register", text);
    }
  }

  // Thread t's wait_group retires op k.
  void retire(Block& b, int t, WgmmaOp& op, int k) {
    WgmmaOp::Slot& s = op.slots[size_t(t % kWarpgroupThreads)];
    check_registers(b, t, op, s, k, "after the op ran");
    auto& acc = threads_[size_t(t)].accumulators[s.d];
    if (--acc.first == 0) threads_[size_t(t)].accumulators.erase(s.d);
    if (++op.retired == kWarpgroupThreads) {
      if (b.detecting()) {
        for (uint32_t address : op.operand_bytes) b.detector.async_read_retire(address, 2);
      }
      op.operand_bytes.clear();
      op.operand_bytes.shrink_to_fit();
    }
  }

  std::vector<WgmmaThread> threads_;
  std::vector<std::deque<WgmmaOp>> warpgroups_;
  std::vector<int> executed_;  // per warpgroup: ops run so far
};

inline int wgmma_type(dlk::TypeTag<__half>) { return kMmaF16; }
inline int wgmma_type(dlk::TypeTag<__nv_bfloat16>) { return kMmaBF16; }

}  // namespace dlk_emu

namespace dlk {
namespace wgmma {

inline void fence() {}  // orders register accesses for the hardware: nothing to emulate (see the top)

inline void commit_group() {
  dlk_emu::Block& b = *dlk_emu::g_block;
  dlk_emu::WgmmaState::of(b).commit(b);
}

template <int kPending>
inline void wait_group() {
  dlk_emu::Block& b = *dlk_emu::g_block;
  dlk_emu::WgmmaState::of(b).wait(b, kPending);
}

inline void fence_shared_for_async_proxy() {
  dlk_emu::Block& b = *dlk_emu::g_block;
  if (b.detecting()) b.detector.proxy_fence(b.current());
}

template <typename Registers>
inline void fence_registers(Registers&) {}  // compiler-only

template <int kTransA, int kTransB, int kRegs, typename T>
inline void mma_ss(float (&d)[kRegs], uint64_t desc_a, uint64_t desc_b, int scale_d, TypeTag<T> tag) {
  static_assert(kRegs == 32 || kRegs == 64 || kRegs == 128, "m64n{64,128,256}k16");
  dlk_emu::Block& b = *dlk_emu::g_block;
  dlk_emu::WgmmaState::of(b).issue(b, d, kRegs, nullptr, desc_a, desc_b, scale_d, dlk_emu::wgmma_type(tag), kTransA,
                                    kTransB);
}

template <int kTransB, int kRegs, typename T>
inline void mma_rs(float (&d)[kRegs], const uint32_t (&a)[4], uint64_t desc_b, int scale_d, TypeTag<T> tag) {
  static_assert(kRegs == 32 || kRegs == 64 || kRegs == 128, "m64n{64,128,256}k16");
  dlk_emu::Block& b = *dlk_emu::g_block;
  dlk_emu::WgmmaState::of(b).issue(b, d, kRegs, a, 0, desc_b, scale_d, dlk_emu::wgmma_type(tag), 0, kTransB);
}

}  // namespace wgmma
}  // namespace dlk
