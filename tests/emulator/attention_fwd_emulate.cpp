// The fp16 / bf16 flash-attention forward kernel (csrc/cuda/attention_fwd_kernel.cuh:
// attention_forward_kernel<T, D>) run block by block on the CPU by the warp emulator (warp_emu.h,
// tensor_core_emu.h), compared with a plain-loop double-precision attention (out and lse), with the
// shared-memory race and cp.async pipeline detector on. The kernel source is compiled unchanged, as
// in conv2d_emulate.cpp.
//
// One case per run, from `key=value` arguments (see Case): dtype f16|bf16, d 32|64|96|128|256, b, hq,
// hk, nq, nk, causal, seed (of the inputs), dropout (p) and philox (the dropout seed, which the kernel
// reads through AttentionParams::seed as it reads the op's device tensor), bias (an additive bias
// broadcast over the batch, dense only) and lens_q / lens_k (varlen: packed sequences of these
// lengths, with cu_seqlens). Prints one summary line and the detector's findings; exit status as
// harness.h's verdict (2 on a bad case).
#include "attention_case.h"
#include "harness.h"
#include "warp_emu.h"

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"
#include "attention_fwd_kernel.cuh"
#undef __CUDA_ARCH__

#include <algorithm>
#include <random>

namespace dlk {
namespace attn {
// The kernel's `extern __shared__` buffer: one block runs at a time.
alignas(128) char smem[dlk_emu::kMaxSharedBytes];
}  // namespace attn
}  // namespace dlk

namespace {

using namespace dlk;
using namespace dlk::attn;

using Case = dlk_emu::AttentionCase;

using dlk_emu::Buffer;

template <typename T, int kHeadDim>
int run(const Case& cs) {
  using Config = ForwardConfig<kHeadDim>;
  const int D = kHeadDim;
  // Dense: (B, N, H, D) as torch's (batch, seq, heads, dim) view, rows strided by H * D. Varlen: packed
  // (total, H, D) with cu_seqlens; cs.nq / cs.nk are then the longest sequences (max_seqlen).
  const bool varlen = !cs.lens_q.empty();
  const int batch = varlen ? int(cs.lens_q.size()) : cs.b;
  std::vector<int> cu_q{0}, cu_k{0};
  for (int bb = 0; bb < batch; ++bb) {
    cu_q.push_back(cu_q.back() + (varlen ? cs.lens_q[bb] : cs.nq));
    cu_k.push_back(cu_k.back() + (varlen ? cs.lens_k[bb] : cs.nk));
  }
  const int nq = varlen ? *std::max_element(cs.lens_q.begin(), cs.lens_q.end()) : cs.nq;
  const int nk = varlen ? *std::max_element(cs.lens_k.begin(), cs.lens_k.end()) : cs.nk;
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
  p.causal_bottom_right = true;
  const int64_t philox_seed = cs.philox;  // in "device" memory: the kernel loads it
  p.dropout_p = cs.dropout;
  p.seed = cs.dropout > 0 ? &philox_seed : nullptr;
  a.dropout = cs.dropout > 0;
  a.dropout_threshold = dropout_threshold(cs.dropout);
  a.dropout_scale = a.dropout ? float(1.0 / (1.0 - cs.dropout)) : 1.0f;
  a.scale_log2 = p.scale * kLog2e;
  a.aligned = true;
  a.group_size = cs.hq / cs.hk;

  dlk_emu::Findings findings;
  dlk_emu::Options options;
  options.detect = cs.detect;
  const dim3 grid(unsigned((nq + Config::kBlockM - 1) / Config::kBlockM), unsigned(cs.hq), unsigned(batch));
  const std::function<void()> body = [&] { attention_forward_kernel<T, kHeadDim>(a); };
  const bool ran = dlk_emu::launch(grid, dim3(Config::kThreads), smem,
                                   Config::kSmemBytes, body, options, findings);

  const double tol_out = (std::is_same_v<T, __half> ? 4e-3 : 2e-2) / (1.0 - cs.dropout);  // relative to max |v|
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
      for (int i = 0; i < len_q; ++i) {
        const int64_t q_token = cu_q[bb] + i;  // packed row; dense: b * Nq + i, the same number
        const auto q_at = [&](int e) { return qr[(size_t(q_token) * cs.hq + h) * D + e]; };
        const auto kv_index = [&](int j, int e) { return (size_t(cu_k[bb] + j) * cs.hk + hk) * D + e; };
        const int key_end = attention_key_end(p, i, len_q, len_k);
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
        const bool lse_ok = sees_keys ? std::fabs(got_lse - ref_lse) <= 2e-3 * (1 + std::fabs(ref_lse))
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
  std::printf("attention_forward_kernel<%s, %d> b=%d hq=%d hk=%d nq=%d nk=%d causal=%d dropout=%g bias=%d varlen=%d: "
              "%zu of %zu outputs wrong (max |err| %.3g), %d blocks, %d findings\n",
              cs.dtype.c_str(), D, batch, cs.hq, cs.hk, nq, nk, int(cs.causal), cs.dropout, int(cs.bias), int(varlen),
              tally.wrong,
              tally.checked, tally.worst, int(grid.x * grid.y * grid.z), findings.total());
  return dlk_emu::verdict(tally, findings, ran);
}

template <typename T>
int run_dim(const Case& cs) {
  switch (cs.d) {
    case 32: return run<T, 32>(cs);
    case 64: return run<T, 64>(cs);
    case 96: return run<T, 96>(cs);    // Q fragments held, kBlockN 64
    case 128: return run<T, 128>(cs);  // Q re-read from shared memory per k-step
    case 256: return run<T, 256>(cs);  // 8 warps, kBlockN 32
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
#ifndef DLK_EMULATE_F16_ONLY
  if (cs.dtype == "bf16") return run_dim<__nv_bfloat16>(cs);
#endif
  std::fprintf(stderr, "bad dtype\n");
  return 2;
}
