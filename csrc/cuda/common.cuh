// Device helpers shared by the CUDA kernels: dtype conversions with an accumulate type, vector
// accesses, fast division by loop-invariant divisors. Torch-free, like every file here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "dlk/common.h"
#include "launch.cuh"

namespace dlk {

// Vector accesses are at most 16 bytes, the widest single load/store before sm_100.
constexpr int kMaxVectorBytes = 16;

// `#pragma unroll` for the device pass only; host compilers warn about the unknown pragma.
#ifdef __CUDA_ARCH__
#define DLK_UNROLL _Pragma("unroll")
#else
#define DLK_UNROLL
#endif

template <typename T> struct AccumulateTypeOf { using type = float; };
template <> struct AccumulateTypeOf<double> { using type = double; };
template <typename T> using AccumulateType = typename AccumulateTypeOf<T>::type;

// Host-callable as well (DLK_HOST_DEVICE): the kernels' per-element code can then be run by a host
// harness against torch without a GPU.
DLK_HOST_DEVICE float to_accumulate(__half v) { return __half2float(v); }
DLK_HOST_DEVICE float to_accumulate(__nv_bfloat16 v) { return __bfloat162float(v); }
DLK_HOST_DEVICE float to_accumulate(float v) { return v; }
DLK_HOST_DEVICE double to_accumulate(double v) { return v; }

// Round to nearest even, as torch's own casts from float do.
template <typename T> DLK_HOST_DEVICE T from_accumulate(AccumulateType<T> v);
template <> DLK_HOST_DEVICE __half from_accumulate<__half>(float v) { return __float2half_rn(v); }
template <> DLK_HOST_DEVICE __nv_bfloat16 from_accumulate<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> DLK_HOST_DEVICE float from_accumulate<float>(float v) { return v; }
template <> DLK_HOST_DEVICE double from_accumulate<double>(double v) { return v; }

// N consecutive elements moved by one load/store instruction; the alignment is what makes the
// compiler emit a single vector access.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vector {
  T val[N];
};

// Integer division by a loop-invariant divisor. Splitting a flat index into (n, c, h, w) costs two
// or three divisions per element, and a 64-bit division is a ~70-instruction subroutine on the GPU:
// enough to make this memory-bound kernel compute-bound. When the tensor has fewer than 2^31
// elements we use the multiply-high-and-shift method (Granlund & Montgomery), valid for numerators
// and divisors below 2^31; larger tensors fall back to plain 64-bit division.
template <typename IndexT> struct Divider;

template <> struct Divider<uint32_t> {
  uint32_t divisor = 1, magic = 1, shift = 0;
  Divider() = default;
  explicit Divider(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t(1) << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  DLK_HOST_DEVICE void divmod(uint32_t n, uint32_t& quotient, uint32_t& remainder) const {
#ifdef __CUDA_ARCH__
    const uint32_t high = __umulhi(n, magic);
#else
    const uint32_t high = static_cast<uint32_t>((uint64_t(n) * magic) >> 32);
#endif
    quotient = (high + n) >> shift;
    remainder = n - quotient * divisor;
  }
};

template <> struct Divider<uint64_t> {
  uint64_t divisor = 1;
  Divider() = default;
  explicit Divider(uint64_t d) : divisor(d) {}
  DLK_HOST_DEVICE void divmod(uint64_t n, uint64_t& quotient, uint64_t& remainder) const {
    quotient = n / divisor;
    remainder = n - quotient * divisor;
  }
};

// Runtime -> compile-time dispatch, once per launch: fn receives a tag whose ::type is the choice.
template <typename T> struct TypeTag { using type = T; };

template <typename Fn>
Status dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat16: return fn(TypeTag<__half>{});
    case DType::kBFloat16: return fn(TypeTag<__nv_bfloat16>{});
    case DType::kFloat32: return fn(TypeTag<float>{});
    case DType::kFloat64: return fn(TypeTag<double>{});
  }
  return Status::kUnsupportedDType;
}

// fn(std::integral_constant<int, v>) for the v of `list` equal to value; `otherwise` (whose type is
// the result's) when none is. The lists are generated (generate_kernels.py), so a switch over them
// can never disagree with the instantiations.
template <typename R, int... kValues, typename Fn>
R dispatch_int(std::integer_sequence<int, kValues...> /*list*/, int value, R otherwise, Fn&& fn) {
  R result = otherwise;
  (void)((value == kValues && (result = fn(std::integral_constant<int, kValues>{}), true)) || ...);
  return result;
}

// 32-bit index arithmetic (with Divider<uint32_t>) when the launcher has checked it cannot overflow.
template <typename Fn>
Status dispatch_index_type(bool use_32bit, Fn&& fn) {
  if (use_32bit) return fn(TypeTag<uint32_t>{});
  return fn(TypeTag<uint64_t>{});
}

}  // namespace dlk
