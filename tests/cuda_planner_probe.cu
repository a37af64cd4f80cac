// Prints what the CUDA launch planners assume of each kernel they launch, read from the planners' own
// constants (so that tests/test_cuda_resources.py compares ptxas' numbers with the code, not with a
// copy of it). One line per kernel instantiation, tab-separated:
//   <kernel name as c++filt writes it, up to its parameter list>  <threads>  <dynamic smem bytes>
//   <blocks per SM the planner counts on (0: only what __launch_bounds__ says)>
// The conv GEMMs are enumerated through the launchers' own dispatch (dispatch_gemm), so a new
// instantiation appears here without an edit. nvcc builds it for the host; no GPU is needed.
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <typeinfo>

#include "attention_fwd_sm90_kernel.cuh"
#include "conv2d_kernels.cuh"

namespace {

template <typename T>
std::string type_name() {
  int status = 0;
  char* name = abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, &status);
  std::string result = status == 0 ? name : typeid(T).name();
  std::free(name);
  return result;
}

void print(const std::string& kernel, int threads, long smem_bytes, int resident_blocks) {
  std::printf("%s\t%d\t%ld\t%d\n", kernel.c_str(), threads, smem_bytes, resident_blocks);
}

// Every (op, dtype, math, layout, loader, tile) the conv launchers can pick, with the residency the
// planner (conv2d.cu) reads from kConvTiles for it.
template <template <typename, bool> class Op, typename T>
void conv_gemms() {
  for (const bool tensor_cores : {false, true}) {
    for (const bool channels_last : {false, true}) {
      for (const bool fast : {false, true}) {
        for (int tile = 0; tile < dlk::conv::kConvTileCount; ++tile) {
          dlk::conv::GemmChoice choice;
          choice.tensor_cores = tensor_cores;
          choice.channels_last = channels_last;
          choice.fast = fast;
          choice.tile = static_cast<dlk::conv::TileShape>(tile);
          const dlk::conv::ConvTileConfig& config = dlk::conv::kConvTiles[tile];
          dlk::conv::dispatch_gemm<Op, T>(choice, [&](auto gemm) {
            using Gemm = typename decltype(gemm)::type;
            print("dlk::conv::conv_gemm_kernel<" + type_name<Gemm>() + ">", Gemm::kThreads, Gemm::kSmemBytes,
                  tensor_cores ? config.resident_tensor_cores : config.resident_simt);
            return dlk::Status::kOk;
          });
        }
      }
    }
  }
}

template <typename T>
void conv_gemms_of_type() {
  conv_gemms<dlk::conv::ForwardOp, T>();
  conv_gemms<dlk::conv::DgradOp, T>();
  conv_gemms<dlk::conv::WgradOp, T>();
}

template <typename T, int... kHeadDims>
void attention_sm90(std::integer_sequence<int, kHeadDims...>) {
  (print("dlk::attn::attention_forward_sm90_kernel<" + type_name<T>() + ", " + std::to_string(kHeadDims) + ">",
         dlk::attn::Sm90ForwardConfig<kHeadDims>::kThreads, dlk::attn::Sm90ForwardConfig<kHeadDims>::kSmemBytes, 0),
   ...);
}

}  // namespace

int main() {
  conv_gemms_of_type<__half>();
  conv_gemms_of_type<__nv_bfloat16>();
  conv_gemms_of_type<float>();
  conv_gemms_of_type<double>();
  attention_sm90<__half>(dlk::attn::AttentionSm90HeadDimList{});
  attention_sm90<__nv_bfloat16>(dlk::attn::AttentionSm90HeadDimList{});
  return 0;
}
