// Library-wide exports of libdlk_cpu.so: ABI version, last error, build info.
#include <string>

#include "common.h"
#include "dlk_build_info.h"  // generated into build/native/include by csrc/build.py

namespace dlk::capi {
namespace {
thread_local std::string last_error;
}  // namespace

void set_last_error(std::string message) { last_error = std::move(message); }

}  // namespace dlk::capi

DLK_API int dlk_cpu_abi_version(void) { return DLK_ABI_VERSION; }

DLK_API const char* dlk_cpu_last_error(void) { return dlk::capi::last_error.c_str(); }

// Written by csrc/build.py from what it knows of the build (compiler, flags).
DLK_API const char* dlk_cpu_build_info(void) { return DLK_CPU_BUILD_INFO; }
