// Pooling window index math with precomputed divisions, shared by the CUDA kernels (pool2d.cu) and
// the host check tests/pool2d_index_check.cu, which compares it with dlk/pool2d.h's 64-bit formulas.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common.cuh"
#include "dlk/pool2d.h"

namespace dlk {

// One spatial axis of the window geometry, with its divisions precomputed: a gather-style backward
// thread needs the range of outputs whose window holds its element (two divisions by the stride, or
// by the input extent for adaptive windows) and adaptive windows divide by the output extent. As
// 64-bit divisions (a ~70-instruction subroutine each) these made the NCHW backward compute-bound;
// with 32-bit indices they are a multiply-high and a shift (Divider<uint32_t>).
template <typename IndexT>
struct PoolAxis {
  IndexT in = 0, out = 0, pad = 0, extent = 1;  // extent: the window's reach, (kernel - 1) * dilation + 1
  Divider<IndexT> by_stride, by_in, by_out;     // divisors of at least 1 (the magic numbers need d > 0)
};

template <typename IndexT>
PoolAxis<IndexT> make_axis(PoolMode mode, int64_t in, int64_t out, int kernel, int stride, int pad, int dilation) {
  PoolAxis<IndexT> a;
  a.in = static_cast<IndexT>(in);
  a.out = static_cast<IndexT>(out);
  a.pad = static_cast<IndexT>(mode == PoolMode::kAdaptiveAvg ? 0 : pad);
  a.extent = static_cast<IndexT>(mode == PoolMode::kAdaptiveAvg ? 1
                                 : int64_t(kernel - 1) * (mode == PoolMode::kMax ? dilation : 1) + 1);
  a.by_stride = Divider<IndexT>(static_cast<IndexT>(std::max(stride, 1)));
  a.by_in = Divider<IndexT>(static_cast<IndexT>(std::max<int64_t>(in, 1)));
  a.by_out = Divider<IndexT>(static_cast<IndexT>(std::max<int64_t>(out, 1)));
  return a;
}

template <typename IndexT>
DLK_HOST_DEVICE IndexT quotient(const Divider<IndexT>& d, IndexT n) {
  IndexT q, r;
  d.divmod(n, q, r);
  return q;
}

// adaptive_pool_span (dlk/pool2d.h) with the divisions by `out` precomputed.
template <typename IndexT>
DLK_HOST_DEVICE PoolSpan adaptive_span(IndexT o, const PoolAxis<IndexT>& a) {
  const IndexT begin = quotient(a.by_out, o * a.in);
  const IndexT end = quotient(a.by_out, (o + 1) * a.in + a.out - 1);
  return {int64_t(begin), int64_t(end), 1, int64_t(end - begin)};
}

// pool_output_range (dlk/pool2d.h) with precomputed divisions: outputs [first, last) along one axis
// whose window may contain input position i.
template <PoolMode kMode, typename IndexT>
DLK_HOST_DEVICE void output_range(IndexT i, const PoolAxis<IndexT>& a, IndexT& first, IndexT& last) {
  if constexpr (kMode == PoolMode::kAdaptiveAvg) {
    first = quotient(a.by_in, i * a.out);
    last = quotient(a.by_in, (i + 1) * a.out + a.in - 1);
  } else {
    const IndexT padded = i + a.pad;
    first = padded < a.extent ? IndexT(0) : quotient(a.by_stride, padded - a.extent) + 1;
    last = quotient(a.by_stride, padded) + 1;
  }
  if (last > a.out) last = a.out;
}

}  // namespace dlk
