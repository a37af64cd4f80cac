// Runtime dtype -> template dispatch for the CPU reference kernels.
#pragma once

#include "dlk/common.h"
#include "dlk/half.h"

namespace dlk {

// Calls Fn<T>::run(params) with T the storage type of `dtype`.
template <template <typename> class Fn, typename Params>
Status dispatch_cpu(DType dtype, const Params& params) {
  switch (dtype) {
    case DType::kFloat16: Fn<Float16>::run(params); return Status::kOk;
    case DType::kBFloat16: Fn<BFloat16>::run(params); return Status::kOk;
    case DType::kFloat32: Fn<float>::run(params); return Status::kOk;
    case DType::kFloat64: Fn<double>::run(params); return Status::kOk;
  }
  return Status::kUnsupportedDType;
}

}  // namespace dlk
