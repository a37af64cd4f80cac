// Helpers every op's binding uses: dtype mapping, layout, launcher status -> Python error.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include "dlk/common.h"

namespace dlk::binding {

inline DType to_dlk_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    default: TORCH_CHECK(false, "dlkernels: unsupported dtype ", t.scalar_type(),
                         " (expected float16, bfloat16, float32 or float64)");
  }
}

inline at::MemoryFormat memory_format_for(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline void check_status(Status status, const char* op) {
  TORCH_CHECK(status == Status::kOk, "dlkernels ", op, " failed: ",
              status == Status::kUnsupportedDType ? "unsupported dtype"
              : status == Status::kInvalidArgument ? "invalid argument"
                                                    : "kernel launch failed");
}

// Scratch for a launcher (split-reduction partials, transformed operands), from torch's caching
// allocator: freeing it when the op returns is safe because the allocator reuses the block only for
// work queued later on the same stream. Launchers overwrite what they read, so no zero-fill.
struct Workspace {
  at::Tensor storage;
  void* data = nullptr;
  size_t bytes = 0;
};

inline Workspace make_workspace(const at::Tensor& like, size_t bytes) {
  Workspace w;
  w.bytes = bytes;
  if (bytes > 0) {
    w.storage = at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
    w.data = w.storage.data_ptr();
  }
  return w;
}

}  // namespace dlk::binding
