"""2-D convolution with a fused epilogue: act(conv2d(input, weight) + bias + residual), act = ReLU or LeakyReLU.

Two algorithms, each in every backend:
- direct: implicit GEMM (forward, data gradient and weight gradient kernels);
- Winograd F(2x2,3x3) / F(4x4,3x3) for 3x3, stride 1, dilation 1, groups 1: forward, and the data
  gradient as the stride-1 3x3 convolution of grad_output with flipped, transposed weights.

The public conv2d picks a backend (dlkernels._backends.dispatch); "torch" is F.conv2d with the
epilogue in torch ops. Our kernels run as the dlk::conv2d and dlk::conv2d_backward ops (fake
implementations for torch.compile, the autograd formula). Backends implement the same low-level
entry points: conv2d_forward / conv2d_backward_input / conv2d_backward_weight (dlkernels/_native/
conv2d.py, triton_kernels/conv2d.py) and winograd_transform_weight / conv2d_winograd (their
conv2d_winograd modules).

algo="auto" never picks a Winograd tile whose measured error at the call's precision exceeds the
op's accuracy bar (ACCURATE_WINOGRAD_TILES, checked by tests/test_conv2d.py).

The activation reaches the kernels as an on/off flag (the ops' `relu` argument) and one negative_slope, as in
dlkernels/ops/batch_norm.py: ReLU is slope 0, LeakyReLU a slope > 0, and the backward scales the gradient by 1 or
the slope from the saved output's sign (so the slope must be >= 0 for our kernels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakTensorKeyDictionary

from dlkernels._backends import autotune_enabled, capturing, dispatch, elapsed_seconds, implementation
from dlkernels._library import define
from dlkernels._validation import as_layout, check_tensor, layout_of, pair

OP = "conv2d"
ALGOS = ("auto", "direct", "winograd", "winograd_2x2", "winograd_4x4")
ACTIVATIONS = (None, "relu", "leaky_relu")
DIRECT = 0  # the ops' `tile` argument: 0 = direct, 2 or 4 = Winograd F(tile x tile, 3x3)

# Winograd tiles whose error meets the op's accuracy bar, per precision: max error against an fp64
# result of the same (already rounded) inputs at most 2x PyTorch's own error at that precision
# (FlashAttention's test rule). Measured on the C++ reference, which follows the kernels' precision
# contract (dlk/winograd.h): rounding the transformed operands to the GEMM type costs F(2,3) 1.5-3x
# PyTorch's error and F(4,3) 10-40x in fp16, bf16 and fp32 (TF32 has fp16's mantissa), so no tile
# qualifies and "auto" runs the direct kernels. float64 has no more precise reference to measure
# against and is left out. The Winograd kernels run when asked for (algo="winograd", ...).
ACCURATE_WINOGRAD_TILES: dict[str, tuple[int, ...]] = {
    "float16": (), "bfloat16": (), "tf32": (), "float32": (), "float64": ()}

# Heuristic for "auto" among accurate tiles: the transforms cost memory traffic that only enough
# channels and output positions repay (cuDNN's heuristics draw the line in the same region).
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_OUTPUT_POSITIONS = 64


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _direct(backend: str):
    return implementation("conv2d", backend)


def _winograd(backend: str):
    return implementation("conv2d_winograd", backend)


def _winograd_dgrad_weight(weight: Tensor, channels_last: bool) -> Tensor:
    """(K, C, 3, 3) -> (C, K, 3, 3) flipped: the data gradient is a forward conv with this weight."""
    return as_layout(weight.flip(2, 3).transpose(0, 1), _memory_format(channels_last))


# ----------------------------------------------------------------------------- dlk ops
def _conv2d_impl(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, stride: list[int],
                 padding: list[int], dilation: list[int], groups: int, output_size: list[int], relu: bool,
                 channels_last: bool, allow_tf32: bool, tile: int, backend: str, negative_slope: float = 0.0) -> Tensor:
    """`relu` switches the activation on: LeakyReLU(negative_slope), ReLU for slope 0."""
    if tile == DIRECT:
        return _direct(backend).conv2d_forward(x, weight, bias, residual, stride, padding, dilation, groups,
                                               output_size, relu, channels_last, allow_tf32, negative_slope)
    winograd = _winograd(backend)
    transformed = winograd.winograd_transform_weight(weight, tile, channels_last)
    return winograd.conv2d_winograd(x, transformed, bias, residual, padding, output_size, tile, relu, channels_last,
                                    allow_tf32, negative_slope)


def _conv2d_fake(x, weight, bias, residual, stride, padding, dilation, groups, output_size, relu, channels_last,
                 allow_tf32, tile, backend, negative_slope=0.0):
    return torch.empty((x.shape[0], weight.shape[0], *output_size), dtype=x.dtype, device=x.device,
                       memory_format=_memory_format(channels_last))


def _conv2d_backward_impl(grad_output: Tensor, x: Tensor, weight: Tensor, stride: list[int], padding: list[int],
                     dilation: list[int], groups: int, channels_last: bool, allow_tf32: bool, tile: int,
                     backend: str, need_input: bool, need_weight: bool) -> tuple[Tensor, Tensor]:
    """(grad_input, grad_weight) of the convolution alone; an empty tensor for one not asked for."""
    grad_input = grad_weight = grad_output.new_empty(0)
    if need_input and tile != DIRECT:
        winograd = _winograd(backend)
        flipped = winograd.winograd_transform_weight(_winograd_dgrad_weight(weight, channels_last), tile,
                                                     channels_last)
        grad_input = winograd.conv2d_winograd(grad_output, flipped, None, None, [2 - padding[0], 2 - padding[1]],
                                              list(x.shape[2:]), tile, False, channels_last, allow_tf32)
    elif need_input:
        grad_input = _direct(backend).conv2d_backward_input(grad_output, weight, list(x.shape[2:]), stride, padding,
                                                            dilation, groups, channels_last, allow_tf32)
    if need_weight:
        grad_weight = _direct(backend).conv2d_backward_weight(grad_output, x, list(weight.shape[2:]), stride,
                                                              padding, dilation, groups, channels_last, allow_tf32)
    return grad_input, grad_weight


def _conv2d_backward_fake(grad_output, x, weight, stride, padding, dilation, groups, channels_last, allow_tf32,
                          tile, backend, need_input, need_weight):
    fmt = _memory_format(channels_last)
    grad_input = torch.empty_like(x, memory_format=fmt) if need_input else grad_output.new_empty(0)
    grad_weight = torch.empty_like(weight, memory_format=fmt) if need_weight else grad_output.new_empty(0)
    return grad_input, grad_weight


def _conv2d_backward_setup_context(ctx, inputs, output):
    grad_output, x, weight, *args = inputs
    ctx.save_for_backward(grad_output, x, weight)
    ctx.args = args


def _conv2d_backward_backward(ctx, grad_grad_input, grad_grad_weight):
    """Double backward (WGAN-GP's gradient penalty). grad_input = dgrad(grad_output, weight) and grad_weight =
    wgrad(grad_output, x) are linear in each argument, so each derivative is one of conv2d's three kernels, run
    through the differentiable dlk ops (any order works): d/d grad_output = conv(ggi, weight) + conv(x, ggw),
    d/d weight = wgrad(grad_output, ggi), d/d x = dgrad(grad_output, ggw)."""
    grad_output, x, weight = ctx.saved_tensors
    stride, padding, dilation, groups, channels_last, allow_tf32, tile, backend, need_input, need_weight = ctx.args
    fmt = _memory_format(channels_last)
    ggi = as_layout(grad_grad_input, fmt) if need_input and grad_grad_input is not None else None
    ggw = as_layout(grad_grad_weight, fmt) if need_weight and grad_grad_weight is not None else None
    want_grad_output, want_x, want_weight = ctx.needs_input_grad[:3]
    d_grad_output = d_x = d_weight = None
    if want_grad_output:
        size = list(grad_output.shape[2:])
        terms = [_conv2d_plain(a, b, stride, padding, dilation, groups, size, channels_last, allow_tf32, tile, backend)
                 for a, b in ((ggi, weight), (x, ggw)) if a is not None and b is not None]
        d_grad_output = sum(terms[1:], terms[0]) if terms else None
    if want_weight and ggi is not None:
        d_weight = _conv2d_backward(grad_output, ggi, weight, stride, padding, dilation, groups, channels_last,
                                    allow_tf32, tile, backend, False, True)[1]
    if want_x and ggw is not None:
        d_x = _conv2d_backward(grad_output, x, ggw, stride, padding, dilation, groups, channels_last, allow_tf32,
                               tile, backend, True, False)[0]
    return d_grad_output, d_x, d_weight, *([None] * 10)


_conv2d_backward = define(
    "conv2d_backward(Tensor grad_output, Tensor x, Tensor weight, int[] stride, int[] padding, int[] dilation, "
    "int groups, bool channels_last, bool allow_tf32, int tile, str backend, bool need_input, bool need_weight) "
    "-> (Tensor, Tensor)", _conv2d_backward_impl, _conv2d_backward_fake,
    setup_context=_conv2d_backward_setup_context, backward=_conv2d_backward_backward)


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, stride, padding, dilation, groups, _, relu, channels_last, allow_tf32, tile, \
        backend, *slope = inputs
    ctx.save_for_backward(x, weight, output if relu else None)
    ctx.args = (stride, padding, dilation, groups, channels_last, allow_tf32, tile, backend)
    ctx.relu, ctx.negative_slope = relu, (slope[0] if slope else 0.0)


def _backward(ctx, grad_output):
    x, weight, output = ctx.saved_tensors
    stride, padding, dilation, groups, channels_last, allow_tf32, tile, backend = ctx.args
    slope = ctx.negative_slope
    if ctx.relu and slope == 0:  # torch's threshold_backward: blocked where output <= 0 (a NaN output lets it through)
        grad_output = grad_output.masked_fill(output <= 0, 0)
    elif ctx.relu:  # torch's leaky_relu_backward; a slope > 0 keeps the input's sign in the output (NaN: * slope)
        grad_output = torch.where(output > 0, grad_output, grad_output * slope)
    grad_output = as_layout(grad_output, _memory_format(channels_last))
    need_input, need_weight, need_bias, need_residual = ctx.needs_input_grad[:4]
    grad_input = grad_weight = grad_bias = None
    if need_input or need_weight:
        grad_input, grad_weight = _conv2d_backward(grad_output, x, weight, stride, padding, dilation, groups,
                                                   channels_last, allow_tf32, tile, backend, need_input, need_weight)
    if need_bias:
        grad_bias = grad_output.sum((0, 2, 3), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
        grad_bias = grad_bias.to(x.dtype)
    return (grad_input if need_input else None, grad_weight if need_weight else None, grad_bias,
            grad_output if need_residual else None, *([None] * (len(ctx.needs_input_grad) - 4)))


_conv2d = define(
    "conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor? residual, int[] stride, int[] padding, int[] dilation, "
    "int groups, int[] output_size, bool relu, bool channels_last, bool allow_tf32, int tile, str backend, "
    "float negative_slope=0.0) -> Tensor",
    _conv2d_impl, _conv2d_fake, setup_context=_setup_context, backward=_backward)


def _conv2d_plain(x: Tensor, weight: Tensor, stride: list[int], padding: list[int], dilation: list[int], groups: int,
                  output_size: list[int], channels_last: bool, allow_tf32: bool, tile: int, backend: str) -> Tensor:
    """conv2d without bias, residual or activation through the dlk op: the derivatives built from conv2d
    (here and dlkernels/ops/conv_transpose2d.py) call this."""
    return _conv2d(x, weight, None, None, stride, padding, dilation, groups, output_size, False, channels_last,
                   allow_tf32, tile, backend)


# ----------------------------------------------------------------------------- argument handling
def _padding(padding, weight: Tensor, dilation: tuple[int, int], stride: tuple[int, int]) -> tuple[tuple, tuple]:
    """(top, left) and (bottom, right) padding; "same" puts the odd extra row/column last, as torch."""
    kernel = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding != "same":
            raise ValueError(f"{OP}: padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{OP}: padding='same' is not supported for strided convolutions, got stride {stride}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        begin = tuple(t // 2 for t in total)
        return begin, tuple(t - b for t, b in zip(total, begin))
    pads = pair(OP, "padding", padding, minimum=0)
    return pads, pads


def _winograd_eligible(weight: Tensor, stride, dilation, groups: int) -> bool:
    return tuple(weight.shape[2:]) == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1


def precision_of(dtype: torch.dtype, allow_tf32: bool) -> str:
    """The arithmetic a call runs at: the dtype's name, or "tf32" for fp32 with TF32 allowed."""
    return "tf32" if dtype == torch.float32 and allow_tf32 else str(dtype).removeprefix("torch.")


# The measured choice (like torch.backends.cudnn.benchmark): off by default; see set_benchmark.
_BENCHMARK = {"enabled": False}
_MEASURED_TILES: dict[tuple, int] = {}


def set_benchmark(enabled: bool) -> None:
    """Let algo="auto" time its candidates (direct and the accurate Winograd tiles) on the first call of each
    shape, dtype, layout and backend, and keep the fastest, as torch.backends.cudnn.benchmark does. Never
    applies under torch.compile, where the heuristic decides. dlkernels.autotune(True) switches this on too."""
    _BENCHMARK["enabled"] = bool(enabled)
    _MEASURED_TILES.clear()


def _measured_tile(candidates: list[int], run, key: tuple, device: torch.device) -> int:
    if key not in _MEASURED_TILES:
        with torch.no_grad():
            times = {tile: elapsed_seconds(lambda: run(tile), device) for tile in candidates}
        _MEASURED_TILES[key] = min(times, key=times.get)
    return _MEASURED_TILES[key]


def _tile_for(algo: str, x: Tensor, weight: Tensor, stride, dilation, groups: int, output_size,
              allow_tf32: bool) -> int:
    eligible = _winograd_eligible(weight, stride, dilation, groups)
    if algo == "direct":
        return DIRECT
    if algo != "auto":
        if not eligible:
            raise ValueError(f"{OP}: algo={algo!r} needs a 3x3 kernel, stride 1, dilation 1 and groups 1; got kernel "
                             f"{tuple(weight.shape[2:])}, stride {stride}, dilation {dilation}, groups {groups}")
        if algo == "winograd_2x2":
            return 2
        if algo == "winograd_4x4":
            return 4
        accurate = ACCURATE_WINOGRAD_TILES[precision_of(x.dtype, allow_tf32)]
        return accurate[0] if accurate else 2  # the more accurate tile unless F(4,3) meets the bar
    accurate = ACCURATE_WINOGRAD_TILES[precision_of(x.dtype, allow_tf32)]
    big_enough = (min(x.shape[1], weight.shape[0]) >= WINOGRAD_MIN_CHANNELS
                  and output_size[0] * output_size[1] >= WINOGRAD_MIN_OUTPUT_POSITIONS)
    return accurate[0] if eligible and accurate and big_enough else DIRECT


# Inference: the transformed Winograd weight is reused while the weight tensor is unchanged: its version
# counter moves on every in-place update (an optimizer step, load_state_dict), its data pointer when
# `weight.data = other` rebinds it. An in-place edit through `weight.data` moves neither (it is invisible to
# autograd's checks too): after one, call clear_weight_cache().
_TRANSFORMED_WEIGHTS = WeakTensorKeyDictionary()


def clear_weight_cache() -> None:
    """Forget every cached Winograd weight transform (needed only after in-place edits through `.data`)."""
    _TRANSFORMED_WEIGHTS.clear()


def _cached_transform(weight: Tensor, layout_weight: Tensor, tile: int, channels_last: bool, backend: str) -> Tensor:
    key = (weight._version, weight.data_ptr(), tuple(weight.stride()), tile, channels_last, backend, weight.dtype,
           weight.device)
    cached = _TRANSFORMED_WEIGHTS.get(weight)
    if cached is None or cached[0] != key:
        cached = (key, _winograd(backend).winograd_transform_weight(layout_weight, tile, channels_last))
        _TRANSFORMED_WEIGHTS[weight] = cached
    return cached[1]


def _check_activation(activation, negative_slope) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{OP}: activation must be None, 'relu' or 'leaky_relu', got {activation!r}")
    if activation == "leaky_relu" and (isinstance(negative_slope, bool)
                                       or not isinstance(negative_slope, (int, float))):
        raise TypeError(f"{OP}: negative_slope must be a float, got {negative_slope!r}")


def _validate(input, weight, bias, residual, groups, algo, activation, negative_slope) -> None:
    check_tensor(OP, "input", input, ranks=(3, 4))
    check_tensor(OP, "weight", weight, ranks=(4,), like=input)
    if bias is not None:
        check_tensor(OP, "bias", bias, ranks=(1,), like=input)
    if residual is not None:
        check_tensor(OP, "residual", residual, ranks=(input.dim(),), like=input)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{OP}: groups must be a positive int, got {groups!r}")
    channels, filters = input.shape[-3], weight.shape[0]
    if channels % groups or filters % groups:
        raise ValueError(f"{OP}: groups={groups} must divide both the input channels ({channels}) and the number of "
                         f"filters ({filters})")
    if weight.shape[1] * groups != channels:
        raise ValueError(f"{OP}: weight of shape {tuple(weight.shape)} expects {weight.shape[1] * groups} input "
                         f"channels with groups={groups}, but the input has {channels}")
    if bias is not None and bias.shape != (filters,):
        raise ValueError(f"{OP}: bias must have shape ({filters},), got {tuple(bias.shape)}")
    if algo not in ALGOS:
        raise ValueError(f"{OP}: algo must be one of {ALGOS}, got {algo!r}")
    _check_activation(activation, negative_slope)
    if activation == "leaky_relu" and not negative_slope >= 0:
        raise ValueError(f"{OP}: negative_slope must be >= 0 for our kernels (the backward reads the slope from the "
                         f"output's sign), got {negative_slope}; backend='auto' or 'torch' runs it")


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1,
           groups: int = 1, *, algo: str = "auto", activation: str | None = None, negative_slope: float = 0.01,
           residual: Tensor | None = None, backend: str = "auto") -> Tensor:
    """act(F.conv2d(input, weight, bias, stride, padding, dilation, groups) + residual).

    activation: None (identity), "relu" or "leaky_relu" (F.leaky_relu with `negative_slope`, torch's default
    0.01); negative_slope is read only for "leaky_relu". Our kernels run slopes >= 0 (slope 0 is ReLU exactly,
    -inf -> 0 included); a negative slope raises ValueError on an explicit backend of ours and runs torch under
    "auto". backend: "auto", "cuda", "triton", "reference" or "torch" (F.conv2d, then the residual add and the
    activation).
    algo (our kernels only): "direct" (implicit GEMM), "winograd" (3x3 stride-1 layers; F(4x4,3x3) where
    accurate, else F(2x2,3x3)), "winograd_2x2" / "winograd_4x4" to pick the tile, or "auto". fp32 inputs use
    TF32 tensor cores on GPU exactly when torch.backends.cudnn.allow_tf32 allows cuDNN to.
    """
    def prepare(chosen: str):
        return _prepare(input, weight, bias, stride, padding, dilation, groups, algo, activation, negative_slope,
                        residual, chosen)

    def run_torch():
        _check_activation(activation, negative_slope)
        out = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
        if residual is not None:
            out = out + residual
        if activation == "leaky_relu":
            return F.leaky_relu(out, negative_slope)
        return torch.relu(out) if activation == "relu" else out

    # The slope is no part of the key: it changes no kernel's speed.
    def key():
        return (tuple(input.shape), input.stride(), input.dtype, tuple(weight.shape), weight.stride(), bias is None,
                residual is None, str(stride), str(padding), str(dilation), groups, algo, activation)

    return dispatch(OP, backend, input, prepare, run_torch, key=key)


def _prepare(input, weight, bias, stride, padding, dilation, groups, algo, activation, negative_slope, residual,
             backend: str):
    """Validates one call for our backend `backend`; returns the thunk that runs it."""
    _validate(input, weight, bias, residual, groups, algo, activation, negative_slope)
    stride = pair(OP, "stride", stride, minimum=1)
    dilation = pair(OP, "dilation", dilation, minimum=1)
    begin, end = _padding(padding, weight, dilation, stride)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    res = residual if residual is None or batched else residual.unsqueeze(0)
    extents = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:])]
    padded = [size + b + e for size, b, e in zip(x.shape[2:], begin, end)]
    if any(p < k for p, k in zip(padded, extents)):
        raise ValueError(f"{OP}: the (dilated) kernel {tuple(extents)} is larger than the padded input "
                         f"{tuple(padded)}")
    output_size = [(p - k) // s + 1 for p, k, s in zip(padded, extents, stride)]
    if res is not None and list(res.shape) != [x.shape[0], weight.shape[0], *output_size]:
        raise ValueError(f"{OP}: residual must have the output's shape "
                         f"{(x.shape[0], weight.shape[0], *output_size)[0 if batched else 1:]}, "
                         f"got {tuple(residual.shape)}")
    channels_last = layout_of(x) == torch.channels_last
    fmt = _memory_format(channels_last)
    allow_tf32 = x.dtype == torch.float32 and x.device.type == "cuda" and torch.backends.cudnn.allow_tf32
    tile = _tile_for(algo, x, weight, stride, dilation, groups, output_size, allow_tf32)

    def run():
        nonlocal tile
        x_, w = as_layout(x, fmt), as_layout(weight, fmt)
        res_ = None if res is None else as_layout(res, fmt)
        bias_ = None if bias is None else bias.contiguous()
        relu = activation is not None
        slope = float(negative_slope) if activation == "leaky_relu" else 0.0  # ReLU is slope 0
        accurate = ACCURATE_WINOGRAD_TILES[precision_of(x.dtype, allow_tf32)]
        if (algo == "auto" and (_BENCHMARK["enabled"] or autotune_enabled()) and accurate
                and _winograd_eligible(weight, stride, dilation, groups) and not torch.compiler.is_compiling()
                and not capturing()):  # timing syncs: a graph capture keeps the heuristic's tile
            key = (tuple(x.shape), tuple(weight.shape), x.dtype, channels_last, tuple(begin), tuple(output_size),
                   allow_tf32, backend)
            launch = lambda t: _conv2d(x_, w, bias_, res_, list(stride), list(begin), list(dilation), groups,  # noqa: E731
                                       output_size, relu, channels_last, allow_tf32, t, backend, slope)
            tile = _measured_tile([DIRECT, *accurate], launch, key, x.device)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (input, weight, bias, residual))
        if tile != DIRECT and not needs_grad and not torch.compiler.is_compiling() and not weight.is_inference():
            transformed = _cached_transform(weight, w, tile, channels_last, backend)
            out = _winograd(backend).conv2d_winograd(x_, transformed, bias_, res_, list(begin), output_size, tile,
                                                     relu, channels_last, allow_tf32, slope)
        else:
            out = _conv2d(x_, w, bias_, res_, list(stride), list(begin), list(dilation), groups, output_size, relu,
                          channels_last, allow_tf32, tile, backend, slope)
        return out if batched else out.squeeze(0)
    return run


__all__ = ["ACCURATE_WINOGRAD_TILES", "ALGOS", "clear_weight_cache", "conv2d", "precision_of", "set_benchmark"]
