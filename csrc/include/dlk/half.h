// Host-side fp16 / bf16 <-> fp32 conversions (round to nearest even), so the CPU reference kernels
// stay torch-free like the CUDA ones. Storage types are plain 16-bit words, layout-compatible with
// c10::Half / c10::BFloat16 and __half / __nv_bfloat16.
#pragma once

#include <cstdint>
#include <cstring>

namespace dlk {

struct Float16 { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float bits_to_float(uint32_t bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

inline float to_float(Float16 h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t exponent = (h.bits >> 10) & 0x1fu;
  const uint32_t mantissa = h.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf / NaN
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in fp32
    const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline Float16 to_float16(float f) {
  const uint32_t x = float_to_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) return {uint16_t(sign | (magnitude > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (magnitude >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to inf
  if (magnitude < 0x38800000u) {
    // Below fp16's smallest normal: adding 0.5f makes the FPU round to a multiple of 2^-24
    // (fp16's subnormal step) with ties to even; the low bits are then the subnormal mantissa.
    const float rounded = bits_to_float(magnitude) + 0.5f;
    return {uint16_t(sign | (float_to_bits(rounded) - 0x3f000000u))};
  }
  const uint32_t odd = (magnitude >> 13) & 1u;
  // Rebias the exponent (127 -> 15) and round the dropped 13 mantissa bits to nearest even.
  return {uint16_t(sign | ((magnitude + 0xc8000fffu + odd) >> 13))};
}

inline float to_float(BFloat16 b) { return bits_to_float(uint32_t(b.bits) << 16); }

inline BFloat16 to_bfloat16(float f) {
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return {uint16_t(((x >> 16) & 0x8000u) | 0x7fc0u)};  // NaN
  return {uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}

// Accumulation type and conversions used by templated CPU kernels.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

inline float to_acc(float v) { return v; }
inline double to_acc(double v) { return v; }
inline float to_acc(Float16 v) { return to_float(v); }
inline float to_acc(BFloat16 v) { return to_float(v); }

template <typename T> inline T from_acc(typename AccType<T>::type v) { return T(v); }
template <> inline Float16 from_acc<Float16>(float v) { return to_float16(v); }
template <> inline BFloat16 from_acc<BFloat16>(float v) { return to_bfloat16(v); }

}  // namespace dlk
