// The Python module dlkernels._C. Ops register themselves with TORCH_LIBRARY in their own binding
// files; this module only reports how the library was built and which kernel paths are live.
#include <torch/extension.h>

#ifdef DLK_WITH_CUDA
#include "../cuda/attention.cuh"
#endif

#define DLK_STRINGIFY_(x) #x
#define DLK_STRINGIFY(x) DLK_STRINGIFY_(x)
#ifdef DLK_CUDA_ARCHS
#define DLK_CUDA_ARCHS_STRING DLK_STRINGIFY(DLK_CUDA_ARCHS)  // e.g. "80_90a"
#else
#define DLK_CUDA_ARCHS_STRING ""
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dlkernels compiled kernels (ops are under torch.ops.dlk_C)";
  m.def("build_info", [] {
    pybind11::dict info;
#ifdef DLK_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_archs"] = std::string(DLK_CUDA_ARCHS_STRING);
    return info;
  });
  // Which CUDA attention forward runs now (it reads DLK_ATTENTION_WGMMA and the current device).
  m.def("attention_wgmma_available", [] {
#ifdef DLK_WITH_CUDA
    return dlk::attention_forward_wgmma_available();
#else
    return false;
#endif
  });
}
