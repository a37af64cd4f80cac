// A host emulator of one CUDA thread block at a time, for running a kernel's own source on a CPU,
// with a shared-memory race and cp.async pipeline detector. Built by g++ through nvcc's driver (for
// the CUDA headers); no GPU, no CUDA runtime call.
//
// Execution. Every CUDA thread of the block is a fiber (ucontext) on one OS thread, run round-robin
// until it blocks: at __syncthreads(), or at a warp-collective instruction (ldmatrix, mma.sync,
// shfl), whose operands each lane deposits before blocking. When every live thread waits at the
// barrier, the barrier opens (a new epoch); when all 32 lanes of a warp wait at the same collective,
// the emulator executes it with the PTX ISA's per-lane layouts (tensor_core_emu.h) and releases
// them. One OS thread keeps runs deterministic (the same interleaving every time) and cheap on the
// 2-core CI machine; one std::thread per CUDA thread would spend its time in the scheduler.
//
// Shared memory is one per-block buffer (the kernel's `extern __shared__` array, defined by the
// including program with dlk_emu::kMaxSharedBytes), filled with 0xFF bytes (NaN in every float
// type) before each block, so that a read of bytes no one wrote shows up in the numbers.
//
// cp.async: a copy is recorded at issue and lands (its 16 bytes are written, or zero-filled) when
// the issuing thread's cp.async.wait_group retires its group: the latest moment the hardware may
// land it, so a read that the code does not wait for sees stale bytes.
//
// The race detector (Detector below) keeps, per shared byte, the last writer and its epoch, the
// readers of the current epoch, and whether a cp.async to it is in flight. It flags:
//   - a read of bytes whose cp.async has not been retired by its issuer's wait_group ("pending");
//   - a read by thread u of bytes written by thread t != u in the same epoch (RAW without a barrier;
//     a cp.async counts as written by its issuer when its wait_group retires it);
//   - a write (or cp.async issue) to bytes read by another thread in the same epoch (WAR);
//   - a write to bytes written by another thread, or with a copy in flight, in the same epoch (WAW).
// What it sees: every ldmatrix row (a read by the lane that supplied the address), every cp.async
// (issue and landing), and every plain store, found by comparing shared memory with a snapshot each
// time a fiber yields (exact bytes, attributed to the fiber that ran; a store of the value already
// there is invisible). What it does not see: plain C++ loads from shared memory (e.g. an epilogue
// reading staged accumulators): a missing barrier before such a load is caught only by the results.
// Epochs are block-wide barriers; __syncwarp makes a warp's lanes wait for each other (bottom of the file)
// but is not an epoch, and named barriers are not modelled.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace dlk_emu {

constexpr int kWarpSize = 32;
constexpr size_t kMaxSharedBytes = 228 * 1024;  // sm_90's per-block opt-in
constexpr size_t kFiberStackBytes = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Findings.

struct Finding {
  std::string kind;  // "pending-read", "raw", "war", "waw", "pipeline", "execution"
  std::string text;
};

struct Findings {
  std::vector<Finding> items;
  std::map<std::string, int> counts;
  void add(const std::string& kind, const std::string& text) {
    if (++counts[kind] <= 4) items.push_back({kind, text});
  }
  int total() const {
    int n = 0;
    for (const auto& [k, c] : counts) n += c;
    return n;
  }
  void print(FILE* out) const {
    for (const auto& [k, c] : counts) std::fprintf(out, "  %s: %d\n", k.c_str(), c);
    for (const auto& f : items) std::fprintf(out, "  [%s] %s\n", f.kind.c_str(), f.text.c_str());
  }
};

// ---------------------------------------------------------------------------------------------
// The shared-memory race and pipeline detector (see the top of the file).

class Detector {
 public:
  void reset(size_t bytes) {
    shadow_.assign(bytes, Shadow{});
    epoch_ = 1;
  }
  void barrier() { ++epoch_; }
  uint32_t epoch() const { return epoch_; }
  const char* where = "";  // what the current access is (for messages)

  void read(int thread, uint32_t addr, uint32_t n, Findings& f) {
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      if (s.pending_thread >= 0) {
        report(f, "pending-read", thread, i, "reads a byte whose cp.async (thread %d) has not been waited for",
               s.pending_thread);
      } else if (s.write_epoch == epoch_ && s.write_thread != thread) {
        report(f, "raw", thread, i, "reads a byte thread %d wrote in the same barrier interval", s.write_thread);
      }
      if (s.read_epoch != epoch_) {
        s.read_epoch = epoch_;
        s.reader = thread;
      } else if (s.reader != thread) {
        s.reader = kManyReaders;
      }
    }
  }

  void write(int thread, uint32_t addr, uint32_t n, Findings& f) {
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      check_write(thread, i, s, f);
      s.write_thread = thread;
      s.write_epoch = epoch_;
    }
  }

  // cp.async issued: a write from now until its wait_group.
  void async_issue(int thread, uint32_t addr, uint32_t n, Findings& f) {
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      check_write(thread, i, s, f);
      s.pending_thread = thread;
    }
  }

  // cp.async retired by its issuer's wait_group: written by it now.
  void async_land(int thread, uint32_t addr, uint32_t n) {
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      s.pending_thread = -1;
      s.write_thread = thread;
      s.write_epoch = epoch_;
    }
  }

 private:
  static constexpr int kManyReaders = -2;
  struct Shadow {
    int32_t write_thread = -1;
    uint32_t write_epoch = 0;
    int32_t reader = -1;
    uint32_t read_epoch = 0;
    int32_t pending_thread = -1;
  };

  void check_write(int thread, uint32_t i, const Shadow& s, Findings& f) {
    if (s.pending_thread >= 0) {
      report(f, "waw", thread, i, "writes a byte with a cp.async (thread %d) in flight", s.pending_thread);
    } else if (s.read_epoch == epoch_ && s.reader != thread && s.reader != -1) {
      report(f, "war", thread, i, "writes a byte thread %d read in the same barrier interval", s.reader);
    } else if (s.write_epoch == epoch_ && s.write_thread != thread && s.write_thread >= 0) {
      report(f, "waw", thread, i, "writes a byte thread %d wrote in the same barrier interval", s.write_thread);
    }
  }

  void report(Findings& f, const char* kind, int thread, uint32_t byte, const char* what, int other) {
    char text[256], detail[160];
    std::snprintf(detail, sizeof(detail), what, other);
    if (other == kManyReaders) {
      std::snprintf(detail, sizeof(detail), "writes a byte several threads read in the same barrier interval");
    }
    std::snprintf(text, sizeof(text), "%s: thread %d, shared byte %u, epoch %u: %s", where, thread, byte, epoch_,
                  detail);
    f.add(kind, text);
  }

  std::vector<Shadow> shadow_;
  uint32_t epoch_ = 1;
};

// ---------------------------------------------------------------------------------------------
// The block being run.

enum class State { kRunnable, kBarrier, kWarpOp, kDone };
enum class WarpOp { kLdmatrix, kMma, kShfl };

struct CpAsync {
  uint32_t dst;
  const void* src;
  bool valid;
};

struct Lane {
  // Operands deposited for a warp collective, and its results.
  WarpOp op{};
  int variant = 0;  // ldmatrix: count | trans << 4; mma: the type; shfl: mode
  uint32_t addr = 0;
  uint32_t a[4]{}, b[2]{};
  float c[4]{};
  uint32_t value = 0;
  int src_lane = 0, width = 32;
  uint32_t mask = 0;
  uint32_t out[4]{};
  float d[4]{};
};

struct Thread {
  ucontext_t context{};
  void* stack = nullptr;
  State state = State::kRunnable;
  Lane lane;
  std::vector<CpAsync> open_group;
  std::deque<std::vector<CpAsync>> committed;
};

struct Options {
  bool detect = true;  // run the race detector (and the per-yield store diff)
};

class Block;
inline Block* g_block = nullptr;

// What ran, over the whole process: collectives by WarpOp, cp.async copies, barriers, blocks.
struct Counters {
  uint64_t warp_ops[3] = {}, cp_async = 0, barriers = 0, blocks = 0;
};
inline Counters g_counters;

// The CUDA built-ins of the running fiber (the scheduler sets them before each switch).
inline uint3 g_thread_idx{}, g_block_idx{};
inline dim3 g_block_dim{}, g_grid_dim{};

class Block {
 public:
  using Body = std::function<void()>;

  Block(char* smem, size_t smem_bytes, const Options& options, Findings& findings)
      : smem_(smem), bytes_(smem_bytes), options_(options), findings_(findings) {}

  // Runs `body` as every thread of block `block_idx` of a `grid` x `block` launch; false when the
  // block could not complete (deadlock, divergent collective).
  bool run(const Body& body, dim3 grid, dim3 block, uint3 block_idx) {
    body_ = &body;
    threads_.assign(block.x * block.y * block.z, Thread{});
    block_dim_ = block;
    std::memset(smem_, 0xFF, bytes_);
    snapshot_.assign(smem_, smem_ + bytes_);
    detector.reset(bytes_);
    g_block = this;
    g_block_dim = block;
    g_grid_dim = grid;
    g_block_idx = block_idx;
    for (size_t t = 0; t < threads_.size(); ++t) start_fiber(int(t));
    bool ok = schedule();
    for (auto& th : threads_) munmap(th.stack, kFiberStackBytes);
    g_block = nullptr;
    return ok;
  }

  // --- called from the fibers.
  int current() const { return current_; }
  Thread& self() { return threads_[current_]; }
  char* smem() { return smem_; }
  size_t smem_bytes() const { return bytes_; }
  Findings& findings() { return findings_; }

  void block_at(State s) {
    self().state = s;
    swapcontext(&self().context, &scheduler_);
  }

  void syncthreads() { block_at(State::kBarrier); }

  // Lane `current` deposited its operands in self().lane; blocks until the warp's op ran.
  void warp_op() { block_at(State::kWarpOp); }

  void check_shared(uint32_t addr, uint32_t n, uint32_t align, const char* what) {
    if (addr % align != 0 || size_t(addr) + n > bytes_) {
      char text[160];
      std::snprintf(text, sizeof(text), "%s: thread %d, shared address %u (+%u) misaligned or past %zu bytes", what,
                    current_, addr, n, bytes_);
      findings_.add("execution", text);
      std::fprintf(stderr, "fatal: %s\n", text);
      std::exit(3);
    }
  }

  // cp.async.cg 16 bytes; zero-fill when !valid.
  void cp_async(uint32_t dst, const void* src, bool valid) {
    check_shared(dst, 16, 16, "cp.async");
    if (options_.detect) {
      detector.where = "cp.async";
      detector.async_issue(current_, dst, 16, findings_);
    }
    self().open_group.push_back({dst, src, valid});
    ++g_counters.cp_async;
  }
  void cp_async_commit() {
    Thread& th = self();
    th.committed.push_back(std::move(th.open_group));
    th.open_group.clear();
  }
  void cp_async_wait(int pending) {
    Thread& th = self();
    while (int(th.committed.size()) > pending) {
      for (const CpAsync& c : th.committed.front()) land(c);
      th.committed.pop_front();
    }
  }

  // Executes the collective `w`'s lanes wait at (the op implementations are in a table).
  using WarpOpFn = void (*)(Block&, int warp, Lane* lanes[kWarpSize]);
  static WarpOpFn& op_table(WarpOp op) {
    static WarpOpFn table[3] = {};
    return table[int(op)];
  }

  Detector detector;

 private:
  static void fiber_main() {
    Block& b = *g_block;
    (*b.body_)();
    Thread& th = b.self();
    bool in_flight = !th.open_group.empty();
    for (const auto& group : th.committed) in_flight = in_flight || !group.empty();
    if (in_flight) {
      char text[128];
      std::snprintf(text, sizeof(text), "thread %d exits with cp.async copies never waited for", b.current_);
      b.findings_.add("pipeline", text);
    }
    th.state = State::kDone;
    // uc_link returns to the scheduler.
  }

  void start_fiber(int t) {
    Thread& th = threads_[t];
    th.stack = mmap(nullptr, kFiberStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (th.stack == MAP_FAILED) {
      std::perror("mmap");
      std::exit(2);
    }
    getcontext(&th.context);
    th.context.uc_stack.ss_sp = th.stack;
    th.context.uc_stack.ss_size = kFiberStackBytes;
    th.context.uc_link = &scheduler_;
    makecontext(&th.context, &Block::fiber_main, 0);
  }

  void switch_to(int t) {
    current_ = t;
    g_thread_idx = uint3{unsigned(t % block_dim_.x), unsigned(t / block_dim_.x % block_dim_.y),
                         unsigned(t / (block_dim_.x * block_dim_.y))};
    threads_[t].state = State::kRunnable;
    swapcontext(&scheduler_, &threads_[t].context);
    if (options_.detect) diff_stores(t);
  }

  // Plain stores of the slice that just ran: bytes that differ from the snapshot.
  void diff_stores(int t) {
    constexpr size_t kLine = 64;
    for (size_t base = 0; base < bytes_; base += kLine) {
      const size_t n = std::min(kLine, bytes_ - base);
      if (std::memcmp(smem_ + base, snapshot_.data() + base, n) == 0) continue;
      for (size_t i = base; i < base + n; ++i) {
        if (smem_[i] != snapshot_[i]) {
          detector.where = "store";
          detector.write(t, uint32_t(i), 1, findings_);
          snapshot_[i] = smem_[i];
        }
      }
    }
  }

  void land(const CpAsync& c) {
    if (c.valid) std::memcpy(smem_ + c.dst, c.src, 16);
    else std::memset(smem_ + c.dst, 0, 16);
    std::memcpy(snapshot_.data() + c.dst, smem_ + c.dst, 16);  // the emulator's write, not a plain store
    if (options_.detect) detector.async_land(current_, c.dst, 16);
  }

  bool fail(const char* what) {
    char text[256];
    std::snprintf(text, sizeof(text), "block (%u, %u, %u): %s", g_block_idx.x, g_block_idx.y, g_block_idx.z, what);
    findings_.add("execution", text);
    return false;
  }

  bool schedule() {
    const int n = int(threads_.size());
    for (;;) {
      for (int t = 0; t < n; ++t) {
        if (threads_[t].state == State::kRunnable) switch_to(t);
      }
      bool progress = false;
      // Warp collectives whose 32 lanes have all arrived.
      for (int w = 0; w * kWarpSize < n; ++w) {
        Lane* lanes[kWarpSize];
        int waiting = 0;
        for (int l = 0; l < kWarpSize && w * kWarpSize + l < n; ++l) {
          Thread& th = threads_[w * kWarpSize + l];
          lanes[l] = &th.lane;
          waiting += th.state == State::kWarpOp;
        }
        if (waiting == 0) continue;
        // After a pass no thread is runnable: lanes elsewhere (exited, at a barrier, at another
        // collective) can never join this one.
        if (waiting != kWarpSize) return fail("a warp collective that not all 32 lanes reach");
        for (int l = 1; l < kWarpSize; ++l) {
          if (lanes[l]->op != lanes[0]->op || lanes[l]->variant != lanes[0]->variant) {
            return fail("lanes of one warp at different collectives");
          }
        }
        current_ = w * kWarpSize;
        op_table(lanes[0]->op)(*this, w, lanes);
        ++g_counters.warp_ops[int(lanes[0]->op)];
        for (int l = 0; l < kWarpSize; ++l) threads_[w * kWarpSize + l].state = State::kRunnable;
        progress = true;
      }
      if (progress) continue;
      int at_barrier = 0, done = 0;
      for (const Thread& th : threads_) {
        at_barrier += th.state == State::kBarrier;
        done += th.state == State::kDone;
      }
      if (done == n) return true;
      if (at_barrier + done == n) {
        if (done > 0) return fail("__syncthreads() that some threads exited before reaching");
        detector.barrier();
        ++g_counters.barriers;
        for (Thread& th : threads_) th.state = State::kRunnable;
        continue;
      }
      return fail("deadlock: threads wait at different barriers or collectives");
    }
  }

  char* smem_;
  size_t bytes_;
  Options options_;
  Findings& findings_;
  const Body* body_ = nullptr;
  std::vector<Thread> threads_;
  std::vector<char> snapshot_;
  dim3 block_dim_{};
  ucontext_t scheduler_{};
  int current_ = 0;
};

// Runs every block of a grid, one at a time. False when a block could not complete.
inline bool launch(dim3 grid, dim3 block, char* smem, size_t smem_bytes, const std::function<void()>& body,
                   const Options& options, Findings& findings) {
  if (smem_bytes > kMaxSharedBytes) {
    findings.add("execution", "dynamic shared memory above the emulator's buffer");
    return false;
  }
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block b(smem, smem_bytes, options, findings);
        if (!b.run(body, grid, block, uint3{x, y, z})) return false;
        ++g_counters.blocks;
      }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Warp shuffles (the kernels' reductions): every lane of the warp takes part (mask 0xffffffff).

enum ShflMode { kShflIdx = 0, kShflXor = 1, kShflDown = 2, kShflUp = 3 };

inline void shfl_execute(Block&, int, Lane* lanes[kWarpSize]) {
  uint32_t in[kWarpSize];
  for (int l = 0; l < kWarpSize; ++l) in[l] = lanes[l]->value;
  for (int l = 0; l < kWarpSize; ++l) {
    const Lane& x = *lanes[l];
    const int w = x.width, base = l & ~(w - 1);
    int src = l;
    switch (x.variant) {
      case kShflIdx: src = base + (x.src_lane & (w - 1)); break;
      case kShflXor: src = l ^ x.src_lane; if (src >= base + w) src = l; break;
      case kShflDown: src = l + x.src_lane; if (src >= base + w) src = l; break;
      case kShflUp: src = l - x.src_lane; if (src < base) src = l; break;
    }
    lanes[l]->out[0] = in[src];
  }
}

template <typename V>
V shfl(uint32_t mask, V v, int lane_or_delta, int width, int mode) {
  static_assert(sizeof(V) == 4, "32-bit shuffles");
  Block& b = *g_block;
  Lane& x = b.self().lane;
  if (mask != 0xffffffffu) b.findings().add("execution", "shuffle with a partial mask (not modelled)");
  x.op = WarpOp::kShfl;
  x.variant = mode;
  std::memcpy(&x.value, &v, 4);
  x.src_lane = lane_or_delta;
  x.width = width;
  Block::op_table(WarpOp::kShfl) = &shfl_execute;
  b.warp_op();
  V out;
  std::memcpy(&out, &x.out[0], 4);
  return out;
}

}  // namespace dlk_emu

// ---------------------------------------------------------------------------------------------
// The CUDA built-ins the kernels name, for the host compiler.

#define threadIdx (::dlk_emu::g_thread_idx)
#define blockIdx (::dlk_emu::g_block_idx)
#define blockDim (::dlk_emu::g_block_dim)
#define gridDim (::dlk_emu::g_grid_dim)

inline void __syncthreads() { ::dlk_emu::g_block->syncthreads(); }
template <typename V> V __shfl_sync(uint32_t mask, V v, int lane, int width = 32) {
  return ::dlk_emu::shfl(mask, v, lane, width, ::dlk_emu::kShflIdx);
}
template <typename V> V __shfl_xor_sync(uint32_t mask, V v, int lane_mask, int width = 32) {
  return ::dlk_emu::shfl(mask, v, lane_mask, width, ::dlk_emu::kShflXor);
}
template <typename V> V __shfl_down_sync(uint32_t mask, V v, unsigned delta, int width = 32) {
  return ::dlk_emu::shfl(mask, v, int(delta), width, ::dlk_emu::kShflDown);
}
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return uint32_t((uint64_t(a) * b) >> 32); }
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
// __syncwarp (full mask only): the lanes of the warp wait for each other, as a shuffle that moves
// nothing (it counts among the shuffles). Not an epoch of the race detector: accesses on either side
// of it stay in one barrier interval (see the top of the file).
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)::dlk_emu::shfl(mask, 0u, 0, 32, ::dlk_emu::kShflIdx); }
// ld.global.cg (through L2): a plain load, as the emulated grid has one coherent memory and runs one
// block at a time. A misaligned address, which faults on the GPU, is an execution finding.
template <typename V> V __ldcg(const V* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(V) != 0 && ::dlk_emu::g_block != nullptr) {
    ::dlk_emu::g_block->findings().add("execution", "__ldcg of a misaligned address");
  }
  return *p;
}

// ---------------------------------------------------------------------------------------------
// Launches from a launcher's own host code. A launcher source (.cu) is compiled by g++ with its
// `kernel<<<grid, block[, smem[, stream]]>>>(args...)` statements rewritten, and nothing else, to
// `::dlk_emu::cuda_launch("kernel", grid, block[, smem[, stream]])(kernel, args...)` (see
// rewrite_launches in tests/test_cuda_emulator_conv_families.py). Each such launch runs its grid at
// once, block by block (launch above), with the settings in g_host, and is logged there. A launch the
// GPU would refuse (more than 1,024 threads, an empty grid, grid.y or grid.z above 65,535, dynamic
// shared memory above 48 KiB without a cudaFuncSetAttribute opt-in or above the opt-in) is an
// "execution" finding and does not run; a refused or failed launch makes the next cudaGetLastError
// return an error, as on the GPU. With DLK_EMU_CUDA_RUNTIME defined (programs linked without the
// CUDA runtime, nvcc -cudart=none) the runtime calls launch.cuh makes are defined here: device 0,
// g_host.sm_count SMs, 227 KiB of opt-in shared memory, cudaFuncSetAttribute recorded.
namespace dlk_emu {

struct LaunchRecord {
  std::string kernel;
  const void* function = nullptr;
  dim3 grid{}, block{};
  size_t smem = 0;
  bool ran = false;
};

struct HostLaunches {
  char* smem = nullptr;          // the kernels' `extern __shared__` buffer (the program defines it)
  Options options;
  Findings* findings = nullptr;  // must be set before the first launch
  int sm_count = 132;            // what the device-attribute query answers
  std::map<const void*, int> smem_optin;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
  std::vector<LaunchRecord> log;
  bool failed = false;  // a launch was refused or did not complete (reported by cudaGetLastError)
};
inline HostLaunches g_host;

struct KernelLaunch {
  const char* kernel;
  dim3 grid, block;
  size_t smem;

  template <typename... P, typename... A>
  void operator()(void (*function)(P...), A&&... args) const {
    LaunchRecord record{kernel, reinterpret_cast<const void*>(function), grid, block, smem, false};
    Findings& findings = *g_host.findings;
    const auto refuse = [&](const char* why) {
      findings.add("execution", std::string(kernel) + ": launch refused: " + why);
      g_host.failed = true;
      g_host.log.push_back(record);
    };
    const auto optin = g_host.smem_optin.find(record.function);
    const size_t allowed = optin == g_host.smem_optin.end() ? 48 * 1024 : size_t(optin->second);
    if (block.x * block.y * block.z == 0 || block.x * block.y * block.z > 1024) return refuse("block size");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) return refuse("grid size");
    if (smem > allowed) return refuse("dynamic shared memory above what the kernel opted in to");
    // The parameters as the kernel receives them (converted once, at the launch).
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    const std::function<void()> body = [&] { std::apply(function, params); };
    record.ran = launch(grid, block, g_host.smem, smem, body, g_host.options, findings);
    if (!record.ran) g_host.failed = true;
    g_host.log.push_back(record);
  }
};

inline KernelLaunch cuda_launch(const char* kernel, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return KernelLaunch{kernel, grid, block, smem};
}

}  // namespace dlk_emu

#ifdef DLK_EMU_CUDA_RUNTIME
extern "C" {
cudaError_t cudaGetLastError(void) {
  const bool failed = ::dlk_emu::g_host.failed;
  ::dlk_emu::g_host.failed = false;
  return failed ? cudaErrorLaunchFailure : cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = ::dlk_emu::g_host.sm_count; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024) return cudaErrorInvalidValue;
    ::dlk_emu::g_host.smem_optin[func] = value;
  }
  return cudaSuccess;
}
}
// cuda_runtime.h's C++ overload for kernel pointers, which it declares for nvcc only.
template <class T>
cudaError_t cudaFuncSetAttribute(T* func, enum cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}
#endif  // DLK_EMU_CUDA_RUNTIME
