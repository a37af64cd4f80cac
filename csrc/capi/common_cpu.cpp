// Library-wide exports of libdlk_cpu.so: ABI version, last error, build info.
#include <omp.h>

#include <atomic>
#include <string>

#include "common.h"
#include "dlk_build_info.h"  // generated into build/native/include by csrc/build.py

namespace dlk::capi {
namespace {
thread_local std::string last_error;
std::atomic<int> requested_threads{0};
}  // namespace

void set_last_error(std::string message) { last_error = std::move(message); }

void apply_cpu_threads() noexcept {
  const int threads = requested_threads.load(std::memory_order_relaxed);
  if (threads > 0 && omp_get_max_threads() != threads) omp_set_num_threads(threads);
}

}  // namespace dlk::capi

DLK_API int dlk_cpu_abi_version(void) { return DLK_ABI_VERSION; }

DLK_API void dlk_cpu_set_num_threads(int num_threads) {
  dlk::capi::requested_threads.store(num_threads > 0 ? num_threads : 0, std::memory_order_relaxed);
}

DLK_API const char* dlk_cpu_last_error(void) { return dlk::capi::last_error.c_str(); }

// Written by csrc/build.py from what it knows of the build (compiler, flags).
DLK_API const char* dlk_cpu_build_info(void) { return DLK_CPU_BUILD_INFO; }
