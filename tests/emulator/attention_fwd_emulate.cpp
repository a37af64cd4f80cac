// The flash-attention forward kernels run block by block on the CPU by the warp emulator (warp_emu.h,
// tensor_core_emu.h, wgmma_emu.h), compared with a plain-loop double-precision attention (out and
// lse), with the shared-memory race and cp.async pipeline detector on. The kernel is the one its
// launcher picks: for fp16 / bf16 the mma.sync kernel (csrc/cuda/attention_fwd_kernel.cuh:
// attention_forward_kernel<T, D>) or, with sm90=1, the Hopper wgmma kernel
// (attention_fwd_sm90_kernel.cuh: attention_forward_sm90_kernel<T, D>; head dims 64, 128, 256, no bias,
// no dropout, aligned rows: what its dispatcher gives it); for fp32 the exact SIMT kernel
// (attention_forward_float_kernel<D>: plain shared loads, which the detector does not see). The kernel
// source is compiled unchanged, as in conv2d_emulate.cpp.
//
// One case per run, from `key=value` arguments (attention_case.h): dtype f16|bf16|f32,
// d 32|64|96|128|256, b, hq, hk, nq, nk, causal, seed (of the inputs), dropout (p) and philox (the
// dropout seed, which the kernel reads through AttentionParams::seed as it reads the op's device
// tensor), bias (an additive bias broadcast over the batch, dense only), lens_q / lens_k (varlen:
// packed sequences of these lengths, with cu_seqlens), max_q / max_k (varlen: a stated max_seqlen
// below the longest sequence, which must come out NaN), aligned=0 (the element-copy path) and sm90.
// Prints one summary line and the detector's findings; exit status as harness.h's verdict (2 on a bad
// case).
#include "attention_case.h"
#include "harness.h"
#include "warp_emu.h"

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"
#include "wgmma_emu.h"
#include "attention_fwd_kernel.cuh"
#include "attention_fwd_sm90_kernel.cuh"
#undef __CUDA_ARCH__

#include <algorithm>
#include <random>

namespace dlk {
namespace attn {
// The kernels' `extern __shared__` buffers: one block runs at a time.
alignas(128) char smem[dlk_emu::kMaxSharedBytes];
alignas(1024) char smem_raw[dlk_emu::kMaxSharedBytes];  // the Hopper kernel's
}  // namespace attn
}  // namespace dlk

namespace {

using namespace dlk;
using namespace dlk::attn;

using Case = dlk_emu::AttentionCase;

using dlk_emu::Buffer;

// The kernel a case runs, as its launcher picks it: the mma.sync kernel (fp16 / bf16), the exact
// SIMT one (fp32), or the Hopper one (kSm90).
template <typename T, int kHeadDim, bool kSm90>
struct Kernel {
  using Config = ForwardConfig<kHeadDim>;
  static constexpr const char* kName = "attention_forward_kernel";
  static constexpr int kSmemBytes = Config::kSmemBytes;
  static char* shared() { return smem; }
  static void run(const ForwardArgs& a) { attention_forward_kernel<T, kHeadDim>(a); }
};
template <int kHeadDim>
struct Kernel<float, kHeadDim, false> {
  using Config = ForwardFloatConfig;
  static constexpr const char* kName = "attention_forward_float_kernel";
  static constexpr int kSmemBytes = Config::smem_bytes<kHeadDim>();
  static char* shared() { return smem; }
  static void run(const ForwardArgs& a) { attention_forward_float_kernel<kHeadDim>(a); }
};
template <typename T, int kHeadDim>
struct Kernel<T, kHeadDim, true> {
  using Config = Sm90ForwardConfig<kHeadDim>;
  static constexpr const char* kName = "attention_forward_sm90_kernel";
  static constexpr int kSmemBytes = Config::kSmemBytes;
  static char* shared() { return smem_raw; }
  static void run(const ForwardArgs& a) { attention_forward_sm90_kernel<T, kHeadDim>(a); }
};

template <typename T, int kHeadDim, bool kSm90>
int run(const Case& cs) {
  using K = Kernel<T, kHeadDim, kSm90>;
  using Config = typename K::Config;
  const int D = kHeadDim;
  // Dense: (B, N, H, D) as torch's (batch, seq, heads, dim) view, rows strided by H * D. Varlen: packed
  // (total, H, D) with cu_seqlens (attention_sequences).
  const dlk_emu::AttentionSequences seqs = dlk_emu::attention_sequences(cs);
  const bool varlen = seqs.varlen;
  const int batch = seqs.batch, nq = seqs.nq, nk = seqs.nk;
  const std::vector<int>&cu_q = seqs.cu_q, &cu_k = seqs.cu_k;
  const int64_t total_q = cu_q.back(), total_k = cu_k.back();
  const size_t q_elems = size_t(total_q) * cs.hq * D, k_elems = size_t(total_k) * cs.hk * D;
  std::mt19937 rng(cs.seed);
  std::uniform_real_distribution<float> uniform(-2.f, 2.f);
  const auto fill = [&](Buffer<T>& buf, std::vector<double>& ref) {
    ref.resize(buf.size);
    for (size_t i = 0; i < buf.size; ++i) {
      buf[i] = from_accumulate<T>(uniform(rng));
      ref[i] = to_accumulate(buf[i]);
    }
  };
  Buffer<T> q(q_elems), k(k_elems), v(k_elems), out(q_elems);
  std::vector<double> qr, kr, vr, biasr;
  fill(q, qr);
  fill(k, kr);
  fill(v, vr);
  // Bias (dense only): (Hq, Nq, Nk) broadcast over the batch (batch stride 0), row 0 of head 0 all -inf
  // (a row that sees no key: out 0, lse -inf).
  Buffer<T> bias(cs.bias ? size_t(cs.hq) * nq * nk : 0);
  if (cs.bias) {
    fill(bias, biasr);
    for (int j = 0; j < nk; ++j) {
      bias[j] = from_accumulate<T>(-INFINITY);
      biasr[j] = -INFINITY;
    }
  }
  const int64_t lse_elems = int64_t(cs.hq) * total_q;  // (B, Hq, Nq) dense, (Hq, total_q) varlen: same count
  std::vector<float> lse(size_t(lse_elems), 12345.0f);
  for (size_t i = 0; i < q_elems; ++i) out[i] = from_accumulate<T>(777.0f);

  ForwardArgs a;
  AttentionFwdParams& p = a.params;
  p.batch = batch;
  p.heads_q = cs.hq;
  p.heads_kv = cs.hk;
  p.head_dim = D;
  p.seqlen_q = nq;
  p.seqlen_k = nk;
  p.total_q = total_q;
  if (varlen) {
    p.cu_seqlens_q = cu_q.data();
    p.cu_seqlens_k = cu_k.data();
  }
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.q_row_stride = int64_t(cs.hq) * D;
  p.q_head_stride = D;
  p.q_batch_stride = varlen ? 0 : int64_t(nq) * cs.hq * D;
  p.k_row_stride = p.v_row_stride = int64_t(cs.hk) * D;
  p.k_head_stride = p.v_head_stride = D;
  p.k_batch_stride = p.v_batch_stride = varlen ? 0 : int64_t(nk) * cs.hk * D;
  if (cs.bias) {
    p.bias = bias.data();
    p.bias_batch_stride = 0;
    p.bias_head_stride = int64_t(nq) * nk;
    p.bias_row_stride = nk;
  }
  p.out = out.data();
  p.out_row_stride = p.q_row_stride;
  p.out_head_stride = p.q_head_stride;
  p.out_batch_stride = p.q_batch_stride;
  p.lse = lse.data();
  p.lse_batch_stride = varlen ? 0 : int64_t(cs.hq) * nq;
  p.lse_head_stride = varlen ? total_q : nq;
  p.scale_f64 = 1.0 / std::sqrt(double(D));
  p.scale = float(p.scale_f64);
  p.causal = cs.causal;
  p.causal_bottom_right = !cs.top_left;
  const int64_t philox_seed = cs.philox;  // in "device" memory: the kernel loads it
  p.dropout_p = cs.dropout;
  p.seed = cs.dropout > 0 ? &philox_seed : nullptr;
  a.dropout = cs.dropout > 0;
  a.dropout_threshold = dropout_threshold(cs.dropout);
  a.dropout_scale = a.dropout ? float(1.0 / (1.0 - cs.dropout)) : 1.0f;
  a.scale_log2 = p.scale * kLog2e;
  a.aligned = cs.aligned;  // 0: the element-copy loads and stores of unaligned tensors (the buffers are aligned anyway)
  a.group_size = cs.hq / cs.hk;

  dlk_emu::Findings findings;
  dlk_emu::Options options;
  options.detect = cs.detect;
  const dim3 grid(unsigned((nq + Config::kBlockM - 1) / Config::kBlockM), unsigned(cs.hq), unsigned(batch));
  if (kSm90 && !attention_forward_sm90_supported(a)) {
    std::fprintf(stderr, "bad case: the Hopper kernel does not take it\n");
    return 2;
  }
  const std::function<void()> body = [&] { K::run(a); };
  const bool ran = dlk_emu::launch(grid, dim3(Config::kThreads), K::shared(), K::kSmemBytes, body, options, findings);

  // Relative to max |v|: fp32 is exact FMA math, fp16 / bf16 round P and the inputs.
  const double tol_out = (std::is_same_v<T, float> ? 2e-5 : std::is_same_v<T, __half> ? 4e-3 : 2e-2) / (1.0 - cs.dropout);
  const uint32_t threshold = dropout_threshold(cs.dropout);
  const auto keep_factor = [&](int h, int64_t q_token, int j) {
    if (cs.dropout <= 0) return 1.0;
    const uint64_t counter = dropout_counter(h, p.total_q, q_token, nk, j);
    return dropout_keep(uint64_t(cs.philox), counter, threshold) ? 1.0 / (1.0 - cs.dropout) : 0.0;
  };
  dlk_emu::Tally tally;
  for (int bb = 0; bb < batch; ++bb)
    for (int h = 0; h < cs.hq; ++h) {
      const int hk = h / (cs.hq / cs.hk);
      const int len_q = cu_q[bb + 1] - cu_q[bb], len_k = cu_k[bb + 1] - cu_k[bb];
      // A sequence longer than the stated max_seqlen (varlen): every out and lse element NaN.
      const bool too_long = seqs.too_long(bb);
      for (int i = 0; too_long && i < len_q; ++i) {
        const int64_t q_token = cu_q[bb] + i;
        const float got_lse = lse[size_t(h) * total_q + q_token];
        for (int e = -1; e < D; ++e) {  // -1: lse
          const double got = e < 0 ? got_lse : to_accumulate(out[(size_t(q_token) * cs.hq + h) * D + e]);
          tally.check(got != got, 0.0, [&] {
            return "too-long sequence b=" + std::to_string(bb) + " h=" + std::to_string(h) + " i=" + std::to_string(i) +
                   (e < 0 ? " lse: " : " e=" + std::to_string(e) + ": ") + std::to_string(got) + ", expected NaN";
          });
        }
      }
      for (int i = 0; !too_long && i < len_q; ++i) {
        const int64_t q_token = cu_q[bb] + i;  // packed row; dense: b * Nq + i, the same number
        const auto q_at = [&](int e) { return qr[(size_t(q_token) * cs.hq + h) * D + e]; };
        const auto kv_index = [&](int j, int e) { return (size_t(cu_k[bb] + j) * cs.hk + hk) * D + e; };
        const int key_end = dlk_emu::reference_key_end(cs, i, len_q, len_k);
        std::vector<double> s(size_t(std::max(key_end, 0)));
        double m = -INFINITY;
        for (int j = 0; j < key_end; ++j) {
          double dot = 0;
          for (int e = 0; e < D; ++e) dot += q_at(e) * kr[kv_index(j, e)];
          s[j] = dot * p.scale + (cs.bias ? biasr[(size_t(h) * nq + i) * nk + j] : 0.0);
          m = std::max(m, s[j]);
        }
        double l = 0;
        for (int j = 0; j < key_end; ++j) l += m == -INFINITY ? 0.0 : std::exp(s[j] - m);
        const bool sees_keys = l > 0;
        const double ref_lse = sees_keys ? m + std::log(l) : -INFINITY;
        const float got_lse = lse[varlen ? size_t(h) * total_q + q_token : (size_t(bb) * cs.hq + h) * nq + i];
        const double tol_lse = std::is_same_v<T, float> ? 2e-5 : 2e-3;
        const bool lse_ok = sees_keys ? std::fabs(got_lse - ref_lse) <= tol_lse * (1 + std::fabs(ref_lse))
                                      : got_lse == -INFINITY;
        tally.check(lse_ok, 0.0, [&] {
          return "lse b=" + std::to_string(bb) + " h=" + std::to_string(h) + " i=" + std::to_string(i) + ": " +
                 std::to_string(got_lse) + ", expected " + std::to_string(ref_lse);
        });
        for (int e = 0; e < D; ++e) {
          double o = 0;
          for (int j = 0; sees_keys && j < key_end; ++j)
            o += std::exp(s[j] - m) / l * keep_factor(h, q_token, j) * vr[kv_index(j, e)];
          const double got = to_accumulate(out[(size_t(q_token) * cs.hq + h) * D + e]);
          const double err = std::fabs(got - o);
          tally.check(err <= tol_out * 2.0, err, [&] {  // |v| <= 2
            return "out b=" + std::to_string(bb) + " h=" + std::to_string(h) + " i=" + std::to_string(i) + " e=" +
                   std::to_string(e) + ": " + std::to_string(got) + ", expected " + std::to_string(o);
          });
        }
      }
    }
  std::printf("%s<%s, %d> b=%d hq=%d hk=%d nq=%d nk=%d causal=%d dropout=%g bias=%d varlen=%d: "
              "%zu of %zu outputs wrong (max |err| %.3g), %d blocks, %d findings\n",
              K::kName, cs.dtype.c_str(), D, batch, cs.hq, cs.hk, nq, nk, int(cs.causal), cs.dropout, int(cs.bias), int(varlen),
              tally.wrong,
              tally.checked, tally.worst, int(grid.x * grid.y * grid.z), findings.total());
  return dlk_emu::verdict(tally, findings, ran);
}

template <typename T>
int run_dim(const Case& cs) {
  if constexpr (std::is_same_v<T, float>) {
    if (cs.sm90) return 2;  // the Hopper kernel is fp16 / bf16 only
  } else if (cs.sm90) {
    switch (cs.d) {
      case 64: return run<T, 64, true>(cs);    // kBlockN 128
      case 128: return run<T, 128, true>(cs);  // kBlockN 128, two 64-column blocks per tile row
      case 256: return run<T, 256, true>(cs);  // kBlockN 64, m64n256 P V
      default: return 2;
    }
  }
  switch (cs.d) {
    case 32: return run<T, 32, false>(cs);
    case 64: return run<T, 64, false>(cs);
    case 96: return run<T, 96, false>(cs);    // Q fragments held, kBlockN 64
    case 128: return run<T, 128, false>(cs);  // Q re-read from shared memory per k-step
    case 256: return run<T, 256, false>(cs);  // 8 warps, kBlockN 32
    default: return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Case cs;
  if (!dlk_emu::parse_attention_case(argc, argv, cs) || cs.hk <= 0 || cs.hq % cs.hk != 0 || cs.lens_q.size() != cs.lens_k.size() ||
      (cs.bias && !cs.lens_q.empty())) {
    std::fprintf(stderr, "bad case\n");
    return 2;
  }
  if (cs.dtype == "f16") return run_dim<__half>(cs);
  // fp32 stays in the fp16-only (mutant) builds: its SIMT kernels are cheap to compile.
  if (cs.dtype == "f32") return run_dim<float>(cs);
#ifndef DLK_EMULATE_F16_ONLY
  if (cs.dtype == "bf16") return run_dim<__nv_bfloat16>(cs);
#endif
  std::fprintf(stderr, "bad dtype\n");
  return 2;
}
