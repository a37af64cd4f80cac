// The flash-attention backward (csrc/cuda/attention_bwd_kernel.cuh) run block by block on the CPU by
// the warp emulator (warp_emu.h, tensor_core_emu.h), with the kernels and grids its launcher picks:
// row_terms_kernel<T>, then for aligned fp16 / bf16 the tensor-core kernels (run_tensor_core_kernels:
// dkdv_tc_kernel<T, D, kGradK, kGradV>, dq_tc_kernel<T, D>), and for fp32, or fp16 / bf16 with
// aligned=0 (the fallback for unaligned tensors), the SIMT kernels (run_simt_kernels:
// dkdv_simt_kernel<T, D>, dq_simt_kernel<T, D>; plain shared loads, which the detector does not see).
// Compared with a plain-loop double-precision backward (dQ, dK, dV, and the row terms D_i the first
// kernel leaves in the workspace), with the shared-memory race and cp.async pipeline detector on. The
// kernel source is compiled unchanged, as in attention_fwd_emulate.cpp.
//
// out and lse, the backward's inputs from the forward, are computed here in double from the rounded
// q, k, v (out rounded to T, lse to float): the forward kernel is not involved.
//
// One case per run, from `key=value` arguments (attention_case.h): dtype f16|bf16|f32,
// d 32|64|96|128|256, b, hq, hk, nq, nk, causal (bottom-right), seed (of the inputs), dropout (p),
// philox (the dropout seed, read by the kernels through AttentionParams::seed as they read the op's
// device tensor), bias (an additive bias broadcast over the batch, dense only, not differentiated),
// lens_q / lens_k (varlen: packed sequences of these lengths, with cu_seqlens; nq / nk are then their
// maxima), max_q / max_k (varlen: a stated max_seqlen below the longest: that sequence's gradients
// must be NaN), aligned and detect. Prints one summary line and the detector's findings; exit status
// as harness.h's verdict (2 on a bad case).

#include "attention_case.h"
#include "harness.h"
#include "warp_emu.h"

#define __CUDA_ARCH__ 800  // the kernels' device branches from here on
#include "tensor_core_emu.h"
#define smem_raw smem  // the SIMT kernels' name for the same (one block's) shared memory
#include "attention_bwd_kernel.cuh"
#undef smem_raw
#undef __CUDA_ARCH__

#include <algorithm>
#include <random>

namespace dlk {
namespace attention_bwd {
// The kernels' `extern __shared__` buffer: one block runs at a time.
alignas(128) char smem[dlk_emu::kMaxSharedBytes];
}  // namespace attention_bwd
}  // namespace dlk

namespace {

using namespace dlk;
using namespace dlk::attention_bwd;

using Case = dlk_emu::AttentionCase;

using dlk_emu::Buffer;

std::string number(double x) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.6g", x);
  return text;
}

// Runs every launch of one kernel as attention_bwd_kernel.cuh's launch_kernel makes them (copied: it
// launches with <<<>>>): grid (row_blocks, heads, the sequences of a chunk), the chunk's first sequence
// as batch_offset; nothing when there are no row blocks. Counts the blocks run.
template <typename Kernel>
bool launch_like_launcher(Kernel kernel, const plan::AttentionGrid& grid, int threads, size_t smem_bytes,
                          const AttentionBwdParams& p, float* row_terms, const dlk_emu::Options& options,
                          dlk_emu::Findings& findings, int& blocks) {
  if (grid.row_blocks == 0) return true;
  if (!grid.valid()) return false;
  for (int64_t chunk = 0; chunk < grid.sequences.launches; ++chunk) {
    const dim3 g(unsigned(grid.row_blocks), unsigned(grid.heads), unsigned(grid.sequences.size(chunk)));
    const int batch_offset = int(grid.sequences.first(chunk));
    const std::function<void()> body = [&] { kernel(p, row_terms, batch_offset); };
    if (!dlk_emu::launch(g, dim3(unsigned(threads)), smem, smem_bytes, body, options, findings)) return false;
    blocks += int(g.x * g.y * g.z);
  }
  return true;
}

template <typename T, int kHeadDim>
int run(const Case& cs) {
  const int D = kHeadDim;
  // The launcher's choice (attention_bwd.cu): tensor cores for aligned fp16 / bf16, SIMT otherwise.
  const bool simt = std::is_same_v<T, float> || !cs.aligned;
  // Dense: (B, N, H, D) as torch's (batch, seq, heads, dim) view, rows strided by H * D. Varlen: packed
  // (total, H, D) with cu_seqlens (attention_sequences). Either way query (key) row i of sequence bb is
  // token cu_q[bb] + i (cu_k[bb] + i) of a (tokens, H, D) array. A packed sequence longer than the stated
  // max_seqlen (seqs.too_long): its dQ, dK and dV rows must be NaN.
  const dlk_emu::AttentionSequences seqs = dlk_emu::attention_sequences(cs);
  const bool varlen = seqs.varlen;
  const int batch = seqs.batch, nq = seqs.nq, nk = seqs.nk;
  const std::vector<int>&cu_q = seqs.cu_q, &cu_k = seqs.cu_k;
  const int64_t total_q = cu_q.back(), total_k = cu_k.back();
  const size_t q_elems = size_t(total_q) * cs.hq * D, k_elems = size_t(total_k) * cs.hk * D;
  const auto qi = [&](int bb, int i, int h, int e) { return ((size_t(cu_q[bb]) + i) * cs.hq + h) * D + e; };
  const auto ki = [&](int bb, int j, int h, int e) { return ((size_t(cu_k[bb]) + j) * cs.hk + h) * D + e; };
  std::mt19937 rng(cs.seed);
  std::uniform_real_distribution<float> uniform(-2.f, 2.f);
  const auto fill = [&](Buffer<T>& buf, std::vector<double>& ref) {
    ref.resize(buf.size);
    for (size_t i = 0; i < buf.size; ++i) {
      buf[i] = from_accumulate<T>(uniform(rng));
      ref[i] = to_accumulate(buf[i]);
    }
  };
  Buffer<T> q(q_elems), k(k_elems), v(k_elems), grad_out(q_elems), out(q_elems);
  std::vector<double> qr, kr, vr, dor, outr(q_elems, 0.0);
  fill(q, qr);
  fill(k, kr);
  fill(v, vr);
  fill(grad_out, dor);
  // Bias (dense only): (Hq, Nq, Nk) broadcast over the batch (batch stride 0), row 0 of head 0 all -inf
  // (a row that sees no key: out 0, lse -inf, no contribution to any gradient).
  Buffer<T> bias(cs.bias ? size_t(cs.hq) * nq * nk : 0);
  std::vector<double> biasr;
  if (cs.bias) {
    fill(bias, biasr);
    for (int j = 0; j < nk; ++j) {
      bias[j] = from_accumulate<T>(-INFINITY);
      biasr[j] = -INFINITY;
    }
  }
  // The gradients with a guard of kGuard elements past their end: every element must be written, no
  // element past the end may be.
  constexpr size_t kGuard = 4096;
  const T sentinel = from_accumulate<T>(777.0f);
  Buffer<T> grad_q(q_elems + kGuard), grad_k(k_elems + kGuard), grad_v(k_elems + kGuard);
  for (Buffer<T>* g : {&grad_q, &grad_k, &grad_v})
    for (size_t i = 0; i < g->size; ++i) (*g)[i] = sentinel;

  AttentionBwdParams p;
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
  p.grad_out = grad_out.data();
  p.grad_q = grad_q.data();
  p.out_row_stride = p.grad_out_row_stride = p.grad_q_row_stride = p.q_row_stride;
  p.out_head_stride = p.grad_out_head_stride = p.grad_q_head_stride = p.q_head_stride;
  p.out_batch_stride = p.grad_out_batch_stride = p.grad_q_batch_stride = p.q_batch_stride;
  p.grad_k = grad_k.data();
  p.grad_v = grad_v.data();
  p.grad_k_row_stride = p.grad_v_row_stride = p.k_row_stride;
  p.grad_k_head_stride = p.grad_v_head_stride = p.k_head_stride;
  p.grad_k_batch_stride = p.grad_v_batch_stride = p.k_batch_stride;
  // lse: dense (B, Hq, Nq), varlen (Hq, total_q): the same count. Row i of sequence bb, head h at
  // stat_index (the row terms share the layout, row_terms_layout).
  std::vector<float> lse(size_t(cs.hq) * total_q);
  p.lse = lse.data();
  p.lse_batch_stride = varlen ? 0 : int64_t(cs.hq) * nq;
  p.lse_head_stride = varlen ? total_q : nq;
  const auto stat_index = [&](int bb, int h, int i) {
    return size_t(bb * p.lse_batch_stride + h * p.lse_head_stride + (varlen ? cu_q[bb] : 0) + i);
  };
  p.scale_f64 = 1.0 / std::sqrt(double(D));
  p.scale = float(p.scale_f64);
  p.causal = cs.causal;
  p.causal_bottom_right = !cs.top_left;
  const int64_t philox_seed = cs.philox;  // in "device" memory: the kernels load it
  p.dropout_p = cs.dropout;
  p.seed = cs.dropout > 0 ? &philox_seed : nullptr;

  // ---- The forward in double: lse (natural log, before dropout) and out = P' V, P' = P * keep / (1 - p)
  // with dlk/attention.h's Philox rule (query token cu_q[bb] + i, = bb * Nq + i when dense; the
  // params' max key length nk); out rounded to T and lse to float, as the forward stores them. A row
  // whose visible keys all have bias -inf (or that sees none) has out 0 and lse -inf.
  const double scale = p.scale;  // the float scale the kernels use
  const uint32_t threshold = dropout_threshold(cs.dropout);
  const auto keep_factor = [&](int h, int64_t q_token, int j) {
    if (cs.dropout <= 0) return 1.0;
    const uint64_t counter = dropout_counter(h, p.total_q, q_token, nk, j);
    return dropout_keep(uint64_t(cs.philox), counter, threshold) ? 1.0 / (1.0 - cs.dropout) : 0.0;
  };
  const int group = cs.hq / cs.hk;
  // scale * q.k + bias[h, i, j] (the bias is broadcast over the batch).
  const auto score = [&](int bb, int h, int i, int j) {
    double dot = 0;
    for (int e = 0; e < D; ++e) dot += qr[qi(bb, i, h, e)] * kr[ki(bb, j, h / group, e)];
    return dot * scale + (cs.bias ? biasr[(size_t(h) * nq + i) * nk + j] : 0.0);
  };
  for (int bb = 0; bb < batch; ++bb) {
    const int len_q = cu_q[bb + 1] - cu_q[bb], len_k = cu_k[bb + 1] - cu_k[bb];
    for (int h = 0; h < cs.hq; ++h)
      for (int i = 0; i < len_q; ++i) {
        const int key_end = dlk_emu::reference_key_end(cs, i, len_q, len_k);
        std::vector<double> s(size_t(std::max(key_end, 0)));
        double m = -INFINITY;
        for (int j = 0; j < key_end; ++j) m = std::max(m, s[j] = score(bb, h, i, j));
        double l = 0;
        for (int j = 0; j < key_end; ++j) l += m == -INFINITY ? 0.0 : std::exp(s[j] - m);
        lse[stat_index(bb, h, i)] = l > 0 ? float(m + std::log(l)) : -INFINITY;
        const int64_t q_token = cu_q[bb] + i;
        for (int e = 0; e < D; ++e) {
          double o = 0;
          for (int j = 0; l > 0 && j < key_end; ++j)
            o += std::exp(s[j] - m) / l * keep_factor(h, q_token, j) * vr[ki(bb, j, h / group, e)];
          out[qi(bb, i, h, e)] = from_accumulate<T>(float(o));
          outr[qi(bb, i, h, e)] = to_accumulate(out[qi(bb, i, h, e)]);
        }
      }
  }

  // ---- The backward on the emulator, as run_attention_backward and run_tensor_core_kernels launch it
  // (copied: they launch through launch_kernel): row terms into the workspace (row_terms_layout),
  // dK/dV (two passes at head dim 256: dV, then dK), then dQ. Every tensor here is 16-byte aligned
  // (Buffer; strides multiples of 8 elements) and the shared memory fits sm_80, so attention_bwd.cu's
  // run_for_dtype would take this tensor-core path too.
  const RowTermsLayout terms = row_terms_layout(p);
  std::vector<float> row_terms(size_t(terms.elements), 12345.0f);
  dlk_emu::Findings findings;
  dlk_emu::Options options;
  options.detect = cs.detect;
  int blocks = 0;
  bool ran = launch_like_launcher(row_terms_kernel<T>, plan::plan_attention_grid(p.seqlen_q, kRowTermsRows, p.heads_q,
                                                                                 p.batch),
                                  128, 0, p, row_terms.data(), options, findings, blocks);
  if (simt) {  // run_simt_kernels: dK/dV, then dQ, 16 rows per CTA
    const size_t smem_bytes = simt_smem_bytes(kHeadDim);
    ran = ran && launch_like_launcher(dkdv_simt_kernel<T, kHeadDim>,
                                      plan::plan_attention_grid(p.seqlen_k, kSimtBlock, p.heads_kv, p.batch),
                                      kSimtThreads, smem_bytes, p, row_terms.data(), options, findings, blocks);
    ran = ran && launch_like_launcher(dq_simt_kernel<T, kHeadDim>,
                                      plan::plan_attention_grid(p.seqlen_q, kSimtBlock, p.heads_q, p.batch),
                                      kSimtThreads, smem_bytes, p, row_terms.data(), options, findings, blocks);
  } else if constexpr (sizeof(T) == 2) {  // run_tensor_core_kernels
    using Config = TensorCoreConfig<kHeadDim>;
    const plan::AttentionGrid dkdv_grid = plan::plan_attention_grid(p.seqlen_k, kTcResidentRows, p.heads_kv, p.batch);
    const size_t dkdv_smem = dkdv_smem_bytes<T, kHeadDim>();
    if constexpr (Config::kSplitDkdv) {
      ran = ran && launch_like_launcher(dkdv_tc_kernel<T, kHeadDim, false, true>, dkdv_grid, kTcThreads, dkdv_smem, p,
                                        row_terms.data(), options, findings, blocks);
      ran = ran && launch_like_launcher(dkdv_tc_kernel<T, kHeadDim, true, false>, dkdv_grid, kTcThreads, dkdv_smem, p,
                                        row_terms.data(), options, findings, blocks);
    } else {
      ran = ran && launch_like_launcher(dkdv_tc_kernel<T, kHeadDim, true, true>, dkdv_grid, kTcThreads, dkdv_smem, p,
                                        row_terms.data(), options, findings, blocks);
    }
    ran = ran && launch_like_launcher(dq_tc_kernel<T, kHeadDim>,
                                      plan::plan_attention_grid(p.seqlen_q, kTcResidentRows, p.heads_q, p.batch),
                                      kTcThreads, dq_smem_bytes<T, kHeadDim>(), p, row_terms.data(), options, findings,
                                      blocks);
  }

  // ---- Reference backward in double, from the kernels' own inputs (the rounded out, the float lse):
  //   P = exp(S - lse), P' = P * keep / (1 - p), dP = dO V^T, D_i = rowsum(dO_i * O_i),
  //   dS = P (dP * keep / (1 - p) - D_i), dQ = scale dS K, dK = scale dS^T Q (summed over the query
  //   heads of a GQA group), dV = P'^T dO          (csrc/cpu/attention.cpp's backward, FlashAttention-2).
  //
  // Tolerance, per element, relative to the magnitudes that make it up. The kernels round P' (for
  // dV) and dS (for dQ, dK) to T as the A fragments of the mma, and each result once more on the way
  // out; everything else is fp32. Rounding a value a to T moves it by at most u (|a| + tiny), u = 2^-11
  // for fp16 and 2^-8 for bf16 (fp16 is the tighter), tiny the smallest normal (2^-14 for fp16, whose
  // subnormals are spaced 2^-24; 2^-126 for bf16). Of the fp32 steps only one matters next to that:
  // dS = P (dP * keep / (1 - p) - D_i) can cancel (a row that sees one key has dS = 0 exactly),
  // leaving the fp32 errors of the D-term dot products dP and D_i, at most D 2^-24 of their
  // magnitudes. So an element x = c sum_k a_k b_k is off by at most
  //   c sum_k (u (|a_k| + tiny) + [a = dS] D 2^-24 P_k (keep_k / (1 - p) sum |dO V| + sum |dO O|)) |b_k|
  //   + u (|x| + tiny),
  // accumulated below as *_bound; the tolerance is twice that. A wrong fragment, index, scale or
  // dropout decision moves an element by about its own magnitude.
  // fp32 (the SIMT kernels), where nothing is rounded to a 16-bit type, the fp32 steps are all there
  // is, so the bound adds them (negligible next to u for fp16 / bf16): u = 2^-24 (the result's own
  // rounding); P off by a relative D 2^-24 scale sum |q k| (its score's dot product) plus
  // 2^-24 (|lse| + 4) (the lse and exp2); and each result's fp32 sum of K terms off by
  // K 2^-24 sum |c a_k b_k| (K: the keys of a query row for dQ; at most the group's query rows, group
  // len_q, for dK and dV).
  const double u = std::ldexp(1.0, std::is_same_v<T, __half> ? -11 : std::is_same_v<T, float> ? -24 : -8);
  const double tiny = std::ldexp(1.0, std::is_same_v<T, __half> ? -14 : -126);
  const double eps32 = std::ldexp(1.0, -24);
  const double fp32_dot = D * eps32;
  std::vector<double> dq_ref(q_elems, 0.0), dq_bound(q_elems, 0.0), dk_ref(k_elems, 0.0), dk_bound(k_elems, 0.0),
      dv_ref(k_elems, 0.0), dv_bound(k_elems, 0.0);
  dlk_emu::Tally tally;
  double worst_ratio = 0;
  const auto check = [&](double got, double want, double tol, const char* what, int bb, int h, int row, int e) {
    const double err = std::fabs(got - want);
    if (err / tol > worst_ratio || err != err) worst_ratio = err / tol;
    tally.check(err <= tol, err, [&] {
      return std::string(what) + " b=" + std::to_string(bb) + " h=" + std::to_string(h) + " row=" +
             std::to_string(row) + " e=" + std::to_string(e) + ": " + number(got) + ", expected " +
             number(want) + " (tolerance " + number(tol) + ")";
    });
  };
  for (int bb = 0; bb < batch; ++bb)
    for (int h = 0; h < cs.hq; ++h) {
      const int hk = h / group;
      const int len_q = cu_q[bb + 1] - cu_q[bb], len_k = cu_k[bb + 1] - cu_k[bb];
      // A too-long sequence: NaN gradients (checked below); its row terms are the kernels' scratch.
      for (int i = 0; !seqs.too_long(bb) && i < len_q; ++i) {
        const size_t stat = stat_index(bb, h, i);
        double dsum = 0, dsum_mag = 0;
        for (int e = 0; e < D; ++e) {
          dsum += dor[qi(bb, i, h, e)] * outr[qi(bb, i, h, e)];
          dsum_mag += std::fabs(dor[qi(bb, i, h, e)] * outr[qi(bb, i, h, e)]);
        }
        // D_i (row_terms_kernel): an fp32 sum of D products, in the workspace's layout.
        check(row_terms[stat], dsum, 2 * fp32_dot * dsum_mag + 1e-30, "row term", bb, h, i, 0);
        const int key_end = dlk_emu::reference_key_end(cs, i, len_q, len_k);
        const double row_lse = lse[stat];
        if (row_lse == -INFINITY) continue;  // no visible key (or all bias -inf): contributes nothing
        const int64_t q_token = cu_q[bb] + i;
        const double dq_sum = key_end * eps32, dkdv_sum = group * len_q * eps32;  // fp32 sums (above)
        for (int j = 0; j < key_end; ++j) {
          const double prob = std::exp(score(bb, h, i, j) - row_lse);
          const double factor = keep_factor(h, q_token, j);
          double dp = 0, dp_mag = 0, qk_mag = 0;
          for (int e = 0; e < D; ++e) {
            dp += dor[qi(bb, i, h, e)] * vr[ki(bb, j, hk, e)];
            dp_mag += std::fabs(dor[qi(bb, i, h, e)] * vr[ki(bb, j, hk, e)]);
            qk_mag += std::fabs(qr[qi(bb, i, h, e)] * kr[ki(bb, j, hk, e)]);
          }
          const double p_rel = fp32_dot * scale * qk_mag + eps32 * (std::fabs(row_lse) + 4);
          const double ds = prob * (dp * factor - dsum), pd = prob * factor;
          const double ds_err =
              u * (std::fabs(ds) + tiny) + fp32_dot * prob * (factor * dp_mag + dsum_mag) + p_rel * std::fabs(ds);
          const double pd_err = u * (std::fabs(pd) + tiny) + p_rel * pd;
          for (int e = 0; e < D; ++e) {
            const double dq_term = scale * ds * kr[ki(bb, j, hk, e)], dk_term = scale * ds * qr[qi(bb, i, h, e)];
            const double dv_term = pd * dor[qi(bb, i, h, e)];
            dq_ref[qi(bb, i, h, e)] += dq_term;
            dq_bound[qi(bb, i, h, e)] += scale * ds_err * std::fabs(kr[ki(bb, j, hk, e)]) + dq_sum * std::fabs(dq_term);
            dk_ref[ki(bb, j, hk, e)] += dk_term;
            dk_bound[ki(bb, j, hk, e)] += scale * ds_err * std::fabs(qr[qi(bb, i, h, e)]) + dkdv_sum * std::fabs(dk_term);
            dv_ref[ki(bb, j, hk, e)] += dv_term;
            dv_bound[ki(bb, j, hk, e)] += pd_err * std::fabs(dor[qi(bb, i, h, e)]) + dkdv_sum * std::fabs(dv_term);
          }
        }
      }
    }
  const auto check_gradient = [&](Buffer<T>& got, const std::vector<double>& want, const std::vector<double>& bound,
                                  const char* what, const std::vector<int>& cu, int heads) {
    for (int bb = 0; bb < batch; ++bb)
      for (int r = 0; r < cu[bb + 1] - cu[bb]; ++r)
        for (int h = 0; h < heads; ++h)
          for (int e = 0; e < D; ++e) {
            const size_t at = ((size_t(cu[bb]) + r) * heads + h) * D + e;
            if (seqs.too_long(bb)) {
              const double x = to_accumulate(got[at]);
              tally.check(x != x, 0.0, [&] {
                return std::string(what) + " of a too-long sequence b=" + std::to_string(bb) + " row=" +
                       std::to_string(r) + ": " + number(x) + ", expected NaN";
              });
              continue;
            }
            check(to_accumulate(got[at]), want[at], 2 * (bound[at] + u * (std::fabs(want[at]) + tiny)), what, bb, h, r,
                  e);
          }
    size_t written = want.size();  // the guard: never written
    while (written < got.size && std::memcmp(&got[written], &sentinel, sizeof(T)) == 0) ++written;
    tally.check(written == got.size, written == got.size ? 0.0 : INFINITY, [&] {
      return std::string(what) + ": element " + std::to_string(written - want.size()) + " past the end written";
    });
  };
  check_gradient(grad_q, dq_ref, dq_bound, "dq", cu_q, cs.hq);
  check_gradient(grad_k, dk_ref, dk_bound, "dk", cu_k, cs.hk);
  check_gradient(grad_v, dv_ref, dv_bound, "dv", cu_k, cs.hk);

  std::printf("attention_backward%s<%s, %d> b=%d hq=%d hk=%d nq=%d nk=%d causal=%d dropout=%g bias=%d varlen=%d: %zu of "
              "%zu outputs wrong (max |err| %.3g, %.2f of its tolerance), %d blocks, %d findings\n",
              simt ? "_simt" : "", cs.dtype.c_str(), D, batch, cs.hq, cs.hk, nq, nk, int(cs.causal), cs.dropout, int(cs.bias), int(varlen),
              tally.wrong, tally.checked, tally.worst, worst_ratio, blocks, findings.total());
  return dlk_emu::verdict(tally, findings, ran);
}

template <typename T>
int run_dim(const Case& cs) {
  switch (cs.d) {
    case 32: return run<T, 32>(cs);
    case 64: return run<T, 64>(cs);
    case 96: return run<T, 96>(cs);    // dkdv streams 32 queries per step
    case 128: return run<T, 128>(cs);
    case 256: return run<T, 256>(cs);  // dkdv in two passes (dV, then dK); dq streams 32 keys
    default: std::fprintf(stderr, "bad head dim\n"); return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Case cs;
  const auto negative = [](const std::vector<int>& lens) {
    return std::any_of(lens.begin(), lens.end(), [](int n) { return n < 0; });
  };
  if (!dlk_emu::parse_attention_case(argc, argv, cs) || cs.b <= 0 || cs.hq <= 0 || cs.hk <= 0 || cs.hq % cs.hk != 0 || cs.nq < 0 ||
      cs.nk < 0 || !(cs.dropout >= 0 && cs.dropout < 1) || cs.lens_q.size() != cs.lens_k.size() ||
      negative(cs.lens_q) || negative(cs.lens_k) || (cs.bias && !cs.lens_q.empty())) {
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
