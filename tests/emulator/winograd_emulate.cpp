// Winograd convolution F(2x2,3x3) / F(4x4,3x3) (csrc/cuda/conv2d_winograd.cu) run on the CPU by the
// warp emulator (warp_emu.h, tensor_core_emu.h) through the file's own launchers,
// winograd_transform_weight_cuda and conv2d_winograd_cuda, with the shared-memory race and cp.async
// pipeline detector on. No GPU, no CUDA runtime.
//
// The .cu is compiled whole by g++. Its `<<<...>>>` launch statements are the only thing rewritten
// (into ::dlk_emu::cuda_launch(...)(kernel, args...), warp_emu.h): the build includes
// "conv2d_winograd.host.cu", the rewritten copy that tests/test_cuda_emulator_conv_families.py
// (rewrite_launches) writes into its build directory. Every launch then runs its grid on the emulator
// at once, in the launcher's order, with the launcher's grid, block and dynamic shared memory; the
// CUDA runtime calls launch.cuh makes are answered by warp_emu.h's DLK_EMU_CUDA_RUNTIME stubs (`sms=`
// SMs, which is what sizes the elementwise grids and picks the narrow F(2) GEMM tiling). So this runs
// the weight transform kernel, then (as conv2d_winograd_cuda decides) pad_weight_rows_kernel,
// winograd_input_transform_kernel (channels_last pairs / channels_last / NCHW) and
// winograd_gemm_kernel (mma.sync fp16 / bf16 / TF32, wide or narrow; the FMA path for exact fp32 and
// fp64) with its fused output transform and epilogue.
//
// Checked, each against its own double-precision reference on the same (dtype-rounded) inputs:
//   U        = G g G^T (the weight transform's output) and, when the launcher pads U, its padded copy;
//   V        = B^T d B (the input transform's output in the workspace), padding channels exactly zero;
//   output   against the Winograd algorithm in double on the U and V the kernels stored (rounded to
//            TF32 as the GEMM rounds them): the GEMM, output transform, epilogue and stores alone;
//   conv2d   against direct convolution in double (+ bias + residual, LeakyReLU): the whole chain.
// The transform matrices used for U, V, the output transform and the bounds are Lavin & Gray's,
// written out below (not taken from dlk/winograd.h) and checked at start-up to reproduce a direct
// 3x3 correlation.
//
// Tolerances. U, V: 1.01 u_T |ref| + 16 u_acc (|G||g||G^T| or |B^T||d||B|), the rounding to T of a
// value computed in the accumulation type. output: 1.25 (C + 64) u_acc B^ + 1.01 u_T |ref|, B^ the
// sum over xi of |A^T e_xi A|[o] sum_c |V^ U^| (fp32 / fp64 sums, then the output's rounding).
// conv2d: no fixed relative bar exists to borrow: dlkernels.ops.conv2d lists no Winograd tile as
// accurate at any precision (ACCURATE_WINOGRAD_TILES is empty: rounding U and V to the input dtype
// costs F(2) 1.5-3x and F(4) 10-40x PyTorch's error; tests/test_conv2d.py holds the op to
// WINOGRAD_ERROR_FACTOR = 4 / 64 times PyTorch's measured error, a measurement rather than a bound).
// So every output gets the first-order bound of the precision contract (dlk/winograd.h: U, V rounded
// to T; M and the output transform in fp32 / fp64):
//   |out - ref| <= 1.25 * gamma * B + 1.01 u_T |ref| + floor,
//   B     = sum_xi |A^T e_xi A|[o] * sum_c (|B^T| |d| |B|)[xi, c] * (|G| |g| |G^T|)[xi, k, c],
//   gamma = 2 (u_T + u_tf32) + (C + 64) u_acc,
// u_T the unit roundoff of the dtype (2^-11 fp16, 2^-8 bf16, 2^-24 fp32, 2^-53 fp64), u_tf32 = 2^-11
// when the GEMM rounds fp32 operands to TF32 (else 0), u_acc that of the accumulation type; B is the
// sum of the magnitudes of every term the algorithm adds for that output (each carries the roundings
// of one V and one U entry, 2 u_T, plus the sums); 1.25 covers second-order terms. B grows with C
// while |ref| grows with sqrt(C), so this bound is loose in fp16 / bf16 (observed errors are 1-10% of
// it): the tight checks are U, V and output, the conv2d one shows that the composition is a
// convolution.
//
// One case per run, from `key=value` arguments (see Case): dtype f16|bf16|tf32|f32|f64, tile 2|4,
// layout nhwc|nchw, n c h w k, pad=h,w (negative allowed; out = in + 2 pad - 2), epilogue (bias,
// residual, LeakyReLU 0.125), sms (SM count the launcher sees), u_offset (U starts this many
// elements past a 16-byte boundary: the launcher must pad it), out_offset (output and residual
// likewise: channels_last paired stores off), detect, seed. Prints the launches and one summary
// line; exit status as harness.h's verdict (2 on a case the launcher would not run).
// -DDLK_EMULATE_F16_ONLY (planted-fault builds) compiles fp16 alone, the launchers' dtype dispatch
// included.
#define DLK_EMU_CUDA_RUNTIME  // linked with nvcc -cudart=none: warp_emu.h answers the runtime calls
#include "harness.h"
#include "warp_emu.h"

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"

namespace dlk {
namespace {
// winograd_gemm_kernel's `extern __shared__` buffer: the block-scope extern declaration there names
// this (dlk's unnamed namespace, the kernel's). One block runs at a time.
alignas(128) unsigned char smem[dlk_emu::kMaxSharedBytes];
}  // namespace
}  // namespace dlk

#include "common.cuh"
#ifdef DLK_EMULATE_F16_ONLY
// The planted-fault builds run fp16 only: the launchers' dtype dispatch takes fp16 alone (any other
// dtype: kUnsupportedDType), which compiles the .cu's kernels once instead of four times.
namespace dlk {
template <typename Fn>
Status dispatch_dtype_f16_only(DType dtype, Fn&& fn) {
  return dtype == DType::kFloat16 ? fn(TypeTag<__half>{}) : Status::kUnsupportedDType;
}
}  // namespace dlk
#define dispatch_dtype dispatch_dtype_f16_only
#endif
#include "conv2d_winograd.host.cu"  // csrc/cuda/conv2d_winograd.cu, launches rewritten (see the top)
#undef dispatch_dtype
#undef __CUDA_ARCH__

#include "reference_numerics.h"

#include <cmath>
#include <map>
#include <random>
#include <type_traits>

namespace {

using namespace dlk;
using dlk_emu::Buffer;

struct Case {
  std::string dtype = "f16";
  bool channels_last = true, epilogue = false, detect = true;
  int tile = 2, n = 1, c = 8, h = 6, w = 6, k = 8, pad_h = 1, pad_w = 1;
  int sms = 132, u_offset = 0, out_offset = 0;
  uint32_t seed = 1;
};

bool pair(const std::string& v, int& a, int& b) { return std::sscanf(v.c_str(), "%d,%d", &a, &b) == 2; }

bool parse(int argc, char** argv, Case& c) {
  return dlk_emu::parse_arguments(argc, argv, [&](const std::string& key, const std::string& v) {
    const int x = dlk_emu::to_int(v);
    if (key == "dtype") c.dtype = v;
    else if (key == "layout") { if (v != "nhwc" && v != "nchw") return false; c.channels_last = v == "nhwc"; }
    else if (key == "tile") c.tile = x;
    else if (key == "n") c.n = x;
    else if (key == "c") c.c = x;
    else if (key == "h") c.h = x;
    else if (key == "w") c.w = x;
    else if (key == "k") c.k = x;
    else if (key == "pad") { if (!pair(v, c.pad_h, c.pad_w)) return false; }
    else if (key == "epilogue") c.epilogue = x != 0;
    else if (key == "detect") c.detect = x != 0;
    else if (key == "sms") c.sms = x;
    else if (key == "u_offset") c.u_offset = x;
    else if (key == "out_offset") c.out_offset = x;
    else if (key == "seed") c.seed = uint32_t(x);
    else return false;
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Lavin & Gray's F(2,3) and F(4,3) (interpolation points 0, 1, -1 and 0, 1, -1, 2, -2): B^T
// (alpha x alpha), G (alpha x 3), A^T (m x alpha).
struct Transforms {
  int m, alpha;
  std::vector<double> bt, g, at;
};

Transforms transforms(int tile) {
  if (tile == 2) {
    return {2, 4,
            {1, 0, -1, 0, /**/ 0, 1, 1, 0, /**/ 0, -1, 1, 0, /**/ 0, 1, 0, -1},
            {1, 0, 0, /**/ 0.5, 0.5, 0.5, /**/ 0.5, -0.5, 0.5, /**/ 0, 0, 1},
            {1, 1, 1, 0, /**/ 0, 1, -1, -1}};
  }
  return {4, 6,
          {4, 0, -5, 0, 1, 0, /**/ 0, -4, -4, 1, 1, 0, /**/ 0, 4, -4, -1, 1, 0,
           /**/ 0, -2, -1, 2, 1, 0, /**/ 0, 2, -1, -2, 1, 0, /**/ 0, 4, 0, -5, 0, 1},
          {1.0 / 4, 0, 0, /**/ -1.0 / 6, -1.0 / 6, -1.0 / 6, /**/ -1.0 / 6, 1.0 / 6, -1.0 / 6,
           /**/ 1.0 / 24, 1.0 / 12, 1.0 / 6, /**/ 1.0 / 24, -1.0 / 12, 1.0 / 6, /**/ 0, 0, 1},
          {1, 1, 1, 1, 1, 0, /**/ 0, 1, -1, 2, -2, 0, /**/ 0, 1, 1, 4, 4, 0, /**/ 0, 1, -1, 8, -8, 1}};
}

// out[i][j] = sum_pq L[i][p] in[p][q] L[j][q] for L (rows x cols), in (cols x cols); abs: |L| and |in|.
std::vector<double> sandwich(const std::vector<double>& l, int rows, int cols, const double* in, bool abs) {
  std::vector<double> out(size_t(rows * rows), 0.0);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < rows; ++j) {
      double sum = 0;
      for (int p = 0; p < cols; ++p)
        for (int q = 0; q < cols; ++q) {
          const double term = l[size_t(i * cols + p)] * in[p * cols + q] * l[size_t(j * cols + q)];
          sum += abs ? std::fabs(term) : term;
        }
      out[size_t(i * rows + j)] = sum;
    }
  return out;
}

// The matrices must turn A^T [(G g G^T) .* (B^T d B)] A into the 3x3 correlation of d with g.
bool transforms_reproduce_correlation(const Transforms& t) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> uniform(-1, 1);
  std::vector<double> d(size_t(t.alpha * t.alpha)), g(9);
  for (double& v : d) v = uniform(rng);
  for (double& v : g) v = uniform(rng);
  const std::vector<double> v = sandwich(t.bt, t.alpha, t.alpha, d.data(), false);
  const std::vector<double> u = sandwich(t.g, t.alpha, 3, g.data(), false);
  std::vector<double> product(v.size());
  for (size_t i = 0; i < v.size(); ++i) product[i] = v[i] * u[i];
  const std::vector<double> y = sandwich(t.at, t.m, t.alpha, product.data(), false);
  for (int i = 0; i < t.m; ++i)
    for (int j = 0; j < t.m; ++j) {
      double direct = 0;
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) direct += d[size_t((i + r) * t.alpha + j + s)] * g[size_t(r * 3 + s)];
      if (std::fabs(direct - y[size_t(i * t.m + j)]) > 1e-12) return false;
    }
  return true;
}

// ---------------------------------------------------------------------------------------------

using dlk_emu::dtype_of;
using dlk_emu::fill_nan;
using dlk_emu::store;
using dlk_emu::underflow_floor;
using dlk_emu::unit_roundoff;
using dlk_emu::value;

// Names the GEMM instantiation a launch ran (the launcher takes its address as `kernel`).
template <typename T, int Tile>
std::string kernel_name(const dlk_emu::LaunchRecord& r) {
  const auto is = [&](auto fn) { return r.function == reinterpret_cast<const void*>(fn); };
  if constexpr (!std::is_same_v<T, double>) {
    if (is(winograd_gemm_kernel<T, Tile, true, false>)) return "winograd_gemm_kernel<tensor cores, wide>";
    if constexpr (Tile == 2) {
      if (is(winograd_gemm_kernel<T, Tile, true, true>)) return "winograd_gemm_kernel<tensor cores, narrow>";
    }
  }
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>) {
    if (is(winograd_gemm_kernel<T, Tile, false, false>)) return "winograd_gemm_kernel<fma>";
  }
  if constexpr (sizeof(T) == 2) {
    if (is(winograd_input_transform_kernel<T, Tile, true, 2, uint32_t>)) {
      return "winograd_input_transform_kernel<channels_last, channel pairs>";
    }
  }
  if (is(winograd_input_transform_kernel<T, Tile, true, 1, uint32_t>)) {
    return "winograd_input_transform_kernel<channels_last>";
  }
  if (is(winograd_input_transform_kernel<T, Tile, false, 1, uint32_t>)) return "winograd_input_transform_kernel<nchw>";
  return r.kernel;
}

template <typename T, int Tile>
int run(const Case& cs) {
  const bool tf32 = cs.dtype == "tf32";
  const Transforms tr = transforms(Tile);
  if (!transforms_reproduce_correlation(tr)) {
    std::printf("the harness's transform matrices do not reproduce a correlation\n");
    return 3;
  }
  constexpr int kAlpha = Tile + 2, kPositions = kAlpha * kAlpha;
  const int64_t N = cs.n, C = cs.c, H = cs.h, W = cs.w, K = cs.k;
  const int64_t P = H + 2 * cs.pad_h - 2, Q = W + 2 * cs.pad_w - 2;
  if (N < 1 || C < 1 || K < 1 || P < 1 || Q < 1 || cs.u_offset < 0 || cs.out_offset < 0 || cs.sms < 1) return 2;
  dlk_emu::g_host.sm_count = cs.sms;
  const bool cl = cs.channels_last;

  // ---- inputs, rounded to T (the references read the stored values)
  std::mt19937 rng(cs.seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const auto random_buffer = [&](size_t n, size_t offset) {
    Buffer<T> b(n + offset);
    for (size_t i = 0; i < n + offset; ++i) b[i] = store<T>(uniform(rng));
    return b;
  };
  const size_t x_elems = size_t(N * C * H * W), y_elems = size_t(N * K * P * Q), w_elems = size_t(K * C * 9);
  Buffer<T> x = random_buffer(x_elems, 0), weight = random_buffer(w_elems, 0), bias = random_buffer(size_t(K), 0);
  Buffer<T> residual = random_buffer(y_elems, size_t(cs.out_offset));
  const T* residual_data = residual.data() + cs.out_offset;
  const auto x_at = [&](int64_t n, int64_t c, int64_t ih, int64_t iw) {
    return ih < 0 || ih >= H || iw < 0 || iw >= W ? 0.0 : value(x[size_t(conv_offset(n, c, ih, iw, C, H, W, cl))]);
  };
  const auto w_at = [&](int64_t k, int64_t c, int r, int s) {
    return value(weight[size_t(conv_weight_offset(k, c, r, s, C, 3, 3, cl))]);
  };

  dlk_emu::Findings findings;
  dlk_emu::g_host.findings = &findings;
  dlk_emu::g_host.options.detect = cs.detect;
  dlk_emu::g_host.smem = reinterpret_cast<char*>(dlk::smem);
  dlk_emu::Tally tally;
  const double u_t = unit_roundoff<T>(), u_acc = std::is_same_v<T, double> ? 0x1p-53 : 0x1p-24;
  const double floor = underflow_floor<T>();
  // Records one output: err against tol, reported as the fraction of its tolerance (worst per tensor).
  std::map<std::string, double> worst;
  const auto check = [&](const char* what, size_t index, double got, double ref, double tol) {
    const double err = std::fabs(got - ref);
    double& w = worst[what];
    if (!(err / tol <= w)) w = err / tol;
    tally.check(err <= tol, err / tol, [&] {
      char text[200];
      std::snprintf(text, sizeof(text), "%s[%zu]: %.8g, expected %.8g (tolerance %.3g)", what, index, got, ref, tol);
      return std::string(text);
    });
  };

  // ---- U = G g G^T per (k, c): winograd_transform_weight_cuda (the weight transform kernel)
  const size_t u_elems = size_t(kPositions * K * C);
  Buffer<T> u_storage(u_elems + size_t(cs.u_offset));
  fill_nan(u_storage);
  T* u_data = u_storage.data() + cs.u_offset;
  WinogradWeightParams wp;
  wp.out_channels = K;
  wp.in_channels = C;
  wp.tile = Tile;
  wp.channels_last = cl;
  wp.weight = weight.data();
  wp.transformed = u_data;
  const Status weight_status = winograd_transform_weight_cuda(wp, dtype_of<T>(), nullptr);
  std::vector<double> u_abs(u_elems);  // |G| |g| |G^T|, for the bounds
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      double g[9];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s) g[r * 3 + s] = w_at(k, c, r, s);
      const std::vector<double> u = sandwich(tr.g, kAlpha, 3, g, false), ua = sandwich(tr.g, kAlpha, 3, g, true);
      for (int xi = 0; xi < kPositions; ++xi) {
        const size_t i = size_t((xi * K + k) * C + c);
        u_abs[i] = ua[size_t(xi)];
        const double ref = u[size_t(xi)];
        check("U", i, value(u_data[i]), ref, 1.01 * u_t * std::fabs(ref) + 16 * u_acc * ua[size_t(xi)] + floor);
      }
    }

  // ---- the forward: conv2d_winograd_cuda (pad_weight_rows_kernel, input transform, GEMM)
  Buffer<T> out_storage(y_elems + size_t(cs.out_offset));
  fill_nan(out_storage);
  T* out = out_storage.data() + cs.out_offset;
  WinogradFwdParams p;
  p.batch = N;
  p.in_channels = C;
  p.in_h = H;
  p.in_w = W;
  p.out_channels = K;
  p.out_h = P;
  p.out_w = Q;
  p.kernel_h = p.kernel_w = 3;
  p.pad_h = cs.pad_h;
  p.pad_w = cs.pad_w;
  p.channels_last = cl;
  p.allow_tf32 = tf32;
  p.tile = Tile;
  p.input = x.data();
  p.transformed_weight = u_data;
  p.output = out;
  if (cs.epilogue) {
    p.bias = bias.data();
    p.residual = residual_data;
    p.activation = true;
    p.negative_slope = 0.125;
  }
  const size_t workspace_bytes = conv2d_winograd_workspace_bytes(p, dtype_of<T>());
  Buffer<uint4> workspace(workspace_bytes / 16 + 1);
  fill_nan(workspace);
  const size_t weight_launches = dlk_emu::g_host.log.size();
  const Status status = weight_status != Status::kOk
                            ? weight_status
                            : conv2d_winograd_cuda(p, dtype_of<T>(), workspace.data(), workspace_bytes, nullptr);
  if (status == Status::kInvalidArgument || status == Status::kUnsupportedDType) {
    std::printf("the launcher refused the case (status %d)\n", int(status));
    return 2;
  }

  // ---- V = B^T d B per (tile, c) in the workspace; padding channels zero
  const int64_t tiles_h = winograd_tiles(P, Tile), tiles_w = winograd_tiles(Q, Tile), tiles = N * tiles_h * tiles_w;
  const int64_t cp = (C + 7) / 8 * 8;
  const T* v_data = reinterpret_cast<const T*>(workspace.data());
  std::vector<double> v_abs(size_t(kPositions * tiles * C));  // [xi][t][c]
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t n = t / (tiles_h * tiles_w), th = t / tiles_w % tiles_h, tw = t % tiles_w;
    for (int64_t c = 0; c < cp; ++c) {
      std::vector<double> v(size_t(kPositions), 0.0), va(size_t(kPositions), 0.0);
      if (c < C) {
        double d[kPositions];
        for (int i = 0; i < kAlpha; ++i)
          for (int j = 0; j < kAlpha; ++j) {
            d[i * kAlpha + j] = x_at(n, c, th * Tile - cs.pad_h + i, tw * Tile - cs.pad_w + j);
          }
        v = sandwich(tr.bt, kAlpha, kAlpha, d, false);
        va = sandwich(tr.bt, kAlpha, kAlpha, d, true);
      }
      for (int xi = 0; xi < kPositions; ++xi) {
        const size_t i = size_t((xi * tiles + t) * cp + c);
        if (c < C) v_abs[size_t((xi * tiles + t) * C + c)] = va[size_t(xi)];
        const double ref = v[size_t(xi)];
        const double tol = c < C ? 1.01 * u_t * std::fabs(ref) + 16 * u_acc * va[size_t(xi)] + floor : 1e-300;
        check("V", i, value(v_data[i]), ref, tol);
      }
    }
  }
  // The padded copy of U, where conv2d_winograd_cuda made one: U's rows, then zeros.
  const auto layout = workspace_layout(p, sizeof(T));
  if (layout.weight_bytes > 0) {
    const T* padded =
        reinterpret_cast<const T*>(reinterpret_cast<const unsigned char*>(workspace.data()) + layout.weight_offset);
    for (int64_t row = 0; row < kPositions * K; ++row)
      for (int64_t c = 0; c < cp; ++c) {
        const size_t i = size_t(row * cp + c);
        check("padded U", i, value(padded[i]), c < C ? value(u_data[size_t(row * C + c)]) : 0.0, 1e-300);
      }
  }

  // ---- the output, twice:
  //  "output":  against the Winograd algorithm in double on the U and V the kernels stored (TF32:
  //             rounded as the GEMM rounds them), i.e. the GEMM, output transform and epilogue alone:
  //             fp32 (fp64) sums and the output's rounding, 1.25 (C + 64) u_acc B^ + 1.01 u_T |ref|;
  //  "conv2d":  against direct convolution in double, within the precision contract's first-order
  //             bound 1.25 gamma B + 1.01 u_T |ref| (see the top of the file).
  double coef[Tile * Tile][kPositions];  // (A^T e_xi A)[o]
  for (int o = 0; o < Tile * Tile; ++o)
    for (int xi = 0; xi < kPositions; ++xi)
      coef[o][xi] = tr.at[size_t(o / Tile * kAlpha + xi / kAlpha)] * tr.at[size_t(o % Tile * kAlpha + xi % kAlpha)];
  const auto operand = [&](T stored) {  // a GEMM operand as the GEMM multiplies it
    if constexpr (std::is_same_v<T, float>) {
      if (tf32) {
        uint32_t bits;
        std::memcpy(&bits, &stored, 4);
        if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;  // cvt.rna.tf32.f32
        float rounded;
        std::memcpy(&rounded, &bits, 4);
        return double(rounded);
      }
    }
    return value(stored);
  };
  const double gamma = 2 * (u_t + (tf32 ? 0x1p-11 : 0.0)) + double(C + 64) * u_acc;
  double m[kPositions], m_abs[kPositions], term_sum[kPositions];
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t n = t / (tiles_h * tiles_w), th = t / tiles_w % tiles_h, tw = t % tiles_w;
    for (int64_t k = 0; k < K; ++k) {
      for (int xi = 0; xi < kPositions; ++xi) {
        m[xi] = m_abs[xi] = term_sum[xi] = 0;
        for (int64_t c = 0; c < C; ++c) {
          const double product = operand(v_data[size_t((xi * tiles + t) * cp + c)]) *
                                 operand(u_data[size_t((xi * K + k) * C + c)]);
          m[xi] += product;
          m_abs[xi] += std::fabs(product);
          term_sum[xi] += v_abs[size_t((xi * tiles + t) * C + c)] * u_abs[size_t((xi * K + k) * C + c)];
        }
      }
      for (int o = 0; o < Tile * Tile; ++o) {
        const int64_t oh = th * Tile + o / Tile, ow = tw * Tile + o % Tile;
        if (oh >= P || ow >= Q) continue;
        double winograd = 0, winograd_bound = 0, bound = 0, direct = 0;
        for (int xi = 0; xi < kPositions; ++xi) {
          winograd += coef[o][xi] * m[xi];
          winograd_bound += std::fabs(coef[o][xi]) * m_abs[xi];
          bound += std::fabs(coef[o][xi]) * term_sum[xi];
        }
        for (int64_t c = 0; c < C; ++c)
          for (int r = 0; r < 3; ++r)
            for (int s = 0; s < 3; ++s) direct += x_at(n, c, oh - cs.pad_h + r, ow - cs.pad_w + s) * w_at(k, c, r, s);
        const size_t i = size_t(conv_offset(n, k, oh, ow, K, P, Q, cl));
        double extra = 0;
        if (cs.epilogue) {  // + bias + residual, LeakyReLU(0.125), added and applied in fp32 (fp64)
          const double b = value(bias[size_t(k)]), res = value(residual_data[i]);
          winograd += b + res;
          direct += b + res;
          extra = 4 * u_acc * (std::fabs(b) + std::fabs(res) + std::fabs(direct));
          if (winograd < 0) winograd *= 0.125;
          if (direct < 0) direct *= 0.125;
        }
        const double got = value(out[i]);
        check("output", i, got, winograd,
              1.25 * double(C + 64) * u_acc * winograd_bound + 1.01 * u_t * std::fabs(winograd) + extra + floor);
        check("conv2d", i, got, direct, 1.25 * gamma * bound + 1.01 * u_t * std::fabs(direct) + extra + floor);
      }
    }
  }

  // ---- what ran
  std::string launches;
  for (size_t l = 0; l < dlk_emu::g_host.log.size(); ++l) {
    const dlk_emu::LaunchRecord& r = dlk_emu::g_host.log[l];
    char text[200];
    const char* separator = l == 0 ? "" : l == weight_launches ? "; " : ", ";
    std::snprintf(text, sizeof(text), "%s%s (%u blocks x %u threads, %zu B shared%s)", separator,
                  kernel_name<T, Tile>(r).c_str(), r.grid.x * r.grid.y * r.grid.z, r.block.x, r.smem,
                  r.ran ? "" : ", not run");
    launches += text;
  }
  std::printf("  launches: %s\n", launches.c_str());
  std::printf("  max |err| / tolerance:");
  for (const auto& [what, w] : worst) std::printf(" %s %.3g", what.c_str(), w);
  std::printf("\n");
  if (status != Status::kOk) std::printf("  the launcher returned status %d\n", int(status));
  std::printf("winograd F(%dx%d,3x3) %s %s n=%d c=%d h=%d w=%d k=%d pad=%d,%d epilogue=%d sms=%d: %zu of %zu outputs "
              "wrong (max |err| %.3g of its tolerance), %llu blocks, %d findings\n",
              Tile, Tile, cs.dtype.c_str(), cl ? "nhwc" : "nchw", cs.n, cs.c, cs.h, cs.w, cs.k, cs.pad_h, cs.pad_w,
              int(cs.epilogue), cs.sms, tally.wrong, tally.checked, worst["output"],
              static_cast<unsigned long long>(dlk_emu::g_counters.blocks), findings.total());
  return dlk_emu::verdict(tally, findings, status == Status::kOk);
}

template <typename T>
int run_tile(const Case& cs) {
  if (cs.tile == 2) return run<T, 2>(cs);
  if (cs.tile == 4) return run<T, 4>(cs);
  return 2;
}

int dispatch(const Case& cs) {
  if (cs.dtype == "f16") return run_tile<__half>(cs);
#ifndef DLK_EMULATE_F16_ONLY
  if (cs.dtype == "bf16") return run_tile<__nv_bfloat16>(cs);
  if (cs.dtype == "f32" || cs.dtype == "tf32") return run_tile<float>(cs);
  if (cs.dtype == "f64") return run_tile<double>(cs);
#endif
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Case cs;
  if (!parse(argc, argv, cs)) {
    std::fprintf(stderr, "usage: %s dtype=f16|bf16|tf32|f32|f64 tile=2|4 layout=nhwc|nchw n= c= h= w= k= pad=h,w "
                         "epilogue=0|1 sms= u_offset= out_offset= detect=0|1 seed=\n", argv[0]);
    return 2;
  }
  const int status = dispatch(cs);
  if (status == 2) std::printf("bad case\n");
  return status;
}
