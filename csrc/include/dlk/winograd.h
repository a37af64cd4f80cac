// Winograd convolution F(m x m, 3 x 3), m = 2 or 4 (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2015): the transforms, written out as explicit sums so that zeros cost nothing,
// and the parameters shared by the CPU reference and the CUDA kernels. triton_kernels/conv2d_winograd.py
// mirrors the same formulas.
//
// For an alpha x alpha input tile d (alpha = m + 2) and a 3x3 filter g, one output tile is
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A          (m x m)
// Across channels the elementwise product becomes alpha^2 independent GEMMs:
//   M[xi][tile][k] = sum_c V[xi][tile][c] * U[xi][k][c],   V = B^T d B,  U = G g G^T.
// Interpolation points: F(2,3) uses 0, 1, -1; F(4,3) uses 0, 1, -1, 2, -2. F(4,3)'s transforms hold
// entries up to 8 (A^T) and down to 1/24 (G), which is why it loses accuracy in fp16.
//
// Precision contract (all implementations): U and V are computed in the accumulate type (float, or
// double for double input) and rounded to the input dtype, the GEMM operand type; M accumulates in
// the accumulate type; the output transform and epilogue run in the accumulate type.
#pragma once

#include "dlk/conv2d.h"

namespace dlk {

// Precomputed U for one 3x3 weight (groups == 1), reusable across calls while the weight is unchanged.
struct WinogradWeightParams {
  int64_t out_channels = 0, in_channels = 0;  // K, C
  int tile = 2;                               // m: 2 or 4
  bool channels_last = false;                 // weight layout: KCRS, or KRSC when set
  const void* weight = nullptr;               // (K, C, 3, 3)
  void* transformed = nullptr;  // U: (alpha*alpha, K, C) contiguous, the weight's dtype
};

// Forward: kernel 3x3, stride 1, dilation 1, groups 1; padding (possibly negative) and the output
// size as in Conv2dParams. Output tile (th, tw) covers output rows th*m .. th*m+m-1 (clipped to out_h)
// and reads input rows th*m - pad_h .. th*m - pad_h + alpha - 1 (zero outside the input).
struct WinogradFwdParams : Conv2dParams {
  int tile = 2;
  const void* input = nullptr;
  const void* transformed_weight = nullptr;  // U from winograd_transform_weight, same dtype as input
  const void* bias = nullptr;                // (K,) or null
  const void* residual = nullptr;            // like output, or null
  void* output = nullptr;
  bool activation = false;   // as Conv2dFwdParams
  double negative_slope = 0;
};

DLK_HOST_DEVICE int64_t winograd_tiles(int64_t out, int tile) { return (out + tile - 1) / tile; }

// One-dimensional transforms over strided vectors; the 2-D transforms apply them to columns, then rows.
// Input: o = B^T d (alpha -> alpha).
template <int Tile, typename T>
DLK_HOST_DEVICE void winograd_input_1d(const T* d, int ds, T* o, int os) {
  static_assert(Tile == 2 || Tile == 4, "Winograd tile must be 2 or 4");
  if constexpr (Tile == 2) {
    const T d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds];
    o[0] = d0 - d2;
    o[os] = d1 + d2;
    o[2 * os] = d2 - d1;
    o[3 * os] = d1 - d3;
  } else {
    const T d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
    o[0] = T(4) * d0 - T(5) * d2 + d4;
    o[os] = d3 + d4 - T(4) * (d1 + d2);
    o[2 * os] = T(4) * (d1 - d2) - d3 + d4;
    o[3 * os] = T(2) * (d3 - d1) - d2 + d4;
    o[4 * os] = T(2) * (d1 - d3) - d2 + d4;
    o[5 * os] = T(4) * d1 - T(5) * d3 + d5;
  }
}

// Filter: o = G g (3 -> alpha).
template <int Tile, typename T>
DLK_HOST_DEVICE void winograd_weight_1d(const T* g, int gs, T* o, int os) {
  static_assert(Tile == 2 || Tile == 4, "Winograd tile must be 2 or 4");
  const T g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
  if constexpr (Tile == 2) {
    o[0] = g0;
    o[os] = T(0.5) * (g0 + g1 + g2);
    o[2 * os] = T(0.5) * (g0 - g1 + g2);
    o[3 * os] = g2;
  } else {
    o[0] = g0 / T(4);
    o[os] = -(g0 + g1 + g2) / T(6);
    o[2 * os] = -(g0 - g1 + g2) / T(6);
    o[3 * os] = g0 / T(24) + g1 / T(12) + g2 / T(6);
    o[4 * os] = g0 / T(24) - g1 / T(12) + g2 / T(6);
    o[5 * os] = g2;
  }
}

// Output: o = A^T m (alpha -> Tile).
template <int Tile, typename T>
DLK_HOST_DEVICE void winograd_output_1d(const T* m, int ms, T* o, int os) {
  static_assert(Tile == 2 || Tile == 4, "Winograd tile must be 2 or 4");
  if constexpr (Tile == 2) {
    const T m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms];
    o[0] = m0 + m1 + m2;
    o[os] = m1 - m2 - m3;
  } else {
    const T m0 = m[0], m1 = m[ms], m2 = m[2 * ms], m3 = m[3 * ms], m4 = m[4 * ms], m5 = m[5 * ms];
    const T a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4;
    o[0] = m0 + a + c;
    o[os] = b + T(2) * e;
    o[2 * os] = a + T(4) * c;
    o[3 * os] = b + T(8) * e + m5;
  }
}

// 2-D transforms on row-major local arrays. V = B^T d B (alpha x alpha -> alpha x alpha).
template <int Tile, typename T>
DLK_HOST_DEVICE void winograd_input_tile(const T* d, T* v) {
  constexpr int a = Tile + 2;
  T tmp[a * a];
  for (int j = 0; j < a; ++j) winograd_input_1d<Tile>(d + j, a, tmp + j, a);      // columns
  for (int i = 0; i < a; ++i) winograd_input_1d<Tile>(tmp + i * a, 1, v + i * a, 1);  // rows
}

// U = G g G^T (3 x 3 -> alpha x alpha).
template <int Tile, typename T>
DLK_HOST_DEVICE void winograd_weight_tile(const T* g, T* u) {
  constexpr int a = Tile + 2;
  T tmp[a * 3];
  for (int j = 0; j < 3; ++j) winograd_weight_1d<Tile>(g + j, 3, tmp + j, 3);
  for (int i = 0; i < a; ++i) winograd_weight_1d<Tile>(tmp + i * 3, 1, u + i * a, 1);
}

// Y = A^T M A (alpha x alpha -> Tile x Tile).
template <int Tile, typename T>
DLK_HOST_DEVICE void winograd_output_tile(const T* m, T* y) {
  constexpr int a = Tile + 2;
  T tmp[Tile * a];
  for (int j = 0; j < a; ++j) winograd_output_1d<Tile>(m + j, a, tmp + j, a);
  for (int i = 0; i < Tile; ++i) winograd_output_1d<Tile>(tmp + i * a, 1, y + i * Tile, 1);
}

}  // namespace dlk
