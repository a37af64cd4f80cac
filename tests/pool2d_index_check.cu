// Host check of the pooling kernels' window index math (csrc/cuda/pool2d_index.cuh): output_range and
// adaptive_span with precomputed 32-bit (and 64-bit) dividers against dlk/pool2d.h's int64 formulas,
// exhaustively on small axes and sampled on axes near the 32-bit limits of plan::pool2d_fits_int32.
// Runs on the CPU (no kernel is launched). Prints "ok <checks>" or the first mismatches; exit 1 on any.
#include <cstdio>
#include <vector>

#include "../csrc/cuda/pool2d_index.cuh"

namespace {

using dlk::PoolMode;
long long checks = 0, failures = 0;

void fail(const char* what, int64_t in, int64_t out, int kernel, int stride, int pad, int dilation, int64_t i,
          int64_t got_first, int64_t got_last, int64_t want_first, int64_t want_last) {
  if (++failures <= 10) {
    std::printf("%s in=%lld out=%lld kernel=%d stride=%d pad=%d dilation=%d at %lld: "
                "got [%lld, %lld) want [%lld, %lld)\n",
                what, (long long)in, (long long)out, kernel, stride, pad, dilation, (long long)i, (long long)got_first,
                (long long)got_last, (long long)want_first, (long long)want_last);
  }
}

template <PoolMode kMode, typename IndexT>
void check_axis(int64_t in, int64_t out, int kernel, int stride, int pad, int dilation,
                const std::vector<int64_t>& positions, const std::vector<int64_t>& outputs) {
  const dlk::PoolAxis<IndexT> axis = dlk::make_axis<IndexT>(kMode, in, out, kernel, stride, pad, dilation);
  for (int64_t i : positions) {
    int64_t want_first, want_last;
    dlk::pool_output_range(i, in, out, kernel, stride, pad, dilation, kMode, &want_first, &want_last);
    IndexT first, last;
    dlk::output_range<kMode>(static_cast<IndexT>(i), axis, first, last);
    ++checks;
    // An empty range may be written with any first >= last; both sides clamp last to out.
    const bool same = int64_t(first) == want_first && int64_t(last) == want_last;
    const bool both_empty = int64_t(first) >= int64_t(last) && want_first >= want_last;
    if (!same && !both_empty) {
      fail("output_range", in, out, kernel, stride, pad, dilation, i, first, last, want_first, want_last);
    }
  }
  if constexpr (kMode == PoolMode::kAdaptiveAvg) {
    for (int64_t o : outputs) {
      const dlk::PoolSpan want = dlk::adaptive_pool_span(o, in, out);
      const dlk::PoolSpan got = dlk::adaptive_span(static_cast<IndexT>(o), axis);
      ++checks;
      if (got.begin != want.begin || got.end != want.end || got.count != want.count) {
        fail("adaptive_span", in, out, kernel, stride, pad, dilation, o, got.begin, got.end, want.begin, want.end);
      }
    }
  }
}

std::vector<int64_t> all_below(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

// The first and last `edge` positions below n and a stride of samples in between.
std::vector<int64_t> sampled_below(int64_t n, int64_t edge = 2000) {
  if (n <= 3 * edge) return all_below(n);
  std::vector<int64_t> v;
  for (int64_t i = 0; i < edge; ++i) v.push_back(i);
  for (int64_t i = edge; i < n - edge; i += (n - 2 * edge) / 1000 + 1) v.push_back(i);
  for (int64_t i = n - edge; i < n; ++i) v.push_back(i);
  return v;
}

template <typename IndexT>
void check_all(int64_t limit) {
  for (int64_t in = 1; in <= limit; ++in) {
    for (int kernel = 1; kernel <= 4; ++kernel) {
      for (int stride = 1; stride <= 3; ++stride) {
        for (int pad = 0; pad <= kernel / 2; ++pad) {
          for (int dilation = 1; dilation <= 3; ++dilation) {
            const int64_t extent = int64_t(kernel - 1) * dilation + 1;
            if (in + 2 * pad < extent) continue;
            for (int ceil_mode = 0; ceil_mode <= 1; ++ceil_mode) {
              int64_t out = (in + 2 * pad - extent + (ceil_mode ? stride - 1 : 0)) / stride + 1;
              if (ceil_mode && (out - 1) * stride >= in + pad) --out;  // ATen: the last window starts inside
              check_axis<PoolMode::kMax, IndexT>(in, out, kernel, stride, pad, dilation, all_below(in), {});
              if (dilation == 1) check_axis<PoolMode::kAvg, IndexT>(in, out, kernel, stride, pad, 1, all_below(in), {});
            }
          }
        }
      }
    }
    for (int64_t out = 1; out <= limit; ++out) {
      check_axis<PoolMode::kAdaptiveAvg, IndexT>(in, out, 1, 1, 0, 1, all_below(in), all_below(out));
    }
  }
}

}  // namespace

int main() {
  check_all<uint32_t>(24);
  check_all<uint64_t>(24);
  // Near the 32-bit limits: adaptive products in * out + max(in, out) up to INT32_MAX, and long axes
  // whose padded positions and window extents approach 2^31 (plan::pool2d_fits_int32's bounds).
  const int64_t adaptive[][2] = {{46340, 46340}, {46341, 46339}, {65535, 32767}, {1 << 20, 2047}, {7, 1}, {3, 46340}};
  for (const auto& a : adaptive) {
    check_axis<PoolMode::kAdaptiveAvg, uint32_t>(a[0], a[1], 1, 1, 0, 1, sampled_below(a[0]), sampled_below(a[1]));
  }
  const int64_t long_in = (int64_t(1) << 31) - 64;
  check_axis<PoolMode::kMax, uint32_t>(long_in, (long_in + 2 - 3) / 2 + 1, 3, 2, 1, 1, sampled_below(long_in), {});
  check_axis<PoolMode::kMax, uint32_t>(long_in, (long_in + 4 - 9) / 3 + 1, 3, 3, 2, 4, sampled_below(long_in), {});
  check_axis<PoolMode::kAvg, uint32_t>(long_in, (long_in + 2 - 4) / 1 + 1, 4, 1, 1, 1, sampled_below(long_in), {});
  if (failures > 0) {
    std::printf("FAILED %lld of %lld checks\n", failures, checks);
    return 1;
  }
  std::printf("ok %lld\n", checks);
  return 0;
}
