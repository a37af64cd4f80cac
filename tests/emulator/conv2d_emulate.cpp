// The implicit-GEMM convolution kernel (csrc/cuda/conv2d_kernels.cuh: conv_gemm_kernel<ConvGemm<...>>)
// run block by block on the CPU by the warp emulator (warp_emu.h, tensor_core_emu.h), compared with
// a plain-loop convolution, with the shared-memory race detector on. The kernel source is compiled
// unchanged: its device branches (cp.async, ldmatrix, mma.sync) are selected by defining
// __CUDA_ARCH__ for it, and resolve to the emulator's versions of tensor_core.cuh's wrappers.
//
// dtype: f16, bf16 and tf32 (fp32 data, allow_tf32) run the tensor-core math (4 warps, mma.sync);
// f32 and f64 the exact SIMT math (256 threads, FMA on plain shared loads, which the race detector
// does not see: only its stores are checked there).
//
// One case per run, from `key=value` arguments (see Case). Prints one summary line and, when the
// detector finds anything, the findings; exit status 0 when the results match and the detector is
// clean, 1 on a mismatch or a finding, 2 on a bad case (e.g. fast=1 where the planner would not
// pick the cp.async loader).
#include "harness.h"
#include "warp_emu.h"

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"
#include "conv2d_kernels.cuh"
#undef __CUDA_ARCH__

#include <chrono>
#include <random>

namespace dlk {
namespace conv {
// The kernel's `extern __shared__` buffer: one block runs at a time.
alignas(128) uint4 smem_storage[dlk_emu::kMaxSharedBytes / sizeof(uint4)];
}  // namespace conv
}  // namespace dlk

namespace {

using namespace dlk;
using namespace dlk::conv;

struct Case {
  std::string op = "fwd", dtype = "f16";
  bool channels_last = true, fast = true, epilogue = false, detect = true;
  int n = 1, c = 8, h = 5, w = 5, k = 8, r = 3, s = 3, groups = 1;
  int stride_h = 1, stride_w = 1, pad_h = 1, pad_w = 1, dil_h = 1, dil_w = 1;
  int splits = 1;  // wgrad: blocks along the reduction
  TileShape tile = TileShape::k64x64;
  uint32_t seed = 1;
};

bool pair(const std::string& v, int& a, int& b) { return std::sscanf(v.c_str(), "%d,%d", &a, &b) == 2; }

bool parse(int argc, char** argv, Case& c) {
  return dlk_emu::parse_arguments(argc, argv, [&](const std::string& key, const std::string& v) {
    const int x = dlk_emu::to_int(v);
    if (key == "op") c.op = v;
    else if (key == "dtype") c.dtype = v;
    else if (key == "layout") c.channels_last = v == "nhwc";
    else if (key == "fast") c.fast = x != 0;
    else if (key == "epilogue") c.epilogue = x != 0;
    else if (key == "detect") c.detect = x != 0;
    else if (key == "n") c.n = x;
    else if (key == "c") c.c = x;
    else if (key == "h") c.h = x;
    else if (key == "w") c.w = x;
    else if (key == "k") c.k = x;
    else if (key == "r") c.r = x;
    else if (key == "s") c.s = x;
    else if (key == "groups") c.groups = x;
    else if (key == "splits") c.splits = x;
    else if (key == "seed") c.seed = uint32_t(x);
    else if (key == "stride") { if (!pair(v, c.stride_h, c.stride_w)) return false; }
    else if (key == "pad") { if (!pair(v, c.pad_h, c.pad_w)) return false; }
    else if (key == "dil") { if (!pair(v, c.dil_h, c.dil_w)) return false; }
    else if (key == "tile") {
      if (v == "128x128") c.tile = TileShape::k128x128;
      else if (v == "128x64") c.tile = TileShape::k128x64;
      else if (v == "64x64") c.tile = TileShape::k64x64;
      else return false;
    } else return false;
    return true;
  });
}

using dlk_emu::Buffer;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
Divider<uint32_t> divider(int64_t d) { return Divider<uint32_t>(static_cast<uint32_t>(std::max<int64_t>(d, 1))); }

struct Geometry {
  Case c;
  int cg, kg, p, q;
  int64_t x_index(int n, int ch, int y, int x) const {
    return c.channels_last ? ((int64_t(n) * c.h + y) * c.w + x) * c.c + ch : ((int64_t(n) * c.c + ch) * c.h + y) * c.w + x;
  }
  int64_t y_index(int n, int kk, int y, int x) const {
    return c.channels_last ? ((int64_t(n) * p + y) * q + x) * c.k + kk : ((int64_t(n) * c.k + kk) * p + y) * q + x;
  }
  // weight (K, C/G, R, S): KRSC in channels_last, KCRS otherwise.
  int64_t w_index(int kk, int ch, int rr, int ss) const {
    return c.channels_last ? ((int64_t(kk) * c.r + rr) * c.s + ss) * cg + ch : ((int64_t(kk) * cg + ch) * c.r + rr) * c.s + ss;
  }
};

ConvShape conv_shape(const Geometry& g) {
  ConvShape s;
  s.channels = g.c.c;
  s.in_h = g.c.h;
  s.in_w = g.c.w;
  s.out_channels = g.c.k;
  s.out_h = g.p;
  s.out_w = g.q;
  s.group_channels = g.cg;
  s.group_out_channels = g.kg;
  s.kernel_h = g.c.r;
  s.kernel_w = g.c.s;
  s.stride_h = g.c.stride_h;
  s.stride_w = g.c.stride_w;
  s.pad_h = g.c.pad_h;
  s.pad_w = g.c.pad_w;
  s.dilation_h = g.c.dil_h;
  s.dilation_w = g.c.dil_w;
  s.in_image = int64_t(g.c.c) * g.c.h * g.c.w;
  s.out_image = int64_t(g.c.k) * g.p * g.q;
  return s;
}

template <class Loader> struct IsChunkLoader : std::false_type {};
template <typename T, class Source, int kTileRows, int kThreads>
struct IsChunkLoader<ChunkLoader<T, Source, kTileRows, kThreads>> : std::true_type {};

// Runs every block of `grid` of the instantiation that `choice` selects.
template <template <typename, bool> class Op, typename T, class Args>
bool emulate(const Args& args, const GemmChoice& choice, dim3 grid, dlk_emu::Findings& findings, bool detect,
             std::string& kernel) {
  bool ok = false;
  const Status status = dispatch_gemm<Op, T>(choice, [&](auto gemm) {
    using Gemm = typename decltype(gemm)::type;
    kernel = std::to_string(Gemm::kRows) + "x" + std::to_string(Gemm::kCols) +
             (IsChunkLoader<typename Gemm::LoaderA>::value ? " cp.async A" : " gather A") +
             (IsChunkLoader<typename Gemm::LoaderB>::value ? ", cp.async B" : ", gather B");
    dlk_emu::Options options;
    options.detect = detect;
    const std::function<void()> body = [&] { conv_gemm_kernel<Gemm>(args); };
    ok = dlk_emu::launch(grid, dim3(Gemm::kThreads), reinterpret_cast<char*>(smem_storage), Gemm::kSmemBytes, body,
                         options, findings);
    return Status::kOk;
  });
  return status == Status::kOk && ok;
}

// Relative rounding of the output (fp16, bf16), of TF32 operands (10 mantissa bits), of fp32 sums.
template <typename T>
double tolerance_eps(bool tensor_cores) {
  if constexpr (std::is_same_v<T, __half>) return 1.0 / 2048;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return 1.0 / 256;
  else if constexpr (std::is_same_v<T, double>) return 1e-13;
  else return tensor_cores ? 1.0 / 1024 : 1e-6;
}

template <typename T>
int run(const Case& cs) {
  Geometry g{cs, cs.c / cs.groups, cs.k / cs.groups, 0, 0};
  g.p = (cs.h + 2 * cs.pad_h - cs.dil_h * (cs.r - 1) - 1) / cs.stride_h + 1;
  g.q = (cs.w + 2 * cs.pad_w - cs.dil_w * (cs.s - 1) - 1) / cs.stride_w + 1;
  if (cs.c % cs.groups || cs.k % cs.groups || g.p <= 0 || g.q <= 0) return 2;
  constexpr int kVec = kChunkElems<T>;
  const size_t x_elems = size_t(cs.n) * cs.c * cs.h * cs.w, y_elems = size_t(cs.n) * cs.k * g.p * g.q;
  const size_t w_elems = size_t(cs.k) * g.cg * cs.r * cs.s;
  std::mt19937 rng(cs.seed);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  // Operands rounded to T first: the reference then sees exactly what the kernel sees.
  const auto fill = [&](Buffer<T>& b, std::vector<double>& ref) {
    ref.resize(b.size);
    for (size_t i = 0; i < b.size; ++i) {
      b[i] = from_accumulate<T>(uniform(rng));
      ref[i] = to_accumulate(b[i]);
    }
  };
  Buffer<T> x(x_elems), w(w_elems), y(y_elems), bias(cs.k), residual(y_elems);
  std::vector<double> xr, wr, yr, br, rr;
  fill(x, xr);
  fill(w, wr);
  fill(y, yr);  // forward: overwritten; dgrad / wgrad: grad_output
  fill(bias, br);
  fill(residual, rr);
  const double slope = 0.125;

  GemmChoice choice;
  choice.tensor_cores = !(std::is_same_v<T, double> || cs.dtype == "f32");  // f32: exact SIMT; tf32: mma
  choice.channels_last = cs.channels_last;
  choice.tile = cs.tile;
  dlk_emu::Findings findings;
  std::string kernel;
  bool ran = false;
  std::vector<double> out_ref, out_abs;  // reference and sum of |terms| per output element
  std::vector<double> out;

  if (cs.op == "fwd") {
    // As forward_gemm in conv2d.cu (one launch: the emulated shapes are small).
    choice.fast = cs.fast;
    if (cs.fast && !(cs.channels_last && g.cg % kVec == 0)) return 2;
    ForwardArgs a;
    a.gemm.rows = cs.n * g.p * g.q;
    a.gemm.cols = g.kg;
    a.gemm.depth = g.cg * cs.r * cs.s;
    a.gemm.tiles_n = int(ceil_div(g.kg, tile_cols(cs.tile)));
    a.gemm.k_tiles_per_split = int(ceil_div(a.gemm.depth, kTileK<T>));
    a.input = x.data();
    a.weight = w.data();
    a.output = y.data();
    if (cs.epilogue) {
      a.bias = bias.data();
      a.residual = residual.data();
      a.activation = true;
      a.negative_slope = slope;
    }
    a.out_pixels = divider(int64_t(g.p) * g.q);
    a.out_width = divider(g.q);
    a.reduction_outer = divider(cs.channels_last ? g.cg : cs.r * cs.s);
    a.kernel_width = divider(cs.s);
    a.shape = conv_shape(g);
    a.vector_store = cs.channels_last && g.kg % kVec == 0;
    const dim3 grid(unsigned(ceil_div(a.gemm.rows, tile_rows(cs.tile)) * a.gemm.tiles_n), unsigned(cs.groups), 1);
    ran = emulate<ForwardOp, T>(a, choice, grid, findings, cs.detect, kernel);
    out_ref.assign(y_elems, 0);
    out_abs.assign(y_elems, 0);
    for (int n = 0; n < cs.n; ++n)
      for (int kk = 0; kk < cs.k; ++kk)
        for (int oh = 0; oh < g.p; ++oh)
          for (int ow = 0; ow < g.q; ++ow) {
            const int grp = kk / g.kg;
            double sum = 0, abs_sum = 0;
            for (int ch = 0; ch < g.cg; ++ch)
              for (int r = 0; r < cs.r; ++r)
                for (int s = 0; s < cs.s; ++s) {
                  const int ih = oh * cs.stride_h - cs.pad_h + r * cs.dil_h, iw = ow * cs.stride_w - cs.pad_w + s * cs.dil_w;
                  if (ih < 0 || ih >= cs.h || iw < 0 || iw >= cs.w) continue;
                  const double t = xr[g.x_index(n, grp * g.cg + ch, ih, iw)] * wr[g.w_index(kk, ch, r, s)];
                  sum += t;
                  abs_sum += std::fabs(t);
                }
            const int64_t i = g.y_index(n, kk, oh, ow);
            if (cs.epilogue) {
              sum += br[kk] + rr[i];
              abs_sum += std::fabs(br[kk]) + std::fabs(rr[i]);
              if (sum < 0) sum *= slope;
            }
            out_ref[i] = sum;
            out_abs[i] = abs_sum;
          }
    out.resize(y_elems);
    for (size_t i = 0; i < y_elems; ++i) out[i] = to_accumulate(y[i]);
  } else if (cs.op == "dgrad") {
    // As dgrad_gemm in conv2d.cu.
    choice.fast = cs.fast;
    if (cs.fast && !(cs.channels_last && g.kg % kVec == 0)) return 2;
    Buffer<T> dx(x_elems);
    for (size_t i = 0; i < x_elems; ++i) dx[i] = from_accumulate<T>(12345.f);  // every element is written
    DgradArgs a;
    a.gemm.rows = cs.n * cs.h * cs.w;
    a.gemm.cols = g.cg;
    a.gemm.depth = g.kg * cs.r * cs.s;
    a.gemm.tiles_n = int(ceil_div(g.cg, tile_cols(cs.tile)));
    a.gemm.k_tiles_per_split = int(ceil_div(a.gemm.depth, kTileK<T>));
    a.grad_output = y.data();
    a.weight = w.data();
    a.grad_input = dx.data();
    a.in_pixels = divider(int64_t(cs.h) * cs.w);
    a.in_width = divider(cs.w);
    a.reduction_outer = divider(cs.channels_last ? g.kg : cs.r * cs.s);
    a.kernel_width = divider(cs.s);
    a.stride_h = divider(cs.stride_h);
    a.stride_w = divider(cs.stride_w);
    a.shape = conv_shape(g);
    a.vector_store = cs.channels_last && g.cg % kVec == 0;
    const dim3 grid(unsigned(ceil_div(a.gemm.rows, tile_rows(cs.tile)) * a.gemm.tiles_n), unsigned(cs.groups), 1);
    ran = emulate<DgradOp, T>(a, choice, grid, findings, cs.detect, kernel);
    out_ref.assign(x_elems, 0);
    out_abs.assign(x_elems, 0);
    for (int n = 0; n < cs.n; ++n)
      for (int kk = 0; kk < cs.k; ++kk)
        for (int oh = 0; oh < g.p; ++oh)
          for (int ow = 0; ow < g.q; ++ow)
            for (int ch = 0; ch < g.cg; ++ch)
              for (int r = 0; r < cs.r; ++r)
                for (int s = 0; s < cs.s; ++s) {
                  const int ih = oh * cs.stride_h - cs.pad_h + r * cs.dil_h, iw = ow * cs.stride_w - cs.pad_w + s * cs.dil_w;
                  if (ih < 0 || ih >= cs.h || iw < 0 || iw >= cs.w) continue;
                  const int64_t i = g.x_index(n, (kk / g.kg) * g.cg + ch, ih, iw);
                  const double t = yr[g.y_index(n, kk, oh, ow)] * wr[g.w_index(kk, ch, r, s)];
                  out_ref[i] += t;
                  out_abs[i] += std::fabs(t);
                }
    out.resize(x_elems);
    for (size_t i = 0; i < x_elems; ++i) out[i] = to_accumulate(dx[i]);
  } else if (cs.op == "wgrad") {
    // As wgrad_gemm in conv2d.cu, with the split count given; the partial sums are added here in
    // slot order (reduce_partials_kernel's job).
    choice.fast = false;
    if (cs.fast) return 2;  // no cp.async loader in wgrad
    using Acc = AccumulateType<T>;
    Buffer<T> dw(w_elems);
    const int64_t slots = cs.splits;
    std::vector<uint4> partials_storage(slots > 1 ? (slots * w_elems * sizeof(Acc) + 15) / 16 : 1);
    Acc* partials = reinterpret_cast<Acc*>(partials_storage.data());
    WgradArgs a;
    a.gemm.rows = g.kg;
    a.gemm.cols = g.cg * cs.r * cs.s;
    a.gemm.depth = cs.n * g.p * g.q;
    a.gemm.tiles_n = int(ceil_div(a.gemm.cols, tile_cols(cs.tile)));
    a.gemm.k_tiles_per_split = int(ceil_div(ceil_div(a.gemm.depth, kTileK<T>), cs.splits));
    a.grad_output = y.data();
    a.input = x.data();
    a.grad_weight = slots == 1 ? static_cast<void*>(dw.data()) : nullptr;
    a.partials = slots == 1 ? nullptr : partials;
    a.first_slot = 0;
    a.slot_elements = int64_t(w_elems);
    a.vector_store = a.gemm.cols % kVec == 0;
    a.out_pixels = divider(int64_t(g.p) * g.q);
    a.out_width = divider(g.q);
    a.reduction_outer = divider(cs.channels_last ? g.cg : cs.r * cs.s);
    a.kernel_width = divider(cs.s);
    a.shape = conv_shape(g);
    const dim3 grid(unsigned(ceil_div(g.kg, tile_rows(cs.tile)) * a.gemm.tiles_n), unsigned(cs.groups),
                    unsigned(cs.splits));
    ran = emulate<WgradOp, T>(a, choice, grid, findings, cs.detect, kernel);
    if (slots > 1) {
      for (size_t i = 0; i < w_elems; ++i) {
        Acc sum = 0;
        for (int64_t sl = 0; sl < slots; ++sl) sum += partials[sl * w_elems + i];
        dw[i] = from_accumulate<T>(sum);
      }
    }
    out_ref.assign(w_elems, 0);
    out_abs.assign(w_elems, 0);
    for (int n = 0; n < cs.n; ++n)
      for (int kk = 0; kk < cs.k; ++kk)
        for (int oh = 0; oh < g.p; ++oh)
          for (int ow = 0; ow < g.q; ++ow)
            for (int ch = 0; ch < g.cg; ++ch)
              for (int r = 0; r < cs.r; ++r)
                for (int s = 0; s < cs.s; ++s) {
                  const int ih = oh * cs.stride_h - cs.pad_h + r * cs.dil_h, iw = ow * cs.stride_w - cs.pad_w + s * cs.dil_w;
                  if (ih < 0 || ih >= cs.h || iw < 0 || iw >= cs.w) continue;
                  const int64_t i = g.w_index(kk, ch, r, s);
                  const double t = yr[g.y_index(n, kk, oh, ow)] * xr[g.x_index(n, (kk / g.kg) * g.cg + ch, ih, iw)];
                  out_ref[i] += t;
                  out_abs[i] += std::fabs(t);
                }
    out.resize(w_elems);
    for (size_t i = 0; i < w_elems; ++i) out[i] = to_accumulate(dw[i]);
  } else {
    return 2;
  }
  if (kernel.empty()) return 2;  // no instantiation for this tile and loader (conv2d_tiles.cuh)

  // Within fp32 accumulation (and TF32 operand) error, plus the output's rounding to T.
  const double eps = tolerance_eps<T>(choice.tensor_cores);
  dlk_emu::Tally tally;
  for (size_t i = 0; i < out.size(); ++i) {
    const double err = std::fabs(out[i] - out_ref[i]);
    const double sum_eps = std::is_same_v<T, double> ? 1e-13 : std::is_same_v<T, float> ? std::max(eps, 1e-5) : 1e-5;
    const double tol = eps * std::fabs(out_ref[i]) + sum_eps * out_abs[i] + (std::is_same_v<T, double> ? 1e-14 : 1e-6);
    tally.check(err <= tol, err, [&] {
      return "output " + std::to_string(i) + ": got " + std::to_string(out[i]) + ", want " + std::to_string(out_ref[i]);
    });
  }
  std::printf("%s %s %s: kernel %s, %llu blocks, %llu ldmatrix, %llu mma, %llu cp.async, %llu barriers; "
              "%zu of %zu outputs wrong (max error %.3g), %d findings\n",
              cs.op.c_str(), cs.dtype.c_str(), cs.channels_last ? "nhwc" : "nchw", kernel.c_str(),
              (unsigned long long)dlk_emu::g_counters.blocks, (unsigned long long)dlk_emu::g_counters.warp_ops[0],
              (unsigned long long)dlk_emu::g_counters.warp_ops[1], (unsigned long long)dlk_emu::g_counters.cp_async,
              (unsigned long long)dlk_emu::g_counters.barriers, tally.wrong, tally.checked, tally.worst,
              findings.total());
  return dlk_emu::verdict(tally, findings, ran);
}

}  // namespace

int main(int argc, char** argv) {
  Case c;
  if (!parse(argc, argv, c)) {
    std::fprintf(stderr, "usage: %s op=fwd|dgrad|wgrad dtype=f16|bf16|tf32|f32|f64 layout=nhwc|nchw fast=0|1 n= c= h= w= k= "
                         "r= s= stride=h,w pad=h,w dil=h,w groups= splits= tile=64x64|128x64|128x128 epilogue=0|1 "
                         "detect=0|1 seed=\n", argv[0]);
    return 2;
  }
  int status = 2;
  if (c.dtype == "f16") status = run<__half>(c);
#ifndef DLK_EMULATE_F16_ONLY  // the planted-fault builds: one dtype compiles in a third of the time
  else if (c.dtype == "bf16") status = run<__nv_bfloat16>(c);
  else if (c.dtype == "tf32" || c.dtype == "f32") status = run<float>(c);
  else if (c.dtype == "f64") status = run<double>(c);
#endif
  if (status == 2) std::printf("bad case\n");
  return status;
}
