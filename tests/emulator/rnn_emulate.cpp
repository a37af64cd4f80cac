// The LSTM / GRU kernels (csrc/cuda/rnn_kernels.cuh: rnn_forward_kernel<T, kCell, kNTiles,
// kPersistent> and rnn_backward_kernel<...>; per-step, kPersistent = false, by default) run block by block on the CPU by the warp
// emulator (warp_emu.h, tensor_core_emu.h), over a whole sequence the way rnn.cu's per-step path
// launches them, and compared with a plain-loop double-precision LSTM / GRU forward and backward
// (the step math of dlk/rnn.h and csrc/cpu/rnn.cpp), with the shared-memory race detector on. The
// kernel source is compiled unchanged.
//
// fp16 / bf16 run the tensor-core GEMM (mma.sync m16n8k16 on operands loaded straight from global
// memory, K split over the 4 warps, partials summed through shared memory); fp32 / fp64 the SIMT GEMM
// (per-warp staging in shared memory, __syncwarp between staging and use). The detector sees shared
// stores (the partials, the staging, the batch row pointers) but not plain shared loads (the
// pointwise phase's partial sums, the SIMT reads): a missing barrier before such a load is caught by
// the results only (shared memory is refilled with 0xFF, NaN, before every block).
//
// path=persistent runs the persistent kernels instead (kPersistent = true: rnn.cu's cooperative path,
// one launch for the whole sequence): each CTA copies its weight slice into shared memory once, and
// a grid-wide barrier (grid_barrier: atomics on a global counter, spin-waiting until every CTA has
// arrived) replaces the launch between steps. They run by warp_emu.h's launch_cooperative (every CTA
// co-resident, each with its own shared memory; spinners yield), by default in its greedy turn order
// (each CTA runs as far as it can before the next: a barrier that opens early lets a CTA read another
// CTA's step outputs before they are written, still NaN); schedule=rr takes lock-step turns. The
// barrier counter's final value ((launches - 1) x CTAs arrivals) is checked too. Not run:
// rnn_transpose_kernel (its static `__shared__` tile would be a per-fiber local on the host): W_hh^T
// is formed on the host, as that kernel's contract says. The launch chunking beyond 65,535 batch
// tiles is exercised through `chunk=` (a smaller limit handed to the same planner).
//
// What rnn.cu computes outside the step kernels is computed here on the host in double: the input
// projection x_proj = x W_ih^T + b_ih (+ b_hh for LSTM; GRU passes b_hh to the kernel), rounded to the
// input dtype as torch would store it, and W_hh^T for the backward. The backward kernel runs on the
// reference forward's tensors (h_all in the input dtype, c_all and saved in the accumulation dtype,
// as the forward stores them), so that forward and backward are each checked on their own.
//
// One case per run, from `key=value` arguments (see Case): cell lstm|gru, dtype f16|bf16|f32|f64,
// T, batch, input, hidden, seed, detect, tiles (0: rnn.cu's n_tiles_for; else 1 or the large tile
// count of the dtype, 4, or 2 for f64), reverse, ragged (per-sequence lengths in [1, T]), training
// (0: saved = null), null_grads (grad_h_n / grad_c_n null), chunk (at most this many batch tiles per
// launch; 0: plan_rnn_grid's 65,535), path step|persistent (persistent: a single launch, so no
// chunk, and the slice must fit in 227 KiB, as rnn.cu's persistent_fits requires; else a bad case),
// schedule greedy|rr (persistent: launch_cooperative's turn order). Prints one summary line and the
// detector's findings; exit status as harness.h's verdict (2 on a bad case).
// -DDLK_EMULATE_F16_ONLY / -DDLK_EMULATE_F32_ONLY build one dtype (planted-fault builds).
#include "harness.h"
#include "warp_emu.h"

// The persistent kernels' grid barrier (rnn_kernels.cuh: grid_barrier) uses __threadfence,
// atomicAdd and __nanosleep, which warp_emu.h emulates, and an inline-PTX acquire load,
// load_acquire_gpu(const unsigned int*), which g++ cannot assemble. grid_barrier calls it with its
// `unsigned int* counter`: this overload, declared first, takes exactly that type, so overload
// resolution prefers it (an identity conversion beats the qualification conversion to const) and the
// header's asm version is never odr-used, hence never emitted (it is inline). Should grid_barrier's
// counter ever become const, the asm version would be chosen and the build fail at the assembler,
// not silently.
namespace dlk {
namespace rnn {
inline unsigned int load_acquire_gpu(unsigned int* p) { return dlk_emu::ld_acquire_gpu_u32(p); }
}  // namespace rnn
}  // namespace dlk

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"
// rnn_kernels.cuh keeps its block GEMM, barriers and kernels behind __CUDACC__, which g++ does not
// define; every header it includes is already in (include guards), so only its own text sees this.
// load_value memcpys a load's bits into a __half / __nv_bfloat16, which g++'s -Wclass-memaccess
// flags (those types have a protected member); the device compiler does not.
#define __CUDACC__
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wclass-memaccess"
#include "rnn_kernels.cuh"
#pragma GCC diagnostic pop
#undef __CUDACC__
#undef __CUDA_ARCH__

#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>

#include "dlk/launch_plan.h"

namespace dlk {
namespace rnn {
// The kernels' `extern __shared__` buffer: the running block's (launch runs one block at a time;
// launch_cooperative swaps each co-resident block's contents in while it runs).
alignas(128) unsigned char smem[dlk_emu::kMaxSharedBytes];
}  // namespace rnn
}  // namespace dlk

namespace {

using namespace dlk;
using dlk_emu::Buffer;

struct Case {
  std::string cell = "lstm", dtype = "f16", path = "step", schedule = "greedy";
  int steps = 4, batch = 5, input = 12, hidden = 20, tiles = 0, chunk = 0;
  bool detect = true, reverse = false, ragged = false, training = true, null_grads = false;
  uint32_t seed = 1;
};

bool parse(int argc, char** argv, Case& c) {
  return dlk_emu::parse_arguments(argc, argv, [&](const std::string& key, const std::string& v) {
    const int x = dlk_emu::to_int(v);
    if (key == "cell") c.cell = v;
    else if (key == "dtype") c.dtype = v;
    else if (key == "path" && (v == "step" || v == "persistent")) c.path = v;
    else if (key == "schedule" && (v == "greedy" || v == "rr")) c.schedule = v;
    else if (key == "T") c.steps = x;
    else if (key == "batch") c.batch = x;
    else if (key == "input") c.input = x;
    else if (key == "hidden") c.hidden = x;
    else if (key == "tiles") c.tiles = x;
    else if (key == "chunk") c.chunk = x;
    else if (key == "seed") c.seed = uint32_t(x);
    else if (key == "detect") c.detect = x != 0;
    else if (key == "reverse") c.reverse = x != 0;
    else if (key == "ragged") c.ragged = x != 0;
    else if (key == "training") c.training = x != 0;
    else if (key == "null_grads") c.null_grads = x != 0;
    else return false;
    return true;
  });
}

// Copied from rnn.cu (anonymous namespace there: n_tiles_for and dispatch_cell_and_tiles'
// kLargeTiles): batch rows per CTA are one n-tile of 8 for B <= 8, else 4 tiles (2 for fp64).
int n_tiles_for(int64_t batch, bool fp64) { return batch <= 8 ? 1 : fp64 ? 2 : 4; }

template <typename T> double value(T v) { return double(to_accumulate(v)); }
// A double rounded to T (through float for the 16-bit types, as from_accumulate takes the Acc type).
template <typename T> T store(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return from_accumulate<T>(float(v));
}

template <typename T>
void fill_nan(Buffer<T>& b) {  // unwritten outputs and scratch read as NaN
  std::memset(b.storage.data(), 0xFF, b.storage.size() * sizeof(b.storage[0]));
}

// Relative tolerance, as a fraction of the largest |reference| of the tensor checked (an error
// relative to each element would fail on elements near zero that cancellation leaves with the
// absolute error of their larger terms). The GEMMs accumulate in fp32 (exact fp16 / bf16 products)
// and the nonlinearities run in fp32: ~1e-6 relative. What dominates for fp16 / bf16 is the input
// dtype's rounding, which the kernels apply by contract or by design and the reference only where
// the contract says: h_t is stored (and read back by the next step) in T (the reference rounds it
// too, but a value near a rounding boundary may round the other way: 1 ulp), and the backward keeps
// each step's gate gradients in T for its recurrent GEMM (the reference does not: u_T relative per
// step). Those errors compound over the steps and pass through the GEMM (a sum of G*H terms of
// random sign: relative error ~u_T, not K u_T). With u_T = 2^-11 (fp16), 2^-8 (bf16), 8 u_T leaves a
// margin of 4 (measured over 40 seeds at T = 8: at most 1.8 u_T; at T = 24: 1.7 u_T). fp32 / fp64
// store nothing narrower than they compute: K-term sums in the accumulation type over a few steps,
// 1e-5 / 1e-12 (measured: 2.3e-7 / 5e-16). A wrong fragment, gate or barrier errs by O(0.1) or NaN.
template <typename T> double tolerance() {
  if constexpr (std::is_same_v<T, __half>) return 8 * 0x1p-11;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return 8 * 0x1p-8;
  else if constexpr (std::is_same_v<T, float>) return 1e-5;
  else return 1e-12;
}

// Compares `count` outputs read by got(i) with ref[i] within tolerance<T>() times max |ref|;
// errors are recorded relative to that magnitude.
template <typename T, typename Got>
void compare(dlk_emu::Tally& tally, const char* name, const std::vector<double>& ref, Got got) {
  double scale = 0;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  scale = std::max(scale, 1e-30);
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got(i), err = std::fabs(g - ref[i]) / scale;
    tally.check(err <= tolerance<T>(), err, [&] {
      return std::string(name) + "[" + std::to_string(i) + "]: " + std::to_string(g) + ", expected " +
             std::to_string(ref[i]) + " (max |ref| " + std::to_string(scale) + ")";
    });
  }
}

template <typename T, RnnCell kCell, int kNTiles>
int run(const Case& cs) {
  using Acc = AccumulateType<T>;
  using FwdTile = rnn::StepTile<T, kCell, false, kNTiles>;
  using BwdTile = rnn::StepTile<T, kCell, true, kNTiles>;
  constexpr bool kLstm = kCell == RnnCell::kLSTM;
  const int64_t S = cs.steps, B = cs.batch, H = cs.hidden, I = cs.input, G = rnn_gate_count(kCell), GH = G * H;
  static_assert(FwdTile::kBatchTile == BwdTile::kBatchTile, "one batch tile");

  // ---- inputs (rounded to T; the reference reads the stored values)
  std::mt19937 rng(cs.seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const auto random_vector = [&](size_t n, double scale) {
    std::vector<double> v(n);
    for (double& e : v) e = value(store<T>(scale * uniform(rng)));
    return v;
  };
  const auto to_buffer = [](const std::vector<double>& v) {
    Buffer<T> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = store<T>(v[i]);
    return b;
  };
  const std::vector<double> x = random_vector(size_t(S * B * I), 1.0);
  const std::vector<double> w_ih = random_vector(size_t(GH * I), 1.0 / std::sqrt(double(I)));
  const std::vector<double> b_ih = random_vector(size_t(GH), 0.3), b_hh = random_vector(size_t(GH), 0.3);
  const std::vector<double> w_hh = random_vector(size_t(GH * H), 2.0 / std::sqrt(double(H)));
  const std::vector<double> h0 = random_vector(size_t(B * H), 1.0);
  const std::vector<double> c0 = random_vector(size_t(B * H), 1.0);
  const std::vector<double> grad_h_all = random_vector(size_t(S * B * H), 1.0);
  const std::vector<double> grad_h_n = cs.null_grads ? std::vector<double>(size_t(B * H), 0.0) : random_vector(size_t(B * H), 1.0);
  const std::vector<double> grad_c_n = cs.null_grads ? std::vector<double>(size_t(B * H), 0.0) : random_vector(size_t(B * H), 1.0);
  std::vector<int> lengths(size_t(B), cs.steps);
  if (cs.ragged) {
    for (int64_t b = 0; b < B; ++b) lengths[size_t(b)] = 1 + int((3 * b + 1) % S);  // every length in [1, T]
  }

  // What rnn.cu's callers compute outside the step kernels (dlk/rnn.h): the input projection for all
  // steps, in double, stored in T; LSTM folds b_hh into it, GRU passes b_hh to the kernel.
  std::vector<double> x_proj(size_t(S * B * GH));
  for (int64_t tb = 0; tb < S * B; ++tb)
    for (int64_t r = 0; r < GH; ++r) {
      double sum = b_ih[size_t(r)] + (kLstm ? b_hh[size_t(r)] : 0.0);
      for (int64_t i = 0; i < I; ++i) sum += x[size_t(tb * I + i)] * w_ih[size_t(r * I + i)];
      x_proj[size_t(tb * GH + r)] = value(store<T>(sum));
    }

  RnnParams base;
  base.cell = kCell;
  base.steps = S;
  base.batch = B;
  base.hidden = H;
  base.reverse = cs.reverse;
  base.lengths = cs.ragged ? lengths.data() : nullptr;
  const auto valid = [&](int64_t t, int64_t b) { return rnn_step_valid(base, t, b); };
  // cpu/rnn.cpp's rnn_prev_time: the time whose state step t of b starts from (-1: h0 / c0).
  const auto prev_time = [&](int64_t t, int64_t b) -> int64_t {
    if (!cs.reverse) return t - 1;
    return t + 1 < lengths[size_t(b)] ? t + 1 : -1;
  };
  const auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };

  // ---- reference forward (double; h rounded to T after every step, as the contract stores it)
  std::vector<double> ref_h_all(size_t(S * B * H)), ref_c_all(size_t(S * B * H)), ref_saved(size_t(S * B * 4 * H));
  std::vector<double> ref_h_n(size_t(B * H)), ref_c_n(size_t(B * H));
  {
    std::vector<double> h = h0, c = c0, h_next(size_t(B * H));
    for (int64_t s = 0; s < S; ++s) {
      const int64_t t = rnn_time_at(base, s);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) {
          const size_t bj = size_t(b * H + j), out = size_t((t * B + b) * H + j);
          double* saved = &ref_saved[size_t((t * B + b) * 4 * H + j)];
          if (!valid(t, b)) {
            h_next[bj] = h[bj];
            ref_h_all[out] = 0;
            ref_c_all[out] = c[bj];
            for (int k = 0; k < 4; ++k) saved[k * H] = 0;
            continue;
          }
          double gh[4] = {0, 0, 0, 0};
          for (int64_t g = 0; g < G; ++g)
            for (int64_t k = 0; k < H; ++k) gh[g] += h[size_t(b * H + k)] * w_hh[size_t((g * H + j) * H + k)];
          const double* xp = &x_proj[size_t((t * B + b) * GH + j)];
          double h_new;
          if (kLstm) {
            const double i = sigmoid(xp[0] + gh[0]), f = sigmoid(xp[H] + gh[1]), g = std::tanh(xp[2 * H] + gh[2]),
                         o = sigmoid(xp[3 * H] + gh[3]);
            c[bj] = f * c[bj] + i * g;
            h_new = o * std::tanh(c[bj]);
            ref_c_all[out] = c[bj];
            saved[0] = i, saved[H] = f, saved[2 * H] = g, saved[3 * H] = o;
          } else {
            const double r = sigmoid(xp[0] + gh[0] + b_hh[size_t(j)]), z = sigmoid(xp[H] + gh[1] + b_hh[size_t(H + j)]);
            const double hn = gh[2] + b_hh[size_t(2 * H + j)], n = std::tanh(xp[2 * H] + r * hn);
            h_new = (1 - z) * n + z * h[bj];
            saved[0] = r, saved[H] = z, saved[2 * H] = n, saved[3 * H] = hn;
          }
          h_next[bj] = ref_h_all[out] = value(store<T>(h_new));
        }
      std::swap(h, h_next);
    }
    for (size_t i = 0; i < h.size(); ++i) {
      ref_h_n[i] = value(store<T>(h[i]));
      ref_c_n[i] = value(store<T>(c[i]));
    }
  }

  // ---- the forward kernel, step by step as rnn.cu's launch_forward (per-step path)
  Buffer<T> x_proj_buf = to_buffer(x_proj), w_hh_buf = to_buffer(w_hh), b_hh_buf = to_buffer(b_hh);
  Buffer<T> h0_buf = to_buffer(h0), c0_buf = to_buffer(c0);
  Buffer<T> h_all(size_t(S * B * H)), h_n(size_t(B * H)), c_n(size_t(B * H));
  Buffer<Acc> c_all(size_t(S * B * H)), saved(size_t(S * B * 4 * H));
  fill_nan(h_all), fill_nan(h_n), fill_nan(c_n), fill_nan(c_all), fill_nan(saved);
  RnnFwdParams fp;
  static_cast<RnnParams&>(fp) = base;
  fp.w_hh = w_hh_buf.data();
  fp.b_hh = kLstm ? nullptr : b_hh_buf.data();
  fp.h0 = h0_buf.data();
  fp.c0 = kLstm ? c0_buf.data() : nullptr;
  fp.x_proj = x_proj_buf.data();
  fp.h_all = h_all.data();
  fp.c_all = kLstm ? c_all.data() : nullptr;
  fp.h_n = h_n.data();
  fp.c_n = kLstm ? c_n.data() : nullptr;
  fp.saved = cs.training ? saved.data() : nullptr;
  fp.training = cs.training;

  const plan::RnnGrid grid_plan = [&] {
    plan::RnnGrid g = plan::plan_rnn_grid(H, rnn::kHiddenTile, B, FwdTile::kBatchTile);
    // chunk=N: the same chunking with a limit of N batch tiles per launch instead of grid.y's 65,535.
    if (cs.chunk > 0) g.batch_tiles = plan::chunks_of_at_most(g.batch_tiles.count, cs.chunk);
    return g;
  }();
  dlk_emu::Findings findings;
  dlk_emu::Options options;
  options.detect = cs.detect;
  options.co_schedule = cs.schedule == "rr" ? dlk_emu::Options::CoSchedule::kRoundRobin
                                            : dlk_emu::Options::CoSchedule::kGreedy;
  const bool persistent = cs.path == "persistent";
  // rnn.cu takes the persistent path only for a single launch (plan.single_launch()) whose shared
  // memory fits the opt-in limit (persistent_fits: max_smem_optin, 227 KiB on sm_90); the residency
  // check (every CTA resident at once) is the emulator's by construction.
  if (persistent) {
    constexpr size_t kOptinBytes = 227 * 1024;
    const int64_t GH_rows = int64_t(rnn_gate_count(kCell)) * H;
    if (cs.chunk != 0 || !grid_plan.single_launch() || FwdTile::persistent_smem_bytes(H) > kOptinBytes ||
        BwdTile::persistent_smem_bytes(GH_rows) > kOptinBytes) {
      std::fprintf(stderr, "bad case: rnn.cu would not take the persistent path\n");
      return 2;
    }
  }
  // The persistent launches' barrier counter (rnn.cu: the workspace's first word, zeroed by
  // cudaMemsetAsync before each cooperative launch), and the arrivals it must end with.
  unsigned int barrier_counter = 0;
  const unsigned int ctas = unsigned(grid_plan.hidden_tiles * grid_plan.batch_tiles.per_chunk);
  std::vector<std::tuple<std::string, unsigned int, unsigned int>> barrier_checks;  // (what, expected, got)
  bool ran = true;
  // rnn.cu's launch_over_batch_tiles: one launch per chunk of batch tiles, told its first tile.
  const auto launch_step = [&](rnn::StepArgs& args, size_t smem_bytes, const std::function<void()>& body) {
    for (int64_t chunk = 0; chunk < grid_plan.batch_tiles.launches && ran; ++chunk) {
      const dim3 grid(unsigned(grid_plan.hidden_tiles), unsigned(grid_plan.batch_tiles.size(chunk)));
      args.batch_tile_offset = grid_plan.batch_tiles.first(chunk);
      ran = dlk_emu::launch(grid, dim3(rnn::kThreads), reinterpret_cast<char*>(rnn::smem), smem_bytes, body, options,
                            findings);
    }
  };
  // rnn.cu's launch_forward / launch_backward, persistent branch: one cooperative launch of the
  // (hidden tiles, batch tiles) grid running every step, shared memory persistent_smem_bytes(K),
  // first_step 0, num_steps = launches, the barrier counter zeroed first.
  const auto launch_persistent = [&](rnn::StepArgs& args, int64_t launches, size_t smem_bytes,
                                     const std::function<void()>& body, const char* what) {
    args.first_step = 0;
    args.num_steps = launches;
    args.batch_tile_offset = 0;
    barrier_counter = 0;
    args.barrier = &barrier_counter;
    const dim3 grid(unsigned(grid_plan.hidden_tiles), unsigned(grid_plan.batch_tiles.per_chunk));
    ran = ran && dlk_emu::launch_cooperative(grid, dim3(rnn::kThreads), reinterpret_cast<char*>(rnn::smem),
                                             smem_bytes, body, options, findings);
    if (ran) barrier_checks.emplace_back(what, unsigned(launches - 1) * ctas, barrier_counter);
  };
  {
    rnn::StepArgs args;
    const bool even_rows = H % 2 == 0;
    args.weights_aligned = even_rows && is_aligned(fp.w_hh, 4);
    args.batch_aligned = even_rows && is_aligned(fp.h_all, 4) && is_aligned(fp.h0, 4);
    if (persistent) {
      const std::function<void()> body = [&] { rnn::rnn_forward_kernel<T, kCell, kNTiles, true>(fp, args); };
      launch_persistent(args, S, FwdTile::persistent_smem_bytes(H), body, "forward");
    } else {
      args.num_steps = 1;
      const std::function<void()> body = [&] { rnn::rnn_forward_kernel<T, kCell, kNTiles, false>(fp, args); };
      for (int64_t s = 0; s < S && ran; ++s) {
        args.first_step = s;
        launch_step(args, FwdTile::kStepSmemBytes, body);
      }
    }
  }

  dlk_emu::Tally tally;
  compare<T>(tally, "h_all", ref_h_all, [&](size_t i) { return value(h_all[i]); });
  compare<T>(tally, "h_n", ref_h_n, [&](size_t i) { return value(h_n[i]); });
  if (kLstm) {
    compare<T>(tally, "c_all", ref_c_all, [&](size_t i) { return double(c_all[i]); });
    compare<T>(tally, "c_n", ref_c_n, [&](size_t i) { return value(c_n[i]); });
  }
  if (cs.training) compare<T>(tally, "saved", ref_saved, [&](size_t i) { return double(saved[i]); });

  // ---- backward inputs: the reference forward's tensors in the dtypes the forward stores them in
  Buffer<T> h_all_in = to_buffer(ref_h_all), grad_h_all_buf = to_buffer(grad_h_all);
  Buffer<T> grad_h_n_buf = to_buffer(grad_h_n), grad_c_n_buf = to_buffer(grad_c_n);
  Buffer<Acc> c_all_in(ref_c_all.size()), saved_in(ref_saved.size());
  for (size_t i = 0; i < ref_c_all.size(); ++i) c_all_in[i] = Acc(ref_c_all[i]);
  for (size_t i = 0; i < ref_saved.size(); ++i) saved_in[i] = Acc(ref_saved[i]);

  // ---- reference backward (double, as cpu/rnn.cpp's backward), on exactly those stored values
  std::vector<double> ref_grad_x(size_t(S * B * GH)), ref_grad_gh(size_t(S * B * GH));
  std::vector<double> ref_grad_h0(size_t(B * H)), ref_grad_c0(size_t(B * H));
  {
    std::vector<double> dh = grad_h_n, dc = grad_c_n, dh_next(size_t(B * H)), dh_direct(size_t(B * H));
    std::vector<double> step_gh(size_t(B * GH));
    for (int64_t s = S - 1; s >= 0; --s) {
      const int64_t t = rnn_time_at(base, s);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < H; ++j) {
          const size_t bj = size_t(b * H + j), row = size_t(t * B + b);
          double* gx = &ref_grad_x[row * GH + j];
          double* ggh = &ref_grad_gh[row * GH + j];
          double* gh = &step_gh[size_t(b * GH + j)];
          if (!valid(t, b)) {
            for (int64_t g = 0; g < G; ++g) gx[g * H] = ggh[g * H] = gh[g * H] = 0;
            continue;
          }
          const double dh_t = dh[bj] + grad_h_all[row * H + j];
          const int64_t prev = prev_time(t, b);
          if (kLstm) {
            const double i = double(saved_in[row * 4 * H + j]), f = double(saved_in[row * 4 * H + H + j]),
                         g = double(saved_in[row * 4 * H + 2 * H + j]), o = double(saved_in[row * 4 * H + 3 * H + j]);
            const double c_prev = prev < 0 ? c0[bj] : double(c_all_in[size_t((prev * B + b) * H + j)]);
            const double tanh_c = std::tanh(double(c_all_in[row * H + j]));
            const double dc_t = dc[bj] + dh_t * o * (1 - tanh_c * tanh_c);
            gx[0] = dc_t * g * i * (1 - i);
            gx[H] = dc_t * c_prev * f * (1 - f);
            gx[2 * H] = dc_t * i * (1 - g * g);
            gx[3 * H] = dh_t * tanh_c * o * (1 - o);
            for (int k = 0; k < 4; ++k) ggh[k * H] = gh[k * H] = gx[k * H];
            dc[bj] = dc_t * f;
          } else {
            const double r = double(saved_in[row * 4 * H + j]), z = double(saved_in[row * 4 * H + H + j]),
                         n = double(saved_in[row * 4 * H + 2 * H + j]), hn = double(saved_in[row * 4 * H + 3 * H + j]);
            const double h_prev = prev < 0 ? h0[bj] : value(h_all_in[size_t((prev * B + b) * H + j)]);
            const double dn_pre = dh_t * (1 - z) * (1 - n * n);
            const double dr_pre = dn_pre * hn * r * (1 - r);
            const double dz_pre = dh_t * (h_prev - n) * z * (1 - z);
            gx[0] = ggh[0] = gh[0] = dr_pre;
            gx[H] = ggh[H] = gh[H] = dz_pre;
            gx[2 * H] = dn_pre;
            ggh[2 * H] = gh[2 * H] = dn_pre * r;
            dh_direct[bj] = dh_t * z;
          }
        }
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < H; ++k) {
          const size_t bk = size_t(b * H + k);
          if (!valid(t, b)) {
            dh_next[bk] = dh[bk];
            continue;
          }
          double sum = kLstm ? 0.0 : dh_direct[bk];
          for (int64_t r = 0; r < GH; ++r) sum += step_gh[size_t(b * GH + r)] * w_hh[size_t(r * H + k)];
          dh_next[bk] = sum;
        }
      std::swap(dh, dh_next);
    }
    ref_grad_h0 = dh;
    ref_grad_c0 = dc;
    for (double& v : ref_grad_h0) v = value(store<T>(v));
    for (double& v : ref_grad_c0) v = value(store<T>(v));
  }

  // ---- the backward kernel, step by step as rnn.cu's launch_backward (per-step path)
  Buffer<Acc> grad_x(size_t(S * B * GH)), grad_gh(size_t(S * B * GH));
  Buffer<T> grad_h0(size_t(B * H)), grad_c0(size_t(B * H));
  fill_nan(grad_x), fill_nan(grad_gh), fill_nan(grad_h0), fill_nan(grad_c0);
  RnnBwdParams bp;
  static_cast<RnnParams&>(bp) = base;
  bp.w_hh = w_hh_buf.data();
  bp.b_hh = fp.b_hh;
  bp.h0 = h0_buf.data();
  bp.c0 = fp.c0;
  bp.h_all = h_all_in.data();
  bp.c_all = kLstm ? c_all_in.data() : nullptr;
  bp.saved = saved_in.data();
  bp.grad_h_all = grad_h_all_buf.data();
  bp.grad_h_n = cs.null_grads ? nullptr : grad_h_n_buf.data();
  bp.grad_c_n = kLstm && !cs.null_grads ? grad_c_n_buf.data() : nullptr;
  bp.grad_x_proj = grad_x.data();
  bp.grad_gh = kLstm ? nullptr : grad_gh.data();
  bp.grad_h0 = grad_h0.data();
  bp.grad_c0 = kLstm ? grad_c0.data() : nullptr;
  // The workspace (rnn.cu's backward_layout; its pieces 256-byte aligned there, 16 here): W_hh^T (as
  // rnn_transpose_kernel writes it), the two gate-gradient buffers and the carries, left uninitialised
  // as rnn.cu leaves them (NaN here).
  Buffer<T> weight_t(size_t(H * GH)), gate_grads0(size_t(B * GH)), gate_grads1(size_t(B * GH));
  Buffer<Acc> dh_carry(size_t(B * H)), dc_carry(size_t(B * H));
  for (int64_t r = 0; r < GH; ++r)
    for (int64_t k = 0; k < H; ++k) weight_t[size_t(k * GH + r)] = w_hh_buf[size_t(r * H + k)];
  fill_nan(gate_grads0), fill_nan(gate_grads1), fill_nan(dh_carry), fill_nan(dc_carry);
  rnn::BwdScratch<T> ws;
  ws.weight_t = weight_t.data();
  ws.gate_grads[0] = gate_grads0.data();
  ws.gate_grads[1] = gate_grads1.data();
  ws.dh_carry = dh_carry.data();
  ws.dc_carry = dc_carry.data();
  ws.barrier = persistent ? &barrier_counter : nullptr;  // rnn.cu: args.barrier = ws.barrier
  {
    rnn::StepArgs args;
    args.weights_aligned = GH % 2 == 0;  // the workspace is aligned
    args.batch_aligned = GH % 2 == 0;
    if (persistent) {  // T iterations + grad_h0 / grad_c0 in one launch
      const std::function<void()> body = [&] { rnn::rnn_backward_kernel<T, kCell, kNTiles, true>(bp, ws, args); };
      launch_persistent(args, S + 1, BwdTile::persistent_smem_bytes(GH), body, "backward");
    } else {
      args.num_steps = 1;
      const std::function<void()> body = [&] { rnn::rnn_backward_kernel<T, kCell, kNTiles, false>(bp, ws, args); };
      for (int64_t s = 0; s < S + 1 && ran; ++s) {  // T iterations + grad_h0 / grad_c0
        args.first_step = s;
        launch_step(args, BwdTile::kStepSmemBytes, body);
      }
    }
  }

  compare<T>(tally, "grad_x_proj", ref_grad_x, [&](size_t i) { return double(grad_x[i]); });
  if (!kLstm) compare<T>(tally, "grad_gh", ref_grad_gh, [&](size_t i) { return double(grad_gh[i]); });
  compare<T>(tally, "grad_h0", ref_grad_h0, [&](size_t i) { return value(grad_h0[i]); });
  if (kLstm) compare<T>(tally, "grad_c0", ref_grad_c0, [&](size_t i) { return value(grad_c0[i]); });
  // Persistent: every CTA arrived once at each of the launch's barriers (counted as outputs, and
  // printed when wrong).
  for (const auto& [what, expected, got] : barrier_checks) {
    tally.check(expected == got, 0.0, [&, w = what, e = expected, g = got] {
      return std::string(w) + " barrier counter: " + std::to_string(g) + " arrivals, expected " + std::to_string(e);
    });
    if (expected != got) std::printf("  %s barrier counter: %u arrivals, expected %u\n", what.c_str(), got, expected);
  }

  std::printf("rnn_forward_kernel + rnn_backward_kernel <%s, %s, %d tiles> path=%s T=%d batch=%d input=%d hidden=%d "
              "reverse=%d ragged=%d training=%d null_grads=%d chunk=%d: %zu of %zu outputs wrong (max |err| %.3g "
              "of max |ref|), %llu blocks, %llu cooperative launches, %llu spins, %d findings\n",
              cs.dtype.c_str(), cs.cell.c_str(), kNTiles, cs.path.c_str(), cs.steps, cs.batch, cs.input, cs.hidden,
              int(cs.reverse), int(cs.ragged), int(cs.training), int(cs.null_grads), cs.chunk, tally.wrong,
              tally.checked, tally.worst, static_cast<unsigned long long>(dlk_emu::g_counters.blocks),
              static_cast<unsigned long long>(dlk_emu::g_counters.cooperative_launches),
              static_cast<unsigned long long>(dlk_emu::g_counters.spins), findings.total());
  return dlk_emu::verdict(tally, findings, ran);
}

template <typename T>
int run_dtype(const Case& cs) {
  constexpr int kLarge = std::is_same_v<T, double> ? 2 : 4;  // rnn.cu's dispatch_cell_and_tiles
  const int tiles = cs.tiles != 0 ? cs.tiles : n_tiles_for(cs.batch, std::is_same_v<T, double>);
  if (tiles != 1 && tiles != kLarge) return 2;  // rnn.cu instantiates only these
  const bool small = tiles == 1;
  if (cs.cell == "lstm") return small ? run<T, RnnCell::kLSTM, 1>(cs) : run<T, RnnCell::kLSTM, kLarge>(cs);
  if (cs.cell == "gru") return small ? run<T, RnnCell::kGRU, 1>(cs) : run<T, RnnCell::kGRU, kLarge>(cs);
  return 2;
}

// Mutant builds take one dtype: -DDLK_EMULATE_F16_ONLY (the tensor-core GEMM, as for the other
// programs) or -DDLK_EMULATE_F32_ONLY (the SIMT GEMM).
int dispatch(const Case& cs) {
#ifndef DLK_EMULATE_F32_ONLY
  if (cs.dtype == "f16") return run_dtype<__half>(cs);
#endif
#ifndef DLK_EMULATE_F16_ONLY
  if (cs.dtype == "f32") return run_dtype<float>(cs);
#ifndef DLK_EMULATE_F32_ONLY
  if (cs.dtype == "bf16") return run_dtype<__nv_bfloat16>(cs);
  if (cs.dtype == "f64") return run_dtype<double>(cs);
#endif
#endif
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Case cs;
  if (!parse(argc, argv, cs) || cs.steps < 1 || cs.batch < 1 || cs.hidden < 1 || cs.input < 1 || cs.chunk < 0) {
    std::fprintf(stderr, "bad case\n");
    return 2;
  }
  const int status = dispatch(cs);
  if (status == 2) std::fprintf(stderr, "bad case (cell, dtype or tiles)\n");
  return status;
}
