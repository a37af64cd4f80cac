#include "conv2d.h"

#include <cmath>
#include <vector>

#include "dispatch.h"
#include "dlk/half.h"

namespace dlk {
namespace {

// The direct reference sums in double whatever the input: it is what the GPU kernels' fp32 sums
// are judged against. The Winograd reference follows the precision contract of dlk/winograd.h
// instead (operands rounded to the input dtype, sums in the accumulate type), so that its errors
// are the errors the GPU kernels make.
template <typename T> const T* cptr(const void* p) { return static_cast<const T*>(p); }
template <typename T> T* ptr(void* p) { return static_cast<T*>(p); }

// Params: Conv2dFwdParams or WinogradFwdParams.
template <typename Acc, typename Params>
Acc epilogue(Acc y, const Params& p) {
  return activate(y, p.activation, Acc(p.negative_slope));
}

// Output element (n, k, oh, ow) = act(conv + bias + residual).
template <typename T>
struct DirectForward {
  static void run(const Conv2dFwdParams& p) {
    const T* in = cptr<T>(p.input);
    const T* weight = cptr<T>(p.weight);
    const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t k = 0; k < p.out_channels; ++k) {
        const int64_t first_channel = (k / group_out) * group_in;
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            double acc = 0;
            for (int r = 0; r < p.kernel_h; ++r) {
              const int64_t ih = oh * p.stride_h - p.pad_h + int64_t(r) * p.dilation_h;
              if (ih < 0 || ih >= p.in_h) continue;
              for (int s = 0; s < p.kernel_w; ++s) {
                const int64_t iw = ow * p.stride_w - p.pad_w + int64_t(s) * p.dilation_w;
                if (iw < 0 || iw >= p.in_w) continue;
                for (int64_t c = 0; c < group_in; ++c) {
                  const T x = in[conv_offset(n, first_channel + c, ih, iw, p.in_channels, p.in_h, p.in_w,
                                             p.channels_last)];
                  const T w = weight[conv_weight_offset(k, c, r, s, group_in, p.kernel_h, p.kernel_w,
                                                        p.channels_last)];
                  acc += double(to_acc(x)) * double(to_acc(w));
                }
              }
            }
            const int64_t o = conv_offset(n, k, oh, ow, p.out_channels, p.out_h, p.out_w, p.channels_last);
            if (p.bias) acc += double(to_acc(cptr<T>(p.bias)[k]));
            if (p.residual) acc += double(to_acc(cptr<T>(p.residual)[o]));
            ptr<T>(p.output)[o] = from_acc<T>(typename AccType<T>::type(epilogue(acc, p)));
          }
        }
      }
    }
  }
};

// grad_input (n, c, ih, iw) gathers every output position whose window read it: oh with
// oh * stride - pad + r * dilation == ih, i.e. (ih + pad - r * dilation) divisible by the stride.
template <typename T>
struct DirectDgrad {
  static void run(const Conv2dDgradParams& p) {
    const T* grad_out = cptr<T>(p.grad_output);
    const T* weight = cptr<T>(p.weight);
    const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t c = 0; c < p.in_channels; ++c) {
        const int64_t first_out = (c / group_in) * group_out, c_in_group = c % group_in;
        for (int64_t ih = 0; ih < p.in_h; ++ih) {
          for (int64_t iw = 0; iw < p.in_w; ++iw) {
            double acc = 0;
            for (int r = 0; r < p.kernel_h; ++r) {
              const int64_t th = ih + p.pad_h - int64_t(r) * p.dilation_h;
              if (th < 0 || th % p.stride_h) continue;
              const int64_t oh = th / p.stride_h;
              if (oh >= p.out_h) continue;
              for (int s = 0; s < p.kernel_w; ++s) {
                const int64_t tw = iw + p.pad_w - int64_t(s) * p.dilation_w;
                if (tw < 0 || tw % p.stride_w) continue;
                const int64_t ow = tw / p.stride_w;
                if (ow >= p.out_w) continue;
                for (int64_t k = 0; k < group_out; ++k) {
                  const T g = grad_out[conv_offset(n, first_out + k, oh, ow, p.out_channels, p.out_h, p.out_w,
                                                   p.channels_last)];
                  const T w = weight[conv_weight_offset(first_out + k, c_in_group, r, s, group_in, p.kernel_h,
                                                        p.kernel_w, p.channels_last)];
                  acc += double(to_acc(g)) * double(to_acc(w));
                }
              }
            }
            ptr<T>(p.grad_input)[conv_offset(n, c, ih, iw, p.in_channels, p.in_h, p.in_w, p.channels_last)] =
                from_acc<T>(typename AccType<T>::type(acc));
          }
        }
      }
    }
  }
};

template <typename T>
struct DirectWgrad {
  static void run(const Conv2dWgradParams& p) {
    const T* grad_out = cptr<T>(p.grad_output);
    const T* in = cptr<T>(p.input);
    const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t k = 0; k < p.out_channels; ++k) {
      for (int64_t c = 0; c < group_in; ++c) {
        const int64_t channel = (k / group_out) * group_in + c;
        for (int r = 0; r < p.kernel_h; ++r) {
          for (int s = 0; s < p.kernel_w; ++s) {
            double acc = 0;
            for (int64_t n = 0; n < p.batch; ++n) {
              for (int64_t oh = 0; oh < p.out_h; ++oh) {
                const int64_t ih = oh * p.stride_h - p.pad_h + int64_t(r) * p.dilation_h;
                if (ih < 0 || ih >= p.in_h) continue;
                for (int64_t ow = 0; ow < p.out_w; ++ow) {
                  const int64_t iw = ow * p.stride_w - p.pad_w + int64_t(s) * p.dilation_w;
                  if (iw < 0 || iw >= p.in_w) continue;
                  const T g = grad_out[conv_offset(n, k, oh, ow, p.out_channels, p.out_h, p.out_w, p.channels_last)];
                  const T x = in[conv_offset(n, channel, ih, iw, p.in_channels, p.in_h, p.in_w, p.channels_last)];
                  acc += double(to_acc(g)) * double(to_acc(x));
                }
              }
            }
            ptr<T>(p.grad_weight)[conv_weight_offset(k, c, r, s, group_in, p.kernel_h, p.kernel_w, p.channels_last)] =
                from_acc<T>(typename AccType<T>::type(acc));
          }
        }
      }
    }
  }
};

// Rounds an accumulate-type value to the storage type and back: the GEMM operands' precision.
template <typename T>
typename AccType<T>::type round_to_storage(typename AccType<T>::type v) {
  return to_acc(from_acc<T>(v));
}

template <int Tile, typename T>
void transform_weight(const WinogradWeightParams& p) {
  using Acc = typename AccType<T>::type;
  constexpr int alpha = Tile + 2;
  const T* weight = cptr<T>(p.weight);
  T* transformed = ptr<T>(p.transformed);
  const int64_t plane = p.out_channels * p.in_channels;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t k = 0; k < p.out_channels; ++k) {
    for (int64_t c = 0; c < p.in_channels; ++c) {
      Acc g[9], u[alpha * alpha];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s)
          g[r * 3 + s] = to_acc(weight[conv_weight_offset(k, c, r, s, p.in_channels, 3, 3, p.channels_last)]);
      winograd_weight_tile<Tile>(g, u);
      for (int xi = 0; xi < alpha * alpha; ++xi) transformed[xi * plane + k * p.in_channels + c] = from_acc<T>(u[xi]);
    }
  }
}

// One program per (n, tile row): V for every tile of the row and channel, then alpha^2 dot
// products over the channels per (tile, k), the output transform and the epilogue.
template <int Tile, typename T>
void winograd_forward(const WinogradFwdParams& p) {
  using Acc = typename AccType<T>::type;
  constexpr int alpha = Tile + 2;
  const T* in = cptr<T>(p.input);
  const T* transformed = cptr<T>(p.transformed_weight);
  const int64_t tiles_h = winograd_tiles(p.out_h, Tile), tiles_w = winograd_tiles(p.out_w, Tile);
  const int64_t channels = p.in_channels, plane = p.out_channels * channels;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t th = 0; th < tiles_h; ++th) {
      std::vector<Acc> v(size_t(tiles_w) * alpha * alpha * channels);  // [tw][xi][c]
      for (int64_t tw = 0; tw < tiles_w; ++tw) {
        for (int64_t c = 0; c < channels; ++c) {
          Acc d[alpha * alpha], vt[alpha * alpha];
          for (int i = 0; i < alpha; ++i) {
            for (int j = 0; j < alpha; ++j) {
              const int64_t ih = th * Tile - p.pad_h + i, iw = tw * Tile - p.pad_w + j;
              const bool inside = ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w;
              d[i * alpha + j] =
                  inside ? to_acc(in[conv_offset(n, c, ih, iw, channels, p.in_h, p.in_w, p.channels_last)]) : Acc(0);
            }
          }
          winograd_input_tile<Tile>(d, vt);
          for (int xi = 0; xi < alpha * alpha; ++xi)
            v[(size_t(tw) * alpha * alpha + xi) * channels + c] = round_to_storage<T>(vt[xi]);
        }
      }
      for (int64_t tw = 0; tw < tiles_w; ++tw) {
        for (int64_t k = 0; k < p.out_channels; ++k) {
          Acc m[alpha * alpha], y[Tile * Tile];
          for (int xi = 0; xi < alpha * alpha; ++xi) {
            const Acc* vrow = &v[(size_t(tw) * alpha * alpha + xi) * channels];
            const T* urow = transformed + xi * plane + k * channels;
            Acc acc = 0;
            for (int64_t c = 0; c < channels; ++c) acc += vrow[c] * to_acc(urow[c]);
            m[xi] = acc;
          }
          winograd_output_tile<Tile>(m, y);
          const Acc bias = p.bias ? to_acc(cptr<T>(p.bias)[k]) : Acc(0);
          for (int i = 0; i < Tile && th * Tile + i < p.out_h; ++i) {
            for (int j = 0; j < Tile && tw * Tile + j < p.out_w; ++j) {
              const int64_t o = conv_offset(n, k, th * Tile + i, tw * Tile + j, p.out_channels, p.out_h, p.out_w,
                                            p.channels_last);
              Acc out = y[i * Tile + j] + bias;
              if (p.residual) out += to_acc(cptr<T>(p.residual)[o]);
              ptr<T>(p.output)[o] = from_acc<T>(epilogue(out, p));
            }
          }
        }
      }
    }
  }
}

template <typename T> struct TransformWeight {
  static void run(const WinogradWeightParams& p) {
    p.tile == 2 ? transform_weight<2, T>(p) : transform_weight<4, T>(p);
  }
};
template <typename T> struct WinogradForward {
  static void run(const WinogradFwdParams& p) {
    p.tile == 2 ? winograd_forward<2, T>(p) : winograd_forward<4, T>(p);
  }
};

bool winograd_shape_ok(const Conv2dParams& p) {
  return p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
         p.dilation_w == 1 && p.groups == 1;
}

}  // namespace

Status conv2d_forward_cpu(const Conv2dFwdParams& params, DType dtype) {
  return dispatch_cpu<DirectForward>(dtype, params);
}
Status conv2d_backward_input_cpu(const Conv2dDgradParams& params, DType dtype) {
  return dispatch_cpu<DirectDgrad>(dtype, params);
}
Status conv2d_backward_weight_cpu(const Conv2dWgradParams& params, DType dtype) {
  return dispatch_cpu<DirectWgrad>(dtype, params);
}
Status winograd_transform_weight_cpu(const WinogradWeightParams& params, DType dtype) {
  if (params.tile != 2 && params.tile != 4) return Status::kInvalidArgument;
  return dispatch_cpu<TransformWeight>(dtype, params);
}
Status conv2d_winograd_cpu(const WinogradFwdParams& params, DType dtype) {
  if ((params.tile != 2 && params.tile != 4) || !winograd_shape_ok(params)) return Status::kInvalidArgument;
  return dispatch_cpu<WinogradForward>(dtype, params);
}

}  // namespace dlk
