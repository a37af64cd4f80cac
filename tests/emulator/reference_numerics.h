// Rounding facts of the kernels' dtypes for the emulator programs' references and tolerances
// (winograd_emulate.cpp, depthwise_emulate.cpp). Include after the kernel headers (dlk::DType,
// to_accumulate / from_accumulate) and harness.h.
#pragma once

#include <cstring>
#include <type_traits>

namespace dlk_emu {

template <typename T> double value(T v) { return double(dlk::to_accumulate(v)); }
template <typename T> T store(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return dlk::from_accumulate<T>(float(v));
}
template <typename T> constexpr dlk::DType dtype_of() {
  if constexpr (std::is_same_v<T, __half>) return dlk::DType::kFloat16;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return dlk::DType::kBFloat16;
  else if constexpr (std::is_same_v<T, float>) return dlk::DType::kFloat32;
  else return dlk::DType::kFloat64;
}
template <typename T> constexpr double unit_roundoff() {
  if constexpr (std::is_same_v<T, __half>) return 0x1p-11;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return 0x1p-8;
  else if constexpr (std::is_same_v<T, float>) return 0x1p-24;
  else return 0x1p-53;
}
// Absolute rounding error below T's normal range (fp16's subnormals).
template <typename T> constexpr double underflow_floor() {
  if constexpr (std::is_same_v<T, __half>) return 0x1p-25;
  else if constexpr (std::is_same_v<T, double>) return 0x1p-1074;
  else return 0x1p-150;
}

// Every byte 0xFF: NaN in every float type, so an output the kernels never write fails its check.
template <typename T>
void fill_nan(Buffer<T>& b) {
  std::memset(b.storage.data(), 0xFF, b.storage.size() * sizeof(b.storage[0]));
}

}  // namespace dlk_emu
