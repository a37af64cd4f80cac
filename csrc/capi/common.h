// C++ helpers shared by the extern "C" wrappers in csrc/capi/*: the per-thread error message and
// the guard that turns a launcher's Status (or an escaping exception) into an int and a message.
// Each library defines set_last_error in its own common_<lib> file; with -fvisibility=hidden the
// two definitions never meet, so the CPU and CUDA libraries keep separate error slots.
#pragma once

#include <exception>
#include <string>

#include "capi.h"
#include "dlk/common.h"

#define DLK_STRINGIFY_(x) #x
#define DLK_STRINGIFY(x) DLK_STRINGIFY_(x)

namespace dlk::capi {

void set_last_error(std::string message);

#ifdef DLK_CAPI_CPU  // defined by csrc/build.py for libdlk_cpu.so
// Gives the calling thread the OpenMP thread count set by dlk_cpu_set_num_threads (a per-thread setting).
void apply_cpu_threads() noexcept;
#endif

inline const char* status_text(Status status) {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kUnsupportedDType: return "unsupported dtype";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kLaunchFailed: return "kernel launch failed";
  }
  return "unknown status";
}

// Runs `launch` (returning dlk::Status) and reports failure as "<what> failed: <reason>".
template <typename Launch>
int guarded(const char* what, Launch&& launch) noexcept {
  try {
#ifdef DLK_CAPI_CPU
    apply_cpu_threads();
#endif
    const Status status = launch();
    if (status == Status::kOk) return DLK_OK;
    set_last_error(std::string(what) + " failed: " + status_text(status));
    return static_cast<int>(status);
  } catch (const std::exception& e) {
    set_last_error(std::string(what) + " failed: " + e.what());
  } catch (...) {
    set_last_error(std::string(what) + " failed: unknown C++ exception");
  }
  return DLK_ERR_INTERNAL;
}

// A dtype arrives as the int value of dlk::DType; anything else is refused before a launcher sees it.
inline bool valid_dtype(int dtype) {
  return dtype >= static_cast<int>(DType::kFloat16) && dtype <= static_cast<int>(DType::kFloat64);
}

inline int invalid_argument(const char* what, const std::string& why) {
  set_last_error(std::string(what) + ": " + why);
  return DLK_ERR_INVALID_ARGUMENT;
}

// The fused epilogues' activation (dlk/activation.h): the backward picks 1 or the slope from the
// output's sign, which is the input's only for slopes >= 0 (a NaN slope fails the comparison too).
inline int check_activation(const char* what, bool activation, double negative_slope) {
  if (activation && !(negative_slope >= 0))
    return invalid_argument(what, "negative_slope must be >= 0, got " + std::to_string(negative_slope));
  return DLK_OK;
}

}  // namespace dlk::capi
