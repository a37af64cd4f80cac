// A host emulator of one CUDA thread block at a time (or of a whole co-resident grid: see
// "Co-resident launches" below), for running a kernel's own source on a CPU, with a shared-memory
// race and cp.async pipeline detector. Built by g++ through nvcc's driver (for the CUDA headers); no
// GPU, no CUDA runtime call.
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
//
// Co-resident launches (launch_cooperative: a cooperative launch, e.g. a persistent kernel with a
// grid-wide barrier). Every block of the grid is started before any runs (its own fibers, shared
// memory, detector and snapshot), and the blocks take turns on the one OS thread. A thread spins
// with __nanosleep or an acquire load (ld.acquire.gpu, see ld_acquire_gpu_u32): both yield its fiber
// (State::kSpin), so a block whose threads wait for other blocks lets them run. Per-block shared
// memory: the kernels name one `extern __shared__` array, which the program defines once (a fixed
// address, as the .shared window is on the GPU), so the emulator keeps that buffer as the resident
// block's and swaps at every change of block: the outgoing block's bytes are copied out (park) and
// the incoming block's copied in (unpark). Pointers into shared memory that a block keeps in
// registers or in shared memory itself (a slice base, row pointers) therefore stay valid, and the
// existing programs and the one-block-at-a-time `launch` are unchanged. Copying smem_bytes twice per
// change of block is cheap next to the fibers' work. Turn order (Options::co_schedule): kGreedy
// (default) runs a block until every live thread of it is blocked with a spinner among them (or it
// is done), then the next block: an adversarial order for a grid barrier, since every other block
// runs as far as it can before the last one arrives (a barrier that opens one arrival early lets the
// second-to-last block read the last one's unwritten outputs); kRoundRobin runs one scheduling pass
// of each block in turn (lock-step, the friendliest order). The detector stays per block: its epochs
// are the block's own __syncthreads (a grid barrier is two of them with global atomics between); it
// sees no global memory, so cross-block ordering shows in the results only. Memory is sequentially
// consistent (one OS thread): a missing __threadfence cannot be seen. A deadlock (every live thread
// of the grid spinning or blocked, Options::spin_budget turns in a row without any thread doing
// anything but re-checking its spin condition) is an "execution" finding and the launch fails; it
// never hangs. A kernel spinning without __nanosleep or an acquire load would hang (the fibers are
// not preempted).
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
#include <memory>
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
    stamp_ = 0;
    proxy_fence_stamp_.clear();
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
    ++stamp_;
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      check_write(thread, i, s, f);
      s.write_thread = thread;
      s.write_epoch = epoch_;
      s.write_stamp = stamp_;
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
    ++stamp_;
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      s.pending_thread = -1;
      s.write_thread = thread;
      s.write_epoch = epoch_;
      s.write_stamp = stamp_;
    }
  }

  // The async proxy (wgmma's shared-memory operands; wgmma_emu.h). fence.proxy.async by `thread`:
  // its generic-proxy writes so far (plain stores, landed cp.async copies) become visible to the
  // async proxy (a barrier then extends that to other threads' async operations).
  void proxy_fence(int thread) {
    if (size_t(thread) >= proxy_fence_stamp_.size()) proxy_fence_stamp_.resize(size_t(thread) + 1, 0);
    proxy_fence_stamp_[size_t(thread)] = ++stamp_;
  }
  // An async-proxy read of [addr, addr + n) issued by the threads of `group` (a warpgroup): flags bytes
  // with a cp.async in flight ("pending-read"), written in this barrier interval by any thread
  // ("raw": the issuing threads are many), or written through the generic proxy after their writer's
  // last fence.proxy.async ("proxy"). The bytes stay marked in flight until async_read_retire: a write
  // or cp.async to them meanwhile is a "wgmma-operand" finding.
  void async_read_issue(int group, uint32_t addr, uint32_t n, Findings& f) {
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      if (s.pending_thread >= 0) {
        report(f, "pending-read", -1 - group, i, "reads a byte whose cp.async (thread %d) has not been waited for",
               s.pending_thread);
      } else if (s.write_epoch == epoch_ && s.write_thread >= 0) {
        report(f, "raw", -1 - group, i, "reads a byte thread %d wrote in the same barrier interval", s.write_thread);
      } else if (s.write_thread >= 0 && s.write_stamp > proxy_stamp_of(s.write_thread)) {
        report(f, "proxy", -1 - group, i, "reads a byte thread %d wrote without a fence.proxy.async after it",
               s.write_thread);
      }
      ++s.async_readers;
    }
  }
  // The read retired (every issuing thread waited for it): a read by many threads in this interval.
  void async_read_retire(uint32_t addr, uint32_t n) {
    for (uint32_t i = addr; i < addr + n; ++i) {
      Shadow& s = shadow_[i];
      --s.async_readers;
      s.read_epoch = epoch_;
      s.reader = kManyReaders;
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
    uint32_t write_stamp = 0;    // when it was written (stamp_), for the proxy-fence check
    int32_t async_readers = 0;   // async-proxy reads in flight (issued, not yet retired)
  };

  uint32_t proxy_stamp_of(int thread) const {
    return size_t(thread) < proxy_fence_stamp_.size() ? proxy_fence_stamp_[size_t(thread)] : 0;
  }

  void check_write(int thread, uint32_t i, const Shadow& s, Findings& f) {
    if (s.async_readers > 0) {
      report(f, "wgmma-operand", thread, i, "writes a byte an in-flight wgmma reads (before its wait_group)", 0);
    } else if (s.pending_thread >= 0) {
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
    char who[32];  // a thread, or (negative: -1 - g) the warpgroup g of an async-proxy read
    std::snprintf(who, sizeof(who), thread >= 0 ? "thread %d" : "warpgroup %d", thread >= 0 ? thread : -1 - thread);
    std::snprintf(text, sizeof(text), "%s: %s, shared byte %u, epoch %u: %s", where, who, byte, epoch_, detail);
    f.add(kind, text);
  }

  std::vector<Shadow> shadow_;
  uint32_t epoch_ = 1;
  uint32_t stamp_ = 0;                        // counts writes and proxy fences
  std::vector<uint32_t> proxy_fence_stamp_;  // per thread: stamp_ at its latest fence.proxy.async
};

// ---------------------------------------------------------------------------------------------
// The block being run.

// kSpin: yielded at a spin (__nanosleep, an acquire load); runnable again on the block's next pass.
enum class State { kRunnable, kBarrier, kWarpOp, kSpin, kDone };
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
  // launch_cooperative's turn order (see "Co-resident launches" at the top of the file).
  enum class CoSchedule { kGreedy, kRoundRobin } co_schedule = CoSchedule::kGreedy;
  // Turns (per live block) in a row in which threads only re-check a spin condition before the
  // launch is a deadlock. A grid barrier that can open does so within one round of turns.
  int spin_budget = 64;
};

class Block;
inline Block* g_block = nullptr;

// What ran, over the whole process: collectives by WarpOp, cp.async copies, barriers, blocks, spin
// yields (__nanosleep, acquire loads, a wgmma wait for the rest of its warpgroup), co-resident
// launches.
struct Counters {
  uint64_t warp_ops[3] = {}, cp_async = 0, barriers = 0, blocks = 0, spins = 0, cooperative_launches = 0;
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

  // What one scheduling pass (pass() below) achieved.
  enum class Pass {
    kProgress,  // a thread did work, a collective ran or a barrier opened
    kSpinning,  // nothing but spinners re-checking their condition (others wait at barriers/collectives)
    kDone,      // every thread has exited
    kFailed,    // deadlock or divergent collective (a finding is recorded)
  };

  // Runs `body` as every thread of block `block_idx` of a `grid` x `block` launch; false when the
  // block could not complete (deadlock, divergent collective).
  bool run(const Body& body, dim3 grid, dim3 block, uint3 block_idx) {
    start(body, grid, block, block_idx);
    bool ok = false;
    for (int idle = 0;;) {
      const Pass r = pass();
      if (r == Pass::kDone) {
        ok = true;
        break;
      }
      if (r == Pass::kFailed) break;
      if (r == Pass::kProgress) {
        idle = 0;
      } else if (++idle > options_.spin_budget) {
        fail("deadlock: threads spin (__nanosleep / acquire load) on a condition nothing else in the block can change");
        break;
      }
    }
    finish();
    return ok;
  }

  // The pieces of run(), for launch_cooperative: start() makes the fibers (and fills the resident
  // shared memory with 0xFF), pass() runs one scheduling pass, finish() frees the fibers' stacks.
  void start(const Body& body, dim3 grid, dim3 block, uint3 block_idx) {
    body_ = &body;
    threads_.assign(block.x * block.y * block.z, Thread{});
    block_dim_ = block;
    grid_dim_ = grid;
    block_idx_ = block_idx;
    std::memset(smem_, 0xFF, bytes_);
    snapshot_.assign(smem_, smem_ + bytes_);
    detector.reset(bytes_);
    make_current();
    for (size_t t = 0; t < threads_.size(); ++t) start_fiber(int(t));
  }
  void finish() {
    for (auto& th : threads_) {
      if (th.stack != nullptr) munmap(th.stack, kFiberStackBytes);
      th.stack = nullptr;
    }
    if (g_block == this) g_block = nullptr;
  }
  // The built-ins of this block (before its fibers run).
  void make_current() {
    g_block = this;
    g_block_dim = block_dim_;
    g_grid_dim = grid_dim_;
    g_block_idx = block_idx_;
  }
  // Co-resident launches: the block's shared memory is copied out of the (one) buffer while another
  // block's is in it, and back before the block runs again.
  void park() { parked_.assign(smem_, smem_ + bytes_); }
  void unpark() {
    if (!parked_.empty()) std::memcpy(smem_, parked_.data(), bytes_);
  }
  uint3 block_idx() const { return block_idx_; }

  // --- called from the fibers.
  int current() const { return current_; }
  int thread_count() const { return int(threads_.size()); }
  Thread& self() { return threads_[current_]; }
  char* smem() { return smem_; }
  size_t smem_bytes() const { return bytes_; }
  Findings& findings() { return findings_; }
  bool detecting() const { return options_.detect; }

  void block_at(State s) {
    self().state = s;
    swapcontext(&self().context, &scheduler_);
  }

  void syncthreads() { block_at(State::kBarrier); }

  // A spin-wait's poll (__nanosleep, an acquire load): let every other thread, and other blocks of a
  // co-resident launch, run before this one looks again.
  void spin() {
    ++g_counters.spins;
    block_at(State::kSpin);
  }

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

  // Per-block state of an instruction family emulated outside this file (wgmma_emu.h), made on its
  // first use in the block; told when each thread exits, to report work the thread left in flight.
  struct Extension {
    virtual ~Extension() = default;
    virtual void thread_exit(Block& b, int thread) = 0;
  };
  std::unique_ptr<Extension> extension;

 private:
  static void fiber_main() {
    Block& b = *g_block;
    (*b.body_)();
    if (b.extension) b.extension->thread_exit(b, b.current_);
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

 public:
  bool fail(const char* what) {
    char text[256];
    std::snprintf(text, sizeof(text), "block (%u, %u, %u): %s", block_idx_.x, block_idx_.y, block_idx_.z, what);
    findings_.add("execution", text);
    return false;
  }

  // One scheduling pass: every runnable (or spinning) thread runs until it blocks; then the warp
  // collectives whose lanes have all arrived run, or else the block-wide barrier opens if every
  // thread waits at it. Without spinners this is one round of the one-block scheduler as it always
  // was: nothing runnable and nothing to open is a deadlock. A spinning thread may still change its
  // state (another block may release it), so a warp or barrier it has not reached yet is not.
  Pass pass() {
    const int n = int(threads_.size());
    bool progress = false;
    for (int t = 0; t < n; ++t) {
      const State before = threads_[t].state;
      if (before != State::kRunnable && before != State::kSpin) continue;
      switch_to(t);
      // A spinner that re-checked its condition and spins again did nothing.
      if (before == State::kRunnable || threads_[t].state != State::kSpin) progress = true;
    }
    bool ran_op = false;
    // Warp collectives whose 32 lanes have all arrived.
    for (int w = 0; w * kWarpSize < n; ++w) {
      Lane* lanes[kWarpSize];
      int waiting = 0, spinning = 0;
      for (int l = 0; l < kWarpSize && w * kWarpSize + l < n; ++l) {
        Thread& th = threads_[w * kWarpSize + l];
        lanes[l] = &th.lane;
        waiting += th.state == State::kWarpOp;
        spinning += th.state == State::kSpin;
      }
      if (waiting == 0) continue;
      if (waiting != kWarpSize) {
        if (spinning > 0) continue;  // a spinning lane may yet join
        // After a pass no thread is runnable: lanes elsewhere (exited, at a barrier, at another
        // collective) can never join this one.
        fail("a warp collective that not all 32 lanes reach");
        return Pass::kFailed;
      }
      for (int l = 1; l < kWarpSize; ++l) {
        if (lanes[l]->op != lanes[0]->op || lanes[l]->variant != lanes[0]->variant) {
          fail("lanes of one warp at different collectives");
          return Pass::kFailed;
        }
      }
      current_ = w * kWarpSize;
      op_table(lanes[0]->op)(*this, w, lanes);
      ++g_counters.warp_ops[int(lanes[0]->op)];
      for (int l = 0; l < kWarpSize; ++l) threads_[w * kWarpSize + l].state = State::kRunnable;
      ran_op = true;
    }
    if (ran_op) return Pass::kProgress;
    int at_barrier = 0, done = 0, spinning = 0;
    for (const Thread& th : threads_) {
      at_barrier += th.state == State::kBarrier;
      done += th.state == State::kDone;
      spinning += th.state == State::kSpin;
    }
    if (done == n) return Pass::kDone;
    if (at_barrier + done == n) {
      if (done > 0) {
        fail("__syncthreads() that some threads exited before reaching");
        return Pass::kFailed;
      }
      detector.barrier();
      ++g_counters.barriers;
      for (Thread& th : threads_) th.state = State::kRunnable;
      return Pass::kProgress;
    }
    if (spinning > 0) return progress ? Pass::kProgress : Pass::kSpinning;
    fail("deadlock: threads wait at different barriers or collectives");
    return Pass::kFailed;
  }

 private:

  char* smem_;
  size_t bytes_;
  Options options_;
  Findings& findings_;
  const Body* body_ = nullptr;
  std::vector<Thread> threads_;
  std::vector<char> snapshot_;
  std::vector<char> parked_;  // co-resident launches: this block's shared memory while another's is in
  dim3 block_dim_{}, grid_dim_{};
  uint3 block_idx_{};
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

// Runs every block of a grid co-resident, as a cooperative launch (cudaLaunchCooperativeKernel) does:
// see "Co-resident launches" at the top of the file. `smem` is the kernels' one shared buffer; each
// block's own contents are swapped in while it runs. False when a block could not complete or the
// grid deadlocked.
inline bool launch_cooperative(dim3 grid, dim3 block, char* smem, size_t smem_bytes,
                               const std::function<void()>& body, const Options& options, Findings& findings) {
  if (smem_bytes > kMaxSharedBytes) {
    findings.add("execution", "dynamic shared memory above the emulator's buffer");
    return false;
  }
  // Blocks hold fiber contexts that point into themselves (uc_link): never moved.
  std::vector<std::unique_ptr<Block>> blocks;
  std::vector<uint3> index;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blocks.push_back(std::make_unique<Block>(smem, smem_bytes, options, findings));
        index.push_back(uint3{x, y, z});
      }
  const size_t n = blocks.size();
  Block* resident = nullptr;  // whose shared memory is in the buffer
  const auto enter = [&](Block& b) {
    if (resident != &b) {
      if (resident != nullptr) resident->park();
      b.unpark();  // nothing before b started: start() fills the buffer
      resident = &b;
    }
    b.make_current();
  };
  for (size_t i = 0; i < n; ++i) {
    enter(*blocks[i]);
    blocks[i]->start(body, grid, block, index[i]);
  }
  ++g_counters.cooperative_launches;
  std::vector<char> done(n, 0);
  size_t remaining = n;
  bool ok = true;
  int64_t idle_turns = 0;  // turns in a row in which no block did anything but spin
  for (size_t i = 0; remaining > 0 && ok; i = (i + 1) % n) {
    if (done[i]) continue;
    Block& b = *blocks[i];
    enter(b);
    bool progress = false;
    for (;;) {
      const Block::Pass r = b.pass();
      if (r == Block::Pass::kFailed) {
        ok = false;
        break;
      }
      if (r == Block::Pass::kDone) {
        done[i] = 1;
        --remaining;
        ++g_counters.blocks;
        progress = true;
        break;
      }
      if (r == Block::Pass::kSpinning) break;
      progress = true;
      if (options.co_schedule == Options::CoSchedule::kRoundRobin) break;
    }
    if (progress) {
      idle_turns = 0;
    } else if (ok && ++idle_turns > int64_t(options.spin_budget) * int64_t(remaining)) {
      char text[256];
      std::snprintf(text, sizeof(text),
                    "deadlock: %zu of %zu co-resident blocks spin without progress for %d rounds "
                    "(a grid barrier that never opens?)",
                    remaining, n, options.spin_budget);
      b.fail(text);
      ok = false;
    }
  }
  for (auto& b : blocks) b->finish();
  g_block = nullptr;
  return ok;
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
// ld.global.cg (through L2): a plain load, as the emulated grid has one coherent memory (one block at
// a time, or co-resident blocks taking turns on one OS thread). A misaligned address, which faults on the GPU, is an execution finding.
template <typename V> V __ldcg(const V* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(V) != 0 && ::dlk_emu::g_block != nullptr) {
    ::dlk_emu::g_block->findings().add("execution", "__ldcg of a misaligned address");
  }
  return *p;
}

// Grid-wide synchronisation, as the persistent kernels' grid barrier uses it. One OS thread runs
// every fiber and a fiber switches only where it blocks: a read-modify-write is atomic, and memory is
// sequentially consistent, so __threadfence has nothing to order (a missing fence goes unseen).
// __nanosleep and an acquire load yield the fiber (a spin's poll: see Block::spin).
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
  const unsigned int old = *address;
  *address = old + value;
  return old;
}
inline void __threadfence() {}
inline void __nanosleep(unsigned int) {
  if (::dlk_emu::g_block != nullptr) ::dlk_emu::g_block->spin();
}
namespace dlk_emu {
// ld.acquire.gpu.global.u32: yields first, so that the value read is as late as possible. Inline PTX
// does not compile for the host: a program maps the kernel's asm wrapper to this (rnn_emulate.cpp).
inline unsigned int ld_acquire_gpu_u32(const unsigned int* p) {
  if (g_block != nullptr) g_block->spin();
  return *p;
}
}  // namespace dlk_emu

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
