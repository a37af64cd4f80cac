// The depthwise convolution kernels of csrc/cuda/conv2d.cu (depthwise_kernel<T, kCL, kVec, kBackward>
// over depthwise_item: the forward with its fused epilogue and the input gradient;
// depthwise_wgrad_kernel<T, kCL, kVec> and, when the weight gradient is split, reduce_partials_kernel)
// run on the CPU by the warp emulator (warp_emu.h) through the file's own entry points
// conv2d_forward_cuda, conv2d_backward_input_cuda and conv2d_backward_weight_cuda (with
// conv2d_backward_weight_workspace_bytes), and compared with plain loops in double. No GPU, no CUDA
// runtime.
//
// The .cu is compiled whole by g++ with three host-side adaptations, and its kernels unchanged:
//  - its `<<<...>>>` launch statements are rewritten into ::dlk_emu::cuda_launch(...)(kernel, args...)
//    (warp_emu.h): the build includes "conv2d.host.cu", the rewritten copy that
//    tests/test_cuda_emulator_conv_families.py (rewrite_launches) writes into its build directory.
//    Each launch runs its grid on the emulator at once with the launcher's grid and block; the CUDA
//    runtime calls are answered by warp_emu.h's DLK_EMU_CUDA_RUNTIME stubs (`sms=` SMs, which sizes
//    the grid-stride grids and the weight gradient's split);
//  - the implicit-GEMM launchers it calls for non-depthwise convolutions (conv2d_kernels.cuh, declared
//    for nvcc only) are stubs here that fail the run: the GEMM kernel is conv2d_emulate.cpp's;
//  - `__shared__` is `static` while the .cu is compiled: depthwise_wgrad_kernel's block-wide
//    `__shared__ Acc sums[256][kVec]` is then one array that every fiber of the (one running) block
//    shares, as on the GPU (a plain local would give each thread its own). The race detector does not
//    see it (it watches the dynamic shared memory only): the tree reduction over it is checked by the
//    results alone.
//
// Reference: forward y = act(sum_taps x w + bias + residual), the input gradient
// dx[n, c, ih, iw] = sum over (oh, ow, r, s) with oh * stride - pad + r * dil = ih (and likewise w) of
// dy[n, c, oh, ow] w[c, r, s], the weight gradient dw[c, r, s] = sum over (n, oh, ow) of
// dy[n, c, oh, ow] x[n, c, ih, iw], all in double on the dtype-rounded inputs. Tolerance per element:
// u_T |ref| (the output's rounding) + (terms + 8) u_acc (sum of |terms|), terms being the longest
// sequential fp32 (fp64) sum behind the element (R*S taps; for the weight gradient a thread's pixels
// plus the 8-level tree and the split partials).
//
// One case per run, from `key=value` arguments (see Case): dtype f16|bf16|f32|f64, layout nhwc|nchw,
// n c h w r s, stride=h,w pad=h,w dil=h,w, epilogue (bias, residual, LeakyReLU 0.125 on the forward),
// sms, offset (every tensor starts one element past a 16-byte boundary: no channel vectors), detect,
// seed. Prints the launches and one summary line; exit status as harness.h's verdict (2 on a case the
// launcher would not run). -DDLK_EMULATE_F16_ONLY (planted-fault builds) compiles fp16 alone, the
// launchers' dtype dispatch included.
#define DLK_EMU_CUDA_RUNTIME  // linked with nvcc -cudart=none: warp_emu.h answers the runtime calls
#include "harness.h"
#include "warp_emu.h"

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"
#include "conv2d_kernels.cuh"

namespace dlk {
namespace conv {
// conv2d_kernels.cuh declares its launchers for nvcc only; conv2d.cu calls them for every convolution
// that is not depthwise, which this program does not run.
template <typename T, class Args>
Status gemm_path_not_emulated(const char* which) {
  dlk_emu::g_host.findings->add("execution", std::string(which) + ": the implicit-GEMM path (conv2d_emulate.cpp's)");
  return Status::kLaunchFailed;
}
template <typename T>
Status launch_forward_gemm(const ForwardArgs&, const GemmChoice&, dim3, cudaStream_t) {
  return gemm_path_not_emulated<T, ForwardArgs>("launch_forward_gemm");
}
template <typename T>
Status launch_dgrad_gemm(const DgradArgs&, const GemmChoice&, dim3, cudaStream_t) {
  return gemm_path_not_emulated<T, DgradArgs>("launch_dgrad_gemm");
}
template <typename T>
Status launch_wgrad_gemm(const WgradArgs&, const GemmChoice&, dim3, cudaStream_t) {
  return gemm_path_not_emulated<T, WgradArgs>("launch_wgrad_gemm");
}
}  // namespace conv
}  // namespace dlk

#pragma push_macro("__shared__")
#undef __shared__
#define __shared__ static  // one array per (one running) block: see the top of the file
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
#include "conv2d.host.cu"  // csrc/cuda/conv2d.cu, launches rewritten (see the top)
#undef dispatch_dtype
#pragma pop_macro("__shared__")
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
  bool channels_last = true, epilogue = false, detect = true, offset = false;
  int n = 1, c = 8, h = 5, w = 5, r = 3, s = 3;
  int stride_h = 1, stride_w = 1, pad_h = 1, pad_w = 1, dil_h = 1, dil_w = 1;
  int sms = 132;
  uint32_t seed = 1;
};

bool pair(const std::string& v, int& a, int& b) { return std::sscanf(v.c_str(), "%d,%d", &a, &b) == 2; }

bool parse(int argc, char** argv, Case& c) {
  return dlk_emu::parse_arguments(argc, argv, [&](const std::string& key, const std::string& v) {
    const int x = dlk_emu::to_int(v);
    if (key == "dtype") c.dtype = v;
    else if (key == "layout") { if (v != "nhwc" && v != "nchw") return false; c.channels_last = v == "nhwc"; }
    else if (key == "n") c.n = x;
    else if (key == "c") c.c = x;
    else if (key == "h") c.h = x;
    else if (key == "w") c.w = x;
    else if (key == "r") c.r = x;
    else if (key == "s") c.s = x;
    else if (key == "stride") { if (!pair(v, c.stride_h, c.stride_w)) return false; }
    else if (key == "pad") { if (!pair(v, c.pad_h, c.pad_w)) return false; }
    else if (key == "dil") { if (!pair(v, c.dil_h, c.dil_w)) return false; }
    else if (key == "epilogue") c.epilogue = x != 0;
    else if (key == "detect") c.detect = x != 0;
    else if (key == "offset") c.offset = x != 0;
    else if (key == "sms") c.sms = x;
    else if (key == "seed") c.seed = uint32_t(x);
    else return false;
    return true;
  });
}

using dlk_emu::dtype_of;
using dlk_emu::fill_nan;
using dlk_emu::store;
using dlk_emu::underflow_floor;
using dlk_emu::unit_roundoff;
using dlk_emu::value;

// Names the instantiation a launch ran.
template <typename T>
std::string kernel_name(const dlk_emu::LaunchRecord& r) {
  constexpr int kVec = conv::kChunkElems<T>;
  const auto is = [&](auto fn) { return r.function == reinterpret_cast<const void*>(fn); };
  if (is(conv::depthwise_kernel<T, true, kVec, false>)) return "depthwise_kernel<fwd, channels_last, vector>";
  if (is(conv::depthwise_kernel<T, true, 1, false>)) return "depthwise_kernel<fwd, channels_last>";
  if (is(conv::depthwise_kernel<T, false, 1, false>)) return "depthwise_kernel<fwd, nchw>";
  if (is(conv::depthwise_kernel<T, true, kVec, true>)) return "depthwise_kernel<dgrad, channels_last, vector>";
  if (is(conv::depthwise_kernel<T, true, 1, true>)) return "depthwise_kernel<dgrad, channels_last>";
  if (is(conv::depthwise_kernel<T, false, 1, true>)) return "depthwise_kernel<dgrad, nchw>";
  if (is(conv::depthwise_wgrad_kernel<T, true, kVec>)) return "depthwise_wgrad_kernel<channels_last, vector>";
  if (is(conv::depthwise_wgrad_kernel<T, true, 1>)) return "depthwise_wgrad_kernel<channels_last>";
  if (is(conv::depthwise_wgrad_kernel<T, false, 1>)) return "depthwise_wgrad_kernel<nchw>";
  return r.kernel;
}

template <typename T>
int run(const Case& cs) {
  const int64_t N = cs.n, C = cs.c, H = cs.h, W = cs.w;
  const int R = cs.r, S = cs.s;
  if (N < 1 || C < 1 || H < 1 || W < 1 || R < 1 || S < 1 || cs.stride_h < 1 || cs.stride_w < 1 || cs.dil_h < 1 ||
      cs.dil_w < 1 || cs.sms < 1) {
    return 2;
  }
  const int64_t P = conv_out_size(H, R, cs.stride_h, cs.pad_h, cs.pad_h, cs.dil_h);
  const int64_t Q = conv_out_size(W, S, cs.stride_w, cs.pad_w, cs.pad_w, cs.dil_w);
  if (P < 1 || Q < 1) return 2;
  const bool cl = cs.channels_last;
  dlk_emu::g_host.sm_count = cs.sms;
  dlk_emu::Findings findings;
  dlk_emu::g_host.findings = &findings;
  dlk_emu::g_host.options.detect = cs.detect;
  alignas(16) static char no_dynamic_smem[16];
  dlk_emu::g_host.smem = no_dynamic_smem;  // the depthwise kernels take none

  // ---- inputs, rounded to T, `offset` elements past a 16-byte boundary
  const size_t off = cs.offset ? 1 : 0;
  std::mt19937 rng(cs.seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const auto random_buffer = [&](size_t n) {
    Buffer<T> b(n + off);
    for (size_t i = 0; i < n + off; ++i) b[i] = store<T>(uniform(rng));
    return b;
  };
  const size_t x_elems = size_t(N * C * H * W), y_elems = size_t(N * C * P * Q), w_elems = size_t(C * R * S);
  Buffer<T> x = random_buffer(x_elems), weight = random_buffer(w_elems), bias = random_buffer(size_t(C));
  Buffer<T> residual = random_buffer(y_elems), grad_output = random_buffer(y_elems);
  Buffer<T> y(y_elems + off), dx(x_elems + off), dw(w_elems + off);
  fill_nan(y), fill_nan(dx), fill_nan(dw);
  const auto xi = [&](int64_t n, int64_t c, int64_t ih, int64_t iw) {
    return size_t(conv_offset(n, c, ih, iw, C, H, W, cl));
  };
  const auto yi = [&](int64_t n, int64_t c, int64_t oh, int64_t ow) {
    return size_t(conv_offset(n, c, oh, ow, C, P, Q, cl));
  };
  const T* x_data = x.data() + off;
  const T* w_data = weight.data() + off;
  const T* b_data = bias.data() + off;
  const T* res_data = residual.data() + off;
  const T* dy_data = grad_output.data() + off;

  Conv2dParams base;
  base.batch = N;
  base.in_channels = base.out_channels = C;
  base.in_h = H;
  base.in_w = W;
  base.out_h = P;
  base.out_w = Q;
  base.kernel_h = R;
  base.kernel_w = S;
  base.stride_h = cs.stride_h;
  base.stride_w = cs.stride_w;
  base.pad_h = cs.pad_h;
  base.pad_w = cs.pad_w;
  base.dilation_h = cs.dil_h;
  base.dilation_w = cs.dil_w;
  base.groups = int(C);
  base.channels_last = cl;

  Conv2dFwdParams fp;
  static_cast<Conv2dParams&>(fp) = base;
  fp.input = x_data;
  fp.weight = w_data;
  fp.output = y.data() + off;
  if (cs.epilogue) {
    fp.bias = b_data;
    fp.residual = res_data;
    fp.activation = true;
    fp.negative_slope = 0.125;
  }
  Conv2dDgradParams dp;
  static_cast<Conv2dParams&>(dp) = base;
  dp.grad_output = dy_data;
  dp.weight = w_data;
  dp.grad_input = dx.data() + off;
  Conv2dWgradParams wp;
  static_cast<Conv2dParams&>(wp) = base;
  wp.grad_output = dy_data;
  wp.input = x_data;
  wp.grad_weight = dw.data() + off;

  std::vector<size_t> op_starts;
  op_starts.push_back(dlk_emu::g_host.log.size());
  const Status fwd = conv2d_forward_cuda(fp, dtype_of<T>(), nullptr);
  op_starts.push_back(dlk_emu::g_host.log.size());
  const Status dgrad = conv2d_backward_input_cuda(dp, dtype_of<T>(), nullptr);
  op_starts.push_back(dlk_emu::g_host.log.size());
  const size_t workspace_bytes = conv2d_backward_weight_workspace_bytes(wp, dtype_of<T>());
  Buffer<uint4> workspace(workspace_bytes / 16 + 1);
  fill_nan(workspace);
  const Status wgrad = conv2d_backward_weight_cuda(wp, dtype_of<T>(), workspace.data(), workspace_bytes, nullptr);
  for (const Status st : {fwd, dgrad, wgrad}) {
    if (st == Status::kInvalidArgument || st == Status::kUnsupportedDType) {
      std::printf("the launcher refused the case (status %d)\n", int(st));
      return 2;
    }
  }

  // ---- references in double, with the sum of |terms| behind each element
  const double u_t = unit_roundoff<T>(), u_acc = std::is_same_v<T, double> ? 0x1p-53 : 0x1p-24;
  std::vector<double> y_ref(y_elems), y_abs(y_elems), dx_ref(x_elems, 0.0), dx_abs(x_elems, 0.0);
  std::vector<double> dw_ref(w_elems, 0.0), dw_abs(w_elems, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oh = 0; oh < P; ++oh)
        for (int64_t ow = 0; ow < Q; ++ow) {
          const size_t o = yi(n, c, oh, ow);
          double sum = 0, abs_sum = 0;
          for (int r = 0; r < R; ++r)
            for (int s = 0; s < S; ++s) {
              const int64_t ih = oh * cs.stride_h - cs.pad_h + r * cs.dil_h;
              const int64_t iw = ow * cs.stride_w - cs.pad_w + s * cs.dil_w;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              const size_t wi = size_t(c * R * S + r * S + s), i = xi(n, c, ih, iw);
              const double fwd_term = value(x_data[i]) * value(w_data[wi]);
              sum += fwd_term;
              abs_sum += std::fabs(fwd_term);
              const double dgrad_term = value(dy_data[o]) * value(w_data[wi]);
              dx_ref[i] += dgrad_term;
              dx_abs[i] += std::fabs(dgrad_term);
              const double wgrad_term = value(dy_data[o]) * value(x_data[i]);
              dw_ref[wi] += wgrad_term;
              dw_abs[wi] += std::fabs(wgrad_term);
            }
          if (cs.epilogue) {
            sum += value(b_data[c]) + value(res_data[o]);
            abs_sum += std::fabs(value(b_data[c])) + std::fabs(value(res_data[o]));
            if (sum < 0) sum *= 0.125;
          }
          y_ref[o] = sum;
          y_abs[o] = abs_sum;
        }

  dlk_emu::Tally tally;
  std::map<std::string, double> worst;  // max |err| / tolerance per tensor
  const auto compare = [&](const char* what, const T* got, const std::vector<double>& ref,
                           const std::vector<double>& abs, double terms) {
    for (size_t i = 0; i < ref.size(); ++i) {
      const double g = value(got[i]), err = std::fabs(g - ref[i]);
      const double tol = u_t * std::fabs(ref[i]) + (terms + 8) * u_acc * abs[i] + underflow_floor<T>();
      double& w = worst[what];
      if (!(err / tol <= w)) w = err / tol;
      tally.check(err <= tol, err / tol, [&] {
        char text[200];
        std::snprintf(text, sizeof(text), "%s[%zu]: %.8g, expected %.8g (tolerance %.3g)", what, i, g, ref[i], tol);
        return std::string(text);
      });
    }
  };
  // A weight-gradient element is a thread's sequential sum over its share of a split's pixels, a
  // tree of 8 levels, and (split) the sum of the slots.
  const int64_t slots = int64_t(std::max<size_t>(1, workspace_bytes / (w_elems * sizeof(AccumulateType<T>))));
  const double wgrad_terms = double((N * P * Q + 255) / 256 + 8 + slots);
  compare("y", static_cast<const T*>(fp.output), y_ref, y_abs, R * S + 3);
  compare("dx", static_cast<const T*>(dp.grad_input), dx_ref, dx_abs, R * S);
  compare("dw", static_cast<const T*>(wp.grad_weight), dw_ref, dw_abs, wgrad_terms);

  // ---- what ran
  const char* ops[] = {"fwd", "dgrad", "wgrad"};
  for (int op = 0; op < 3; ++op) {
    const size_t end = op < 2 ? op_starts[size_t(op + 1)] : dlk_emu::g_host.log.size();
    std::printf("  %s:", ops[op]);
    for (size_t l = op_starts[size_t(op)]; l < end; ++l) {
      const dlk_emu::LaunchRecord& r = dlk_emu::g_host.log[l];
      std::printf("%s %s (%u x %u x %u blocks%s)", l == op_starts[size_t(op)] ? "" : ",", kernel_name<T>(r).c_str(),
                  r.grid.x, r.grid.y, r.grid.z, r.ran ? "" : ", not run");
    }
    std::printf("\n");
  }
  std::printf("  max |err| / tolerance:");
  for (const auto& [what, w] : worst) std::printf(" %s %.3g", what.c_str(), w);
  std::printf("\n");
  for (const auto& [name, st] : {std::pair{"forward", fwd}, {"input gradient", dgrad}, {"weight gradient", wgrad}}) {
    if (st != Status::kOk) std::printf("  the %s launcher returned status %d\n", name, int(st));
  }
  std::printf("depthwise %s %s n=%d c=%d h=%d w=%d r=%d s=%d stride=%d,%d pad=%d,%d dil=%d,%d epilogue=%d offset=%d "
              "sms=%d: %zu of %zu outputs wrong (max |err| %.3g of its tolerance), %llu blocks, %d findings\n",
              cs.dtype.c_str(), cl ? "nhwc" : "nchw", cs.n, cs.c, cs.h, cs.w, cs.r, cs.s, cs.stride_h, cs.stride_w,
              cs.pad_h, cs.pad_w, cs.dil_h, cs.dil_w, int(cs.epilogue), int(cs.offset), cs.sms, tally.wrong,
              tally.checked, tally.worst, static_cast<unsigned long long>(dlk_emu::g_counters.blocks),
              findings.total());
  return dlk_emu::verdict(tally, findings, fwd == Status::kOk && dgrad == Status::kOk && wgrad == Status::kOk);
}

int dispatch(const Case& cs) {
  if (cs.dtype == "f16") return run<__half>(cs);
#ifndef DLK_EMULATE_F16_ONLY
  if (cs.dtype == "bf16") return run<__nv_bfloat16>(cs);
  if (cs.dtype == "f32") return run<float>(cs);
  if (cs.dtype == "f64") return run<double>(cs);
#endif
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Case cs;
  if (!parse(argc, argv, cs)) {
    std::fprintf(stderr, "usage: %s dtype=f16|bf16|f32|f64 layout=nhwc|nchw n= c= h= w= r= s= stride=h,w pad=h,w "
                         "dil=h,w epilogue=0|1 offset=0|1 sms= detect=0|1 seed=\n", argv[0]);
    return 2;
  }
  const int status = dispatch(cs);
  if (status == 2) std::printf("bad case\n");
  return status;
}
