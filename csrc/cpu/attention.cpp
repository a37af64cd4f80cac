#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "dlk/half.h"

namespace dlk {
namespace {

// The tiles of FlashAttention-2: a task owns kBlockM query rows (forward, dq) or kBlockN keys (dk,
// dv) of one head and walks the other axis a tile at a time. Tiles are copied into the accumulate
// type once, so fp16/bf16 conversions are amortised over a whole tile.
constexpr int kBlockM = 64;
constexpr int kBlockN = 64;

int ceil_div(int a, int b) { return (a + b - 1) / b; }

template <typename Acc>
constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();

// float64 inputs scale by the exact value; the others by the float the GPU kernels take.
template <typename T, typename Acc>
Acc softmax_scale(const AttentionParams& p) {
  return std::is_same_v<T, double> ? Acc(p.scale_f64) : Acc(p.scale);
}

// One of q, k, v, out or the gradients seen through the indexing rule of dlk/attention.h:
// element (b, h, token, d) at base + b * batch_stride + h * head_stride + token * row_stride + d.
template <typename T>
struct HeadView {
  T* base;
  int64_t batch_stride, head_stride, row_stride;

  T* row(int b, int h, int64_t token) const {
    return base + b * batch_stride + h * head_stride + token * row_stride;
  }
};

template <typename T>
HeadView<const T> view(const void* base, int64_t batch_stride, int64_t head_stride, int64_t row_stride) {
  return {static_cast<const T*>(base), batch_stride, head_stride, row_stride};
}

template <typename T>
HeadView<T> view(void* base, int64_t batch_stride, int64_t head_stride, int64_t row_stride) {
  return {static_cast<T*>(base), batch_stride, head_stride, row_stride};
}

// Where sequence b lives. Dense: every sequence is the whole tensor of its batch index.
struct Sequence {
  int64_t q_start = 0, k_start = 0;  // first query / key token on the row axis (0 when dense)
  int64_t q_token0 = 0;              // batch-wide index of query 0, for the dropout counter
  int len_q = 0, len_k = 0;
};

Sequence sequence(const AttentionParams& p, int b) {
  if (p.cu_seqlens_q == nullptr) return {0, 0, int64_t(b) * p.seqlen_q, p.seqlen_q, p.seqlen_k};
  const int q_start = p.cu_seqlens_q[b], k_start = p.cu_seqlens_k[b];
  return {q_start, k_start, q_start, p.cu_seqlens_q[b + 1] - q_start, p.cu_seqlens_k[b + 1] - k_start};
}

// Offset of row i of sequence b, head h in lse (and in the backward's D = rowsum(dO * O) buffer,
// which shares lse's layout).
int64_t row_stat_offset(const AttentionParams& p, int b, int h, const Sequence& seq, int i) {
  return b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_start + i;
}

// Copies rows [first_token, first_token + rows) of head h into a row-major rows x dim tile.
template <typename T, typename Acc>
void load_tile(const HeadView<const T>& src, int b, int h, int64_t first_token, int rows, int dim, Acc* tile) {
  for (int r = 0; r < rows; ++r) {
    const T* in = src.row(b, h, first_token + r);
    for (int d = 0; d < dim; ++d) tile[int64_t(r) * dim + d] = to_acc(in[d]);
  }
}

template <typename Acc>
Acc dot(const Acc* a, const Acc* b, int dim) {
  Acc sum = 0;
  for (int d = 0; d < dim; ++d) sum += a[d] * b[d];
  return sum;
}

// y += alpha * x
template <typename Acc>
void axpy(Acc alpha, const Acc* x, Acc* y, int dim) {
  for (int d = 0; d < dim; ++d) y[d] += alpha * x[d];
}

// Dropout multiplier of P for element (h, query token, key j): 1 without dropout, else 1 / (1 - p)
// where Philox keeps the element and 0 where it drops it (dlk/attention.h).
template <typename Acc>
struct Dropout {
  bool enabled;
  uint64_t seed;
  uint32_t threshold;
  Acc keep_scale;
  int64_t total_q;
  int seqlen_k;

  explicit Dropout(const AttentionParams& p)
      : enabled(p.dropout_p > 0.0), seed(dropout_seed(p)), threshold(dropout_threshold(p.dropout_p)),
        keep_scale(Acc(1.0 / (1.0 - p.dropout_p))), total_q(p.total_q), seqlen_k(p.seqlen_k) {}

  Acc factor(int h, int64_t q_token, int j) const {
    if (!enabled) return Acc(1);
    return dropout_keep(seed, dropout_counter(h, total_q, q_token, seqlen_k, j), threshold) ? keep_scale : Acc(0);
  }
};

// Scores of one query row against keys [n0, n0 + visible) of a key tile:
// scale * q . k_j (+ bias[i, j]).
template <typename T, typename Acc>
void row_scores(const AttentionParams& p, const Acc* q_row, const Acc* k_tile, int visible, int dim, int b, int h,
                int i, int n0, Acc* scores) {
  const Acc scale = softmax_scale<T, Acc>(p);
  const T* bias_row = p.bias == nullptr ? nullptr
                                        : static_cast<const T*>(p.bias) + b * p.bias_batch_stride +
                                              h * p.bias_head_stride + int64_t(i) * p.bias_row_stride + n0;
  for (int c = 0; c < visible; ++c) {
    scores[c] = scale * dot(q_row, k_tile + int64_t(c) * dim, dim);
    if (bias_row != nullptr) scores[c] += to_acc(bias_row[c]);
  }
}

// ------------------------------------------------------------------------------------ forward

// Query rows [m0, m0 + kBlockM) of (sequence b, head h): online softmax over the key tiles.
template <typename T>
void forward_tile(const AttentionFwdParams& p, int b, int h, int m0) {
  using Acc = typename AccType<T>::type;
  const Sequence seq = sequence(p, b);
  const int rows = std::min(kBlockM, seq.len_q - m0);
  if (rows <= 0) return;  // varlen: this sequence is shorter than max_seqlen_q
  const int dim = p.head_dim;
  const int kv_head = h / (p.heads_q / p.heads_kv);
  const Dropout<Acc> dropout(p);

  std::vector<Acc> q(int64_t(rows) * dim), k(int64_t(kBlockN) * dim), v(int64_t(kBlockN) * dim);
  std::vector<Acc> acc(int64_t(rows) * dim, Acc(0)), scores(kBlockN);
  std::vector<Acc> row_max(rows, kNegInf<Acc>), row_sum(rows, Acc(0));  // running m and l
  load_tile(view<T>(p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride), b, h, seq.q_start + m0, rows, dim,
            q.data());

  // Causal visibility grows with the row: the tile's last row sees the most keys.
  const int key_end = attention_key_end(p, m0 + rows - 1, seq.len_q, seq.len_k);
  for (int n0 = 0; n0 < key_end; n0 += kBlockN) {
    const int cols = std::min(kBlockN, key_end - n0);
    load_tile(view<T>(p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride), b, kv_head, seq.k_start + n0, cols,
              dim, k.data());
    load_tile(view<T>(p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride), b, kv_head, seq.k_start + n0, cols,
              dim, v.data());
    for (int r = 0; r < rows; ++r) {
      const int i = m0 + r;
      const int visible = std::min(cols, attention_key_end(p, i, seq.len_q, seq.len_k) - n0);
      if (visible <= 0) continue;
      row_scores<T>(p, q.data() + int64_t(r) * dim, k.data(), visible, dim, b, h, i, n0, scores.data());
      const Acc tile_max = *std::max_element(scores.begin(), scores.begin() + visible);
      const Acc new_max = std::max(row_max[r], tile_max);
      // Every key so far has bias -inf: nothing to add, and exp(-inf - -inf) would be NaN.
      if (new_max == kNegInf<Acc>) continue;
      const Acc correction = std::exp(row_max[r] - new_max);  // 0 on the row's first visible tile
      Acc* out_row = acc.data() + int64_t(r) * dim;
      for (int d = 0; d < dim; ++d) out_row[d] *= correction;
      row_sum[r] *= correction;
      for (int c = 0; c < visible; ++c) {
        const Acc prob = std::exp(scores[c] - new_max);
        row_sum[r] += prob;  // the softmax denominator counts dropped elements too
        const Acc weight = prob * dropout.factor(h, seq.q_token0 + i, n0 + c);
        if (weight != Acc(0)) axpy(weight, v.data() + int64_t(c) * dim, out_row, dim);
      }
      row_max[r] = new_max;
    }
  }

  const auto out = view<T>(p.out, p.out_batch_stride, p.out_head_stride, p.out_row_stride);
  Acc* lse = static_cast<Acc*>(p.lse);
  for (int r = 0; r < rows; ++r) {
    const int i = m0 + r;
    T* out_row = out.row(b, h, seq.q_start + i);
    const bool no_visible_key = row_max[r] == kNegInf<Acc>;
    const Acc inv_sum = no_visible_key ? Acc(0) : Acc(1) / row_sum[r];
    for (int d = 0; d < dim; ++d) out_row[d] = from_acc<T>(acc[int64_t(r) * dim + d] * inv_sum);
    lse[row_stat_offset(p, b, h, seq, i)] = no_visible_key ? kNegInf<Acc> : row_max[r] + std::log(row_sum[r]);
  }
}

template <typename T>
struct Forward {
  static void run(const AttentionFwdParams& p) {
    const int m_blocks = ceil_div(p.seqlen_q, kBlockM);
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_q; ++h)
        for (int m_block = 0; m_block < m_blocks; ++m_block) forward_tile<T>(p, b, h, m_block * kBlockM);
  }
};

// ------------------------------------------------------------------------------------ backward
//
// P is recomputed from lse: P_ij = exp(S_ij - lse_i). With P' = P * dropout factor and O = P' V:
//   dV = P'^T dO,   dP'_ij = dO_i . V_j,   dS_ij = P_ij * (dP'_ij * factor_ij - D_i),
//   D_i = rowsum(dO_i * O_i),   dQ = scale * dS K,   dK = scale * dS^T Q.
// As in FlashAttention-2 (and Triton's fused-attention tutorial), dK/dV tasks own key tiles and dQ
// tasks own query tiles, so no two threads ever add into the same gradient element.

// D_i = rowsum(dO_i * O_i) for every (sequence, head, row), in lse's layout.
template <typename T, typename Acc>
void compute_row_deltas(const AttentionBwdParams& p, Acc* deltas) {
  const auto grad_out =
      view<T>(p.grad_out, p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride);
  const auto out = view<T>(p.out, p.out_batch_stride, p.out_head_stride, p.out_row_stride);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < p.batch; ++b) {
    for (int h = 0; h < p.heads_q; ++h) {
      const Sequence seq = sequence(p, b);
      for (int i = 0; i < seq.len_q; ++i) {
        const T* d_out = grad_out.row(b, h, seq.q_start + i);
        const T* o = out.row(b, h, seq.q_start + i);
        Acc sum = 0;
        for (int d = 0; d < p.head_dim; ++d) sum += to_acc(d_out[d]) * to_acc(o[d]);
        deltas[row_stat_offset(p, b, h, seq, i)] = sum;
      }
    }
  }
}

// dK and dV of keys [n0, n0 + kBlockN) of (sequence b, kv head): sums over the query heads of the
// group in head order, then over the query rows in row order.
template <typename T, typename Acc>
void dkdv_tile(const AttentionBwdParams& p, const Acc* deltas, int b, int kv_head, int n0) {
  const Sequence seq = sequence(p, b);
  const int cols = std::min(kBlockN, seq.len_k - n0);
  if (cols <= 0) return;
  const int dim = p.head_dim;
  const int group = p.heads_q / p.heads_kv;
  const Dropout<Acc> dropout(p);
  const Acc* lse = static_cast<const Acc*>(p.lse);
  const auto q_view = view<T>(p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride);
  const auto grad_out_view =
      view<T>(p.grad_out, p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride);

  std::vector<Acc> k(int64_t(cols) * dim), v(int64_t(cols) * dim);
  std::vector<Acc> dk(int64_t(cols) * dim, Acc(0)), dv(int64_t(cols) * dim, Acc(0));
  std::vector<Acc> q_row(dim), grad_out_row(dim), scores(kBlockN);
  load_tile(view<T>(p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride), b, kv_head, seq.k_start + n0, cols, dim,
            k.data());
  load_tile(view<T>(p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride), b, kv_head, seq.k_start + n0, cols, dim,
            v.data());

  for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
    for (int i = 0; i < seq.len_q; ++i) {
      const int visible = std::min(cols, attention_key_end(p, i, seq.len_q, seq.len_k) - n0);
      if (visible <= 0) continue;
      const int64_t stat = row_stat_offset(p, b, h, seq, i);
      const Acc row_lse = lse[stat];
      if (row_lse == kNegInf<Acc>) continue;  // no visible key: the row contributes nothing
      load_tile(q_view, b, h, seq.q_start + i, 1, dim, q_row.data());
      load_tile(grad_out_view, b, h, seq.q_start + i, 1, dim, grad_out_row.data());
      row_scores<T>(p, q_row.data(), k.data(), visible, dim, b, h, i, n0, scores.data());
      for (int c = 0; c < visible; ++c) {
        const Acc prob = std::exp(scores[c] - row_lse);
        const Acc factor = dropout.factor(h, seq.q_token0 + i, n0 + c);
        const Acc grad_prob = dot(grad_out_row.data(), v.data() + int64_t(c) * dim, dim);  // dP'_ij
        const Acc grad_score = prob * (grad_prob * factor - deltas[stat]);             // dS_ij
        if (prob * factor != Acc(0)) axpy(prob * factor, grad_out_row.data(), dv.data() + int64_t(c) * dim, dim);
        axpy(grad_score, q_row.data(), dk.data() + int64_t(c) * dim, dim);
      }
    }
  }

  const Acc scale = softmax_scale<T, Acc>(p);
  const auto grad_k = view<T>(p.grad_k, p.grad_k_batch_stride, p.grad_k_head_stride, p.grad_k_row_stride);
  const auto grad_v = view<T>(p.grad_v, p.grad_v_batch_stride, p.grad_v_head_stride, p.grad_v_row_stride);
  for (int c = 0; c < cols; ++c) {
    T* grad_k_row = grad_k.row(b, kv_head, seq.k_start + n0 + c);
    T* grad_v_row = grad_v.row(b, kv_head, seq.k_start + n0 + c);
    for (int d = 0; d < dim; ++d) {
      grad_k_row[d] = from_acc<T>(scale * dk[int64_t(c) * dim + d]);
      grad_v_row[d] = from_acc<T>(dv[int64_t(c) * dim + d]);
    }
  }
}

// dQ of query rows [m0, m0 + kBlockM) of (sequence b, head h): sums over the key tiles in order.
template <typename T, typename Acc>
void dq_tile(const AttentionBwdParams& p, const Acc* deltas, int b, int h, int m0) {
  const Sequence seq = sequence(p, b);
  const int rows = std::min(kBlockM, seq.len_q - m0);
  if (rows <= 0) return;
  const int dim = p.head_dim;
  const int kv_head = h / (p.heads_q / p.heads_kv);
  const Dropout<Acc> dropout(p);
  const Acc* lse = static_cast<const Acc*>(p.lse);

  std::vector<Acc> q(int64_t(rows) * dim), grad_out(int64_t(rows) * dim), dq(int64_t(rows) * dim, Acc(0));
  std::vector<Acc> k(int64_t(kBlockN) * dim), v(int64_t(kBlockN) * dim), scores(kBlockN);
  load_tile(view<T>(p.q, p.q_batch_stride, p.q_head_stride, p.q_row_stride), b, h, seq.q_start + m0, rows, dim,
            q.data());
  load_tile(view<T>(p.grad_out, p.grad_out_batch_stride, p.grad_out_head_stride, p.grad_out_row_stride), b, h,
            seq.q_start + m0, rows, dim, grad_out.data());

  const int key_end = attention_key_end(p, m0 + rows - 1, seq.len_q, seq.len_k);
  for (int n0 = 0; n0 < key_end; n0 += kBlockN) {
    const int cols = std::min(kBlockN, key_end - n0);
    load_tile(view<T>(p.k, p.k_batch_stride, p.k_head_stride, p.k_row_stride), b, kv_head, seq.k_start + n0, cols,
              dim, k.data());
    load_tile(view<T>(p.v, p.v_batch_stride, p.v_head_stride, p.v_row_stride), b, kv_head, seq.k_start + n0, cols,
              dim, v.data());
    for (int r = 0; r < rows; ++r) {
      const int i = m0 + r;
      const int visible = std::min(cols, attention_key_end(p, i, seq.len_q, seq.len_k) - n0);
      if (visible <= 0) continue;
      const int64_t stat = row_stat_offset(p, b, h, seq, i);
      const Acc row_lse = lse[stat];
      if (row_lse == kNegInf<Acc>) continue;
      const Acc* q_row = q.data() + int64_t(r) * dim;
      const Acc* grad_out_row = grad_out.data() + int64_t(r) * dim;
      row_scores<T>(p, q_row, k.data(), visible, dim, b, h, i, n0, scores.data());
      for (int c = 0; c < visible; ++c) {
        const Acc prob = std::exp(scores[c] - row_lse);
        const Acc factor = dropout.factor(h, seq.q_token0 + i, n0 + c);
        const Acc grad_prob = dot(grad_out_row, v.data() + int64_t(c) * dim, dim);
        const Acc grad_score = prob * (grad_prob * factor - deltas[stat]);
        axpy(grad_score, k.data() + int64_t(c) * dim, dq.data() + int64_t(r) * dim, dim);
      }
    }
  }

  const Acc scale = softmax_scale<T, Acc>(p);
  const auto grad_q = view<T>(p.grad_q, p.grad_q_batch_stride, p.grad_q_head_stride, p.grad_q_row_stride);
  for (int r = 0; r < rows; ++r) {
    T* grad_q_row = grad_q.row(b, h, seq.q_start + m0 + r);
    for (int d = 0; d < dim; ++d) grad_q_row[d] = from_acc<T>(scale * dq[int64_t(r) * dim + d]);
  }
}

template <typename T>
struct Backward {
  static void run(const AttentionBwdParams& p) {
    using Acc = typename AccType<T>::type;
    std::vector<Acc> deltas(size_t(p.heads_q) * size_t(p.total_q));
    compute_row_deltas<T>(p, deltas.data());

    const int n_blocks = ceil_div(p.seqlen_k, kBlockN);
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < p.batch; ++b)
      for (int kv_head = 0; kv_head < p.heads_kv; ++kv_head)
        for (int n_block = 0; n_block < n_blocks; ++n_block)
          dkdv_tile<T>(p, deltas.data(), b, kv_head, n_block * kBlockN);

    const int m_blocks = ceil_div(p.seqlen_q, kBlockM);
#pragma omp parallel for collapse(3) schedule(dynamic)
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_q; ++h)
        for (int m_block = 0; m_block < m_blocks; ++m_block) dq_tile<T>(p, deltas.data(), b, h, m_block * kBlockM);
  }
};

}  // namespace

Status attention_forward_cpu(const AttentionFwdParams& params, DType dtype) {
  return dispatch_cpu<Forward>(dtype, params);
}

Status attention_backward_cpu(const AttentionBwdParams& params, DType dtype) {
  return dispatch_cpu<Backward>(dtype, params);
}

}  // namespace dlk
