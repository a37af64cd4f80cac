// Library-wide exports of libdlk_cuda.so: ABI version, last error, build info.
#include <string>

#include "common.h"
#include "dlk_build_info.h"  // generated into build/native/include by csrc/build.py

namespace dlk::capi {
namespace {
thread_local std::string last_error;
}  // namespace

void set_last_error(std::string message) { last_error = std::move(message); }

}  // namespace dlk::capi

DLK_API int dlk_cuda_abi_version(void) { return DLK_ABI_VERSION; }

DLK_API const char* dlk_cuda_last_error(void) { return dlk::capi::last_error.c_str(); }

// Written by csrc/build.py from what it knows of the build (nvcc, archs, PTX).
DLK_API const char* dlk_cuda_build_info(void) { return DLK_CUDA_BUILD_INFO; }
