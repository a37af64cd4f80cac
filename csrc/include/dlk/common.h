// Shared host/device definitions used by the CPU reference kernels and the CUDA kernels.
// Torch-free on purpose: csrc/cuda/*.cu must compile with bare nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DLK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DLK_HOST_DEVICE inline
#endif

namespace dlk {

// Element type of a kernel's floating-point tensors. The binding maps torch dtypes onto it; the
// CUDA launchers map it onto __half / __nv_bfloat16 / float / double.
enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

// Status returned by every launcher. The binding turns a non-zero status into a Python error.
enum class Status : int { kOk = 0, kUnsupportedDType = 1, kInvalidArgument = 2, kLaunchFailed = 3 };

}  // namespace dlk
