// The C ABI of dlkernels' compiled core: what libdlk_cpu.so and libdlk_cuda.so export.
//
// Python loads the libraries with ctypes (dlkernels/_native), so everything here is plain C:
//   - exported names are dlk_<family>_<entry>_cpu(...) and dlk_<family>_<entry>_cuda(..., void* stream);
//   - arguments are flat: const void*/void* data pointers, int64_t sizes, int flags and enums (a dtype
//     travels as the int value of dlk::DType), double scalars. No structs cross the boundary: the
//     params structs have base classes with default member initialisers, so their layout is the
//     compiler's business, and a ctypes mirror could silently mislay fields;
//   - every launcher returns int: 0 on success, else a failure code (DLK_ERR_*) with a message that
//     dlk_<lib>_last_error() returns on the same thread until the next failing call.
// Each library exports its own dlk_<lib>_abi_version / _last_error / _build_info (lib = cpu or cuda)
// so that both can be loaded side by side. Bump DLK_ABI_VERSION whenever an exported signature
// changes: dlkernels/_native refuses a library whose version differs from its own.
#pragma once

#ifdef __cplusplus
#include <cstddef>
#include <cstdint>
#define DLK_API extern "C" __attribute__((visibility("default")))
#else
#include <stddef.h>
#include <stdint.h>
#define DLK_API __attribute__((visibility("default")))
#endif

#define DLK_ABI_VERSION 3

// Failure codes. 1-3 mirror dlk::Status (csrc/include/dlk/common.h).
#define DLK_OK 0
#define DLK_ERR_UNSUPPORTED_DTYPE 1
#define DLK_ERR_INVALID_ARGUMENT 2
#define DLK_ERR_LAUNCH_FAILED 3
#define DLK_ERR_INTERNAL 4  // a C++ exception escaped a launcher (e.g. out of host memory)

DLK_API int dlk_cpu_abi_version(void);
DLK_API const char* dlk_cpu_last_error(void);
// JSON: {"abi": 1, "cuda": false, "cuda_archs": [], "compiler": "g++ 13.2.0", "openmp": true}
DLK_API const char* dlk_cpu_build_info(void);
// OpenMP threads of the CPU launchers (0: OpenMP's default). The library has its own OpenMP runtime,
// which torch.set_num_threads does not reach: dlkernels/_native passes torch.get_num_threads() on.
DLK_API void dlk_cpu_set_num_threads(int num_threads);

DLK_API int dlk_cuda_abi_version(void);
DLK_API const char* dlk_cuda_last_error(void);
// JSON: {"abi": 1, "cuda": true, "cuda_archs": ["80", "90a"], "ptx": "90", "compiler": "nvcc 13.0", ...}
DLK_API const char* dlk_cuda_build_info(void);
