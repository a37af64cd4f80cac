// Host-side launch helpers shared by every CUDA launcher: pointer alignment, launch-error checks,
// and device facts (SM count, shared-memory limits, occupancy) queried once per device and cached,
// since small ops are launch-bound and an attribute query costs host time on every call.
// No hard-coded device: when no device answers, the facts are the smallest valid ones (one SM, the
// default 48 KiB of shared memory), which keeps launch plans well-formed; the launch that follows
// then reports the device's error itself.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>

#include "dlk/common.h"

namespace dlk {

// Dynamic shared memory every kernel may use without opting in.
constexpr int kDefaultDynamicSmemBytes = 48 * 1024;

inline bool is_aligned(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Null pointers pass: they are optional tensors the launch does not touch.
inline bool all_aligned(std::initializer_list<const void*> pointers, size_t bytes) {
  for (const void* p : pointers) {
    if (p != nullptr && !is_aligned(p, bytes)) return false;
  }
  return true;
}

// After a launch (or a run of launches): kOk, or kLaunchFailed with the error cleared so that it does
// not surface at the next, unrelated launch.
inline Status check_launch() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kLaunchFailed; }

// Clears the error a failed query left behind: a failed query is an answer ("unknown"), never a
// sticky error for the next launch.
inline void clear_query_error() { (void)cudaGetLastError(); }

struct DeviceFacts {
  int device = -1;  // -1: no device answered (the defaults below)
  int sm_count = 1;
  int max_smem_optin = kDefaultDynamicSmemBytes;  // per block, after cudaFuncSetAttribute opt-in
  int compute_major = 0, compute_minor = 0;
  bool cooperative_launch = false;
};

inline DeviceFacts query_device_facts(int device) {
  DeviceFacts facts;
  int sm_count = 0, smem = 0, major = 0, minor = 0, cooperative = 0;
  if (cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess || sm_count <= 0) {
    clear_query_error();
    return facts;
  }
  facts.device = device;
  facts.sm_count = sm_count;
  facts.max_smem_optin = smem;
  facts.compute_major = major;
  facts.compute_minor = minor;
  facts.cooperative_launch = cooperative != 0;
  return facts;
}

// Facts of the current device, queried on its first use. Reads after that take no lock.
inline DeviceFacts current_device_facts() {
  constexpr int kCachedDevices = 64;
  static std::mutex mutex;
  static DeviceFacts cache[kCachedDevices];
  static std::atomic<bool> cached[kCachedDevices];
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0) {
    clear_query_error();
    return DeviceFacts{};
  }
  if (device >= kCachedDevices) return query_device_facts(device);
  if (cached[device].load(std::memory_order_acquire)) return cache[device];
  const DeviceFacts facts = query_device_facts(device);
  if (facts.device < 0) return facts;  // not cached: the device may answer later
  const std::lock_guard<std::mutex> lock(mutex);
  if (!cached[device].load(std::memory_order_relaxed)) {
    cache[device] = facts;
    cached[device].store(true, std::memory_order_release);
  }
  return facts;
}

inline int sm_count() { return current_device_facts().sm_count; }

// Lets `kernel` take `bytes` of dynamic shared memory (an opt-in above 48 KiB), once per kernel and
// device. False, with the error cleared, when the device refuses.
inline bool allow_dynamic_smem(const void* kernel, size_t bytes) {
  if (bytes <= size_t(kDefaultDynamicSmemBytes)) return true;
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> granted;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    clear_query_error();
    return false;
  }
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& done = granted[{kernel, device}];
  if (done >= bytes) return true;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)) !=
      cudaSuccess) {
    clear_query_error();
    return false;
  }
  done = bytes;
  return true;
}

template <typename Kernel>
bool allow_dynamic_smem(Kernel* kernel, size_t bytes) {
  return allow_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

// Blocks of `kernel` resident per SM on the current device, cached per kernel, device, block size
// and shared memory; 0 when the device cannot be queried or the kernel cannot run with them.
inline int resident_blocks_per_sm(const void* kernel, int threads, size_t dynamic_smem) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int, size_t>, int> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    clear_query_error();
    return 0;
  }
  const auto key = std::make_tuple(kernel, device, threads, dynamic_smem);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto hit = cache.find(key);
    if (hit != cache.end()) return hit->second;
  }
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, dynamic_smem) != cudaSuccess) {
    clear_query_error();
    return 0;
  }
  const std::lock_guard<std::mutex> lock(mutex);
  return cache[key] = per_sm;
}

template <typename Kernel>
int resident_blocks_per_sm(Kernel* kernel, int threads, size_t dynamic_smem) {
  return resident_blocks_per_sm(reinterpret_cast<const void*>(kernel), threads, dynamic_smem);
}

}  // namespace dlk
