// The Python module dlkernels._C. Ops register themselves with TORCH_LIBRARY in their own binding
// files; this module only reports how the library was built.
#include <torch/extension.h>

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
}
