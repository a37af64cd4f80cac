#include "rnn.h"

#include <cmath>
#include <utility>
#include <vector>

#include "dispatch.h"
#include "dlk/half.h"

namespace dlk {
namespace {

// A step's work is one (B, H) x (H, G*H) product: below this many multiply-adds, waking the OpenMP
// threads (T times per layer) costs more than it saves, and on few cores their spin-waiting fights
// torch's own thread pool.
constexpr int64_t kMinParallelStepWork = int64_t(1) << 18;

template <typename Acc>
Acc sigmoid(Acc x) { return Acc(1) / (Acc(1) + std::exp(-x)); }

template <typename T, typename Acc = typename AccType<T>::type>
std::vector<Acc> to_acc_vector(const void* data, int64_t count) {
  const T* in = static_cast<const T*>(data);
  std::vector<Acc> out(count);
  for (int64_t i = 0; i < count; ++i) out[i] = to_acc(in[i]);
  return out;
}

// The time index whose state step t starts from (-1: the initial state h0 / c0). Only meaningful at
// a valid step: forward, step t follows t - 1; reverse, t + 1 unless t is b's last valid step.
int64_t rnn_prev_time(const RnnParams& p, int64_t t, int64_t b) {
  if (!p.reverse) return t - 1;
  const int64_t length = p.lengths ? p.lengths[b] : p.steps;
  return t + 1 < length ? t + 1 : -1;
}

template <typename T>
void forward(const RnnFwdParams& p) {
  using Acc = typename AccType<T>::type;
  const int64_t B = p.batch, H = p.hidden, G = rnn_gate_count(p.cell), GH = G * H;
  const bool lstm = p.cell == RnnCell::kLSTM;
  const T* x_proj = static_cast<const T*>(p.x_proj);
  T* h_all = static_cast<T*>(p.h_all);
  Acc* c_all = static_cast<Acc*>(p.c_all);
  Acc* saved = p.training ? static_cast<Acc*>(p.saved) : nullptr;
  const std::vector<Acc> w = to_acc_vector<T>(p.w_hh, GH * H);
  const std::vector<Acc> b_hh = (!lstm && p.b_hh) ? to_acc_vector<T>(p.b_hh, GH) : std::vector<Acc>(GH, Acc(0));
  // h is carried as the input dtype rounds it (what h_all stores and the next step's GEMM reads);
  // c stays in the accumulation dtype.
  std::vector<Acc> h = to_acc_vector<T>(p.h0, B * H), h_next(B * H);
  std::vector<Acc> c = lstm ? to_acc_vector<T>(p.c0, B * H) : std::vector<Acc>();

  const bool parallel = B * GH * H >= kMinParallelStepWork;
  for (int64_t s = 0; s < p.steps; ++s) {
    const int64_t t = rnn_time_at(p, s);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t bj = 0; bj < B * H; ++bj) {
      const int64_t b = bj / H, j = bj % H, row = t * B + b;
      Acc* saved_row = saved ? saved + row * 4 * H : nullptr;
      if (!rnn_step_valid(p, t, b)) {  // padding: the state passes through, the output is zero
        h_next[bj] = h[bj];
        h_all[row * H + j] = from_acc<T>(Acc(0));
        if (lstm) c_all[row * H + j] = c[bj];
        if (saved_row)
          for (int64_t k = 0; k < 4; ++k) saved_row[k * H + j] = Acc(0);
        continue;
      }
      Acc gh[4] = {0, 0, 0, 0};  // h_{t-1} W_hh^T for this unit's G gates
      const Acc* h_prev = h.data() + b * H;
      for (int64_t g = 0; g < G; ++g) {
        const Acc* w_row = w.data() + (g * H + j) * H;
        Acc sum = 0;
        for (int64_t k = 0; k < H; ++k) sum += h_prev[k] * w_row[k];
        gh[g] = sum;
      }
      const T* xp = x_proj + row * GH;
      Acc h_new;
      if (lstm) {
        const Acc i = sigmoid(to_acc(xp[j]) + gh[0]);
        const Acc f = sigmoid(to_acc(xp[H + j]) + gh[1]);
        const Acc g = std::tanh(to_acc(xp[2 * H + j]) + gh[2]);
        const Acc o = sigmoid(to_acc(xp[3 * H + j]) + gh[3]);
        const Acc c_new = f * c[bj] + i * g;  // c[bj] is read and written by this iteration only
        h_new = o * std::tanh(c_new);
        c[bj] = c_new;
        c_all[row * H + j] = c_new;
        if (saved_row) {
          saved_row[j] = i;
          saved_row[H + j] = f;
          saved_row[2 * H + j] = g;
          saved_row[3 * H + j] = o;
        }
      } else {
        const Acc r = sigmoid(to_acc(xp[j]) + gh[0] + b_hh[j]);
        const Acc z = sigmoid(to_acc(xp[H + j]) + gh[1] + b_hh[H + j]);
        const Acc hn = gh[2] + b_hh[2 * H + j];
        const Acc n = std::tanh(to_acc(xp[2 * H + j]) + r * hn);
        h_new = (Acc(1) - z) * n + z * h[bj];
        if (saved_row) {
          saved_row[j] = r;
          saved_row[H + j] = z;
          saved_row[2 * H + j] = n;
          saved_row[3 * H + j] = hn;
        }
      }
      const T h_stored = from_acc<T>(h_new);
      h_all[row * H + j] = h_stored;
      h_next[bj] = to_acc(h_stored);
    }
    std::swap(h, h_next);
  }
  T* h_n = static_cast<T*>(p.h_n);
  T* c_n = static_cast<T*>(p.c_n);
  for (int64_t i = 0; i < B * H; ++i) {
    h_n[i] = from_acc<T>(h[i]);
    if (lstm) c_n[i] = from_acc<T>(c[i]);
  }
}

template <typename T>
void backward(const RnnBwdParams& p) {
  using Acc = typename AccType<T>::type;
  const int64_t T_steps = p.steps, B = p.batch, H = p.hidden, G = rnn_gate_count(p.cell), GH = G * H;
  const bool lstm = p.cell == RnnCell::kLSTM;
  const T* h0 = static_cast<const T*>(p.h0);
  const T* c0 = static_cast<const T*>(p.c0);
  const T* h_all = static_cast<const T*>(p.h_all);
  const Acc* c_all = static_cast<const Acc*>(p.c_all);
  const Acc* saved = static_cast<const Acc*>(p.saved);
  const T* grad_h_all = static_cast<const T*>(p.grad_h_all);
  Acc* grad_x_proj = static_cast<Acc*>(p.grad_x_proj);
  Acc* grad_gh = static_cast<Acc*>(p.grad_gh);

  // W_hh transposed to (H, G*H): the step's dh_{t-1}[k] = sum_j grad_gh[j] W_hh[j, k] reads a row.
  std::vector<Acc> w_t(H * GH);
  {
    const std::vector<Acc> w = to_acc_vector<T>(p.w_hh, GH * H);
    for (int64_t j = 0; j < GH; ++j)
      for (int64_t k = 0; k < H; ++k) w_t[k * GH + j] = w[j * H + k];
  }
  auto zeros_or = [&](const void* grad) {
    return grad ? to_acc_vector<T>(grad, B * H) : std::vector<Acc>(B * H, Acc(0));
  };
  std::vector<Acc> dh = zeros_or(p.grad_h_n), dh_next(B * H);
  std::vector<Acc> dc = lstm ? zeros_or(p.grad_c_n) : std::vector<Acc>();
  std::vector<Acc> dh_direct(B * H, Acc(0));  // GRU's z * dh_t, which bypasses W_hh
  std::vector<Acc> step_grad_gh(B * GH);      // this step's d loss / d (h_{t-1} W_hh^T + b_hh)

  const bool parallel = B * GH * H >= kMinParallelStepWork;
  for (int64_t s = T_steps - 1; s >= 0; --s) {
    const int64_t t = rnn_time_at(p, s);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t bj = 0; bj < B * H; ++bj) {
      const int64_t b = bj / H, j = bj % H, row = t * B + b;
      Acc* gx = grad_x_proj + row * GH;
      Acc* gh = step_grad_gh.data() + b * GH;
      if (!rnn_step_valid(p, t, b)) {  // padding: no gate gradient; dh and dc pass through
        for (int64_t g = 0; g < G; ++g) {
          gx[g * H + j] = gh[g * H + j] = Acc(0);
          if (grad_gh) grad_gh[row * GH + g * H + j] = Acc(0);
        }
        continue;
      }
      const Acc dh_t = dh[bj] + (grad_h_all ? to_acc(grad_h_all[row * H + j]) : Acc(0));
      const Acc* saved_row = saved + row * 4 * H;
      const int64_t prev = rnn_prev_time(p, t, b);
      if (lstm) {
        const Acc i = saved_row[j], f = saved_row[H + j], g = saved_row[2 * H + j], o = saved_row[3 * H + j];
        const Acc c_prev = prev < 0 ? to_acc(c0[bj]) : c_all[(prev * B + b) * H + j];
        const Acc tanh_c = std::tanh(c_all[row * H + j]);
        const Acc dc_t = dc[bj] + dh_t * o * (Acc(1) - tanh_c * tanh_c);
        gx[j] = dc_t * g * i * (Acc(1) - i);
        gx[H + j] = dc_t * c_prev * f * (Acc(1) - f);
        gx[2 * H + j] = dc_t * i * (Acc(1) - g * g);
        gx[3 * H + j] = dh_t * tanh_c * o * (Acc(1) - o);
        for (int64_t k = 0; k < 4; ++k) gh[k * H + j] = gx[k * H + j];
        dc[bj] = dc_t * f;
      } else {
        const Acc r = saved_row[j], z = saved_row[H + j], n = saved_row[2 * H + j], hn = saved_row[3 * H + j];
        const Acc h_prev = to_acc(prev < 0 ? h0[bj] : h_all[(prev * B + b) * H + j]);
        const Acc dn_pre = dh_t * (Acc(1) - z) * (Acc(1) - n * n);
        const Acc dr_pre = dn_pre * hn * r * (Acc(1) - r);
        const Acc dz_pre = dh_t * (h_prev - n) * z * (Acc(1) - z);
        gx[j] = gh[j] = dr_pre;
        gx[H + j] = gh[H + j] = dz_pre;
        gx[2 * H + j] = dn_pre;
        gh[2 * H + j] = dn_pre * r;  // n = tanh(x_n + r * hn): hn's gradient is scaled by r
        for (int64_t k = 0; k < 3; ++k) grad_gh[row * GH + k * H + j] = gh[k * H + j];
        dh_direct[bj] = dh_t * z;
      }
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t bk = 0; bk < B * H; ++bk) {
      const int64_t b = bk / H, k = bk % H;
      if (!rnn_step_valid(p, t, b)) {
        dh_next[bk] = dh[bk];
        continue;
      }
      const Acc* gh = step_grad_gh.data() + b * GH;
      const Acc* w_col = w_t.data() + k * GH;
      Acc sum = lstm ? Acc(0) : dh_direct[bk];
      for (int64_t j = 0; j < GH; ++j) sum += gh[j] * w_col[j];
      dh_next[bk] = sum;
    }
    std::swap(dh, dh_next);
  }
  T* grad_h0 = static_cast<T*>(p.grad_h0);
  T* grad_c0 = static_cast<T*>(p.grad_c0);
  for (int64_t i = 0; i < B * H; ++i) {
    grad_h0[i] = from_acc<T>(dh[i]);
    if (lstm) grad_c0[i] = from_acc<T>(dc[i]);
  }
}

template <typename T> struct Forward { static void run(const RnnFwdParams& p) { forward<T>(p); } };
template <typename T> struct Backward { static void run(const RnnBwdParams& p) { backward<T>(p); } };

}  // namespace

Status rnn_forward_cpu(const RnnFwdParams& p, DType dtype) { return dispatch_cpu<Forward>(dtype, p); }
Status rnn_backward_cpu(const RnnBwdParams& p, DType dtype) { return dispatch_cpu<Backward>(dtype, p); }

}  // namespace dlk
