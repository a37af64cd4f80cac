// Hopper (wgmma) flash-attention forward: the fp16 / bf16 instantiations of
// attention_fwd_sm90_kernel.cuh and the check of whether a launch may use them. Opt-in
// (DLK_ATTENTION_WGMMA=1) until a GPU run has verified and measured it: see the kernel header.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "attention_fwd_sm90_kernel.cuh"

namespace dlk {
namespace attn {

DLK_ATTENTION_FWD_SM90_INSTANTIATE(, __half)
DLK_ATTENTION_FWD_SM90_INSTANTIATE(, __nv_bfloat16)

namespace {

#define DLK_SM90_STRINGIFY_TOKEN(x) #x
#define DLK_SM90_STRINGIFY(x) DLK_SM90_STRINGIFY_TOKEN(x)
#ifdef DLK_CUDA_ARCHS
constexpr const char* kBuiltArchs = DLK_SM90_STRINGIFY(DLK_CUDA_ARCHS);  // setup.py: e.g. 80_90a
#else
constexpr const char* kBuiltArchs = "";  // bare nvcc (the compile test): unknown, so never used
#endif

// Whether '_'-separated `list` holds `arch` as a whole item.
bool lists_arch(const char* list, const char* arch) {
  const size_t length = std::strlen(arch);
  for (const char* item = list; *item != '\0';) {
    const char* end = std::strchr(item, '_');
    const size_t item_length = end != nullptr ? size_t(end - item) : std::strlen(item);
    if (item_length == length && std::strncmp(item, arch, length) == 0) return true;
    if (end == nullptr) break;
    item = end + 1;
  }
  return false;
}

// DLK_ATTENTION_WGMMA=1 turns the path on; anything else (or unset) leaves it off.
bool wgmma_requested() {
  const char* env = std::getenv("DLK_ATTENTION_WGMMA");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

// Per device (cached: the attribute queries cost host time on every launch): compute capability 9.0
// and the runtime choosing sm_90 code for the kernel (binaryVersion 90, i.e. the sm_90a cubin, not
// the sm_80 one run on a 9.0 device).
bool device_runs_sm90a_kernel() {
  static std::mutex mutex;
  static std::map<int, bool> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const std::lock_guard<std::mutex> lock(mutex);
  const auto hit = cache.find(device);
  if (hit != cache.end()) return hit->second;
  int major = 0, minor = 0;
  cudaFuncAttributes attributes{};
  bool usable = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess &&
                major == 9 && minor == 0;
  if (usable) {
    usable = cudaFuncGetAttributes(&attributes, attention_forward_sm90_kernel<__nv_bfloat16, 128>) == cudaSuccess &&
             attributes.binaryVersion == 90;
  }
  cudaGetLastError();  // a failed query is "not usable", never a sticky error for the next launch
  return cache[device] = usable;
}

}  // namespace

bool attention_forward_sm90_available() {
  // sm_90a code in the binary, and no plain sm_90 cubin the runtime could pick instead (its kernel
  // body is the trap).
  if (!wgmma_requested() || !lists_arch(kBuiltArchs, "90a") || lists_arch(kBuiltArchs, "90")) return false;
  return device_runs_sm90a_kernel();
}

}  // namespace attn

bool attention_forward_wgmma_available() { return attn::attention_forward_sm90_available(); }

}  // namespace dlk
