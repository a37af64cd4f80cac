#include "pool2d.h"

#include <cmath>
#include <limits>

#include "dispatch.h"
#include "dlk/half.h"

namespace dlk {
namespace {

template <typename Acc>
bool is_nan(Acc v) { return v != v; }

PoolSpan span_h(const Pool2dParams& p, int64_t o) {
  switch (p.mode) {
    case PoolMode::kMax: return max_pool_span(o, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
    case PoolMode::kAvg: return avg_pool_span(o, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.count_include_pad);
    default: return adaptive_pool_span(o, p.in_h, p.out_h);
  }
}

PoolSpan span_w(const Pool2dParams& p, int64_t o) {
  switch (p.mode) {
    case PoolMode::kMax: return max_pool_span(o, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
    case PoolMode::kAvg: return avg_pool_span(o, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.count_include_pad);
    default: return adaptive_pool_span(o, p.in_w, p.out_w);
  }
}

template <typename Acc>
Acc divisor(const Pool2dParams& p, const PoolSpan& sh, const PoolSpan& sw) {
  if (p.mode == PoolMode::kAvg && p.divisor_override != 0) return Acc(p.divisor_override);
  return Acc(sh.count * sw.count);
}

template <typename T>
void forward(const Pool2dFwdParams& p) {
  using Acc = typename AccType<T>::type;
  const T* in = static_cast<const T*>(p.input);
  T* out = static_cast<T*>(p.output);
  const int64_t planes = p.batch * p.channels;
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t n = plane / p.channels, c = plane % p.channels;
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const PoolSpan sh = span_h(p, oh);
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const PoolSpan sw = span_w(p, ow);
        const int64_t out_at = pool_offset(n, c, oh, ow, p.channels, p.out_h, p.out_w, p.channels_last);
        if (p.mode == PoolMode::kMax) {
          Acc best = -std::numeric_limits<Acc>::infinity();
          int64_t best_index = sh.begin * p.in_w + sw.begin;
          for (int64_t h = sh.begin; h < sh.end; h += sh.step) {
            for (int64_t w = sw.begin; w < sw.end; w += sw.step) {
              const Acc v = to_acc(in[pool_offset(n, c, h, w, p.channels, p.in_h, p.in_w, p.channels_last)]);
              if (v > best || is_nan(v)) {
                best = v;
                best_index = h * p.in_w + w;
              }
            }
          }
          out[out_at] = from_acc<T>(best);
          if (p.indices != nullptr) p.indices[out_at] = best_index;  // null: no gradient will be asked for
        } else {
          Acc sum = 0;
          for (int64_t h = sh.begin; h < sh.end; ++h)
            for (int64_t w = sw.begin; w < sw.end; ++w)
              sum += to_acc(in[pool_offset(n, c, h, w, p.channels, p.in_h, p.in_w, p.channels_last)]);
          const bool empty = sh.begin >= sh.end || sw.begin >= sw.end;
          out[out_at] = from_acc<T>(empty ? Acc(0) : sum / divisor<Acc>(p, sh, sw));
        }
      }
    }
  }
}

// Gather formulation, mirroring the CUDA kernel: each input element sums the gradients of the
// outputs whose window selected it, in output order.
template <typename T>
void backward(const Pool2dBwdParams& p) {
  using Acc = typename AccType<T>::type;
  const T* grad_out = static_cast<const T*>(p.grad_output);
  T* grad_in = static_cast<T*>(p.grad_input);
  const int64_t planes = p.batch * p.channels;
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t n = plane / p.channels, c = plane % p.channels;
    for (int64_t h = 0; h < p.in_h; ++h) {
      int64_t oh_first, oh_last;
      pool_output_range(h, p.in_h, p.out_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, p.mode, &oh_first, &oh_last);
      for (int64_t w = 0; w < p.in_w; ++w) {
        int64_t ow_first, ow_last;
        pool_output_range(w, p.in_w, p.out_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, p.mode, &ow_first, &ow_last);
        Acc grad = 0;
        for (int64_t oh = oh_first; oh < oh_last; ++oh) {
          const PoolSpan sh = span_h(p, oh);
          for (int64_t ow = ow_first; ow < ow_last; ++ow) {
            const int64_t out_at = pool_offset(n, c, oh, ow, p.channels, p.out_h, p.out_w, p.channels_last);
            const PoolSpan sw = span_w(p, ow);
            if (p.mode == PoolMode::kMax) {
              // A window whose taps all fall in the padding read no input, whatever index ATen seeded it
              // with: its gradient goes nowhere (torch's CPU kernel adds it at that index, even past the plane).
              const bool empty = sh.begin >= sh.end || sw.begin >= sw.end;
              if (!empty && p.indices[out_at] == h * p.in_w + w) grad += to_acc(grad_out[out_at]);
              continue;
            }
            if (h < sh.begin || h >= sh.end || w < sw.begin || w >= sw.end) continue;
            grad += to_acc(grad_out[out_at]) / divisor<Acc>(p, sh, sw);
          }
        }
        grad_in[pool_offset(n, c, h, w, p.channels, p.in_h, p.in_w, p.channels_last)] = from_acc<T>(grad);
      }
    }
  }
}

template <typename T> struct Forward { static void run(const Pool2dFwdParams& p) { forward<T>(p); } };
template <typename T> struct Backward { static void run(const Pool2dBwdParams& p) { backward<T>(p); } };

}  // namespace

Status pool2d_forward_cpu(const Pool2dFwdParams& params, DType dtype) {
  return dispatch_cpu<Forward>(dtype, params);
}

Status pool2d_backward_cpu(const Pool2dBwdParams& params, DType dtype) {
  return dispatch_cpu<Backward>(dtype, params);
}

}  // namespace dlk
