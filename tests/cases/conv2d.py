"""Cases of the conv2d family: dlkernels.conv2d, direct (dense, grouped, depthwise) and Winograd, with the fused
bias + residual + activation epilogue (contract: tests/cases/__init__.py).

Case arguments: `shape` (N, C, H, W), `filters`, `kernel` (R, S), `bias`, `residual`, `dtype`, `layout` and
`values` build the tensors; the others (stride, padding, dilation, groups, algo, activation) go to the op.

Tiles, read from their sources: the C++ reference's direct loops have none, its Winograd output tiles are the
`winograd_forward<m, T>` instantiations of csrc/cpu/conv2d.cpp; the Triton interpreter runs the first config of
each list in triton_kernels/conv2d.py (GEMM BLOCK_M x BLOCK_N x BLOCK_K, _FLAT_BELOW, depthwise BLOCK,
_MAX_TAPS) and triton_kernels/conv2d_winograd.py (BLOCK_T, BLOCK_K, BLOCK_C).

Accuracy bar (as tests/test_conv2d.py): against float64 torch, max |ours - ref| <= factor x max |torch in the
same dtype - ref| + 4 rounding units of max |ref| (32 x factor units in float64); factor 2 for direct,
4 / 64 for Winograd F(2,3) / F(4,3), whose transforms round operands to the input dtype.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

import dlkernels
from cases import around, case, rng
from cases._spatial import DTYPES, assert_refused, case_seed, fill, in_layout, randn

FAMILY = "conv2d"
TENSOR_ARGS = ("shape", "filters", "kernel", "bias", "residual", "dtype", "layout", "values")
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}
ERROR_FACTOR = {"direct": 2.0, "winograd_2x2": 4.0, "winograd": 4.0, "winograd_4x4": 64.0}
_CPP_SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "cpu" / "conv2d.cpp"


def tiles() -> dict[str, int]:
    from dlkernels.triton_kernels import conv2d as direct, conv2d_winograd as winograd
    gemm, wino_input, wino_gemm = (direct._GEMM_CONFIGS[0].kwargs, winograd._INPUT_CONFIGS[0].kwargs,
                                   winograd._GEMM_CONFIGS[0].kwargs)
    cpp_tiles = sorted({int(m) for m in re.findall(r"winograd_forward<(\d+), T>", _CPP_SOURCE.read_text())})
    return {"block_m": gemm["BLOCK_M"], "block_n": gemm["BLOCK_N"], "block_k": gemm["BLOCK_K"],
            "flat_below": direct._FLAT_BELOW, "depthwise_block": direct._DEPTHWISE_CONFIGS[0].kwargs["BLOCK"],
            "max_taps": direct._MAX_TAPS, "max_block_c": direct._MAX_BLOCK_C,
            "winograd_input_block_t": wino_input["BLOCK_T"], "winograd_block_t": wino_gemm["BLOCK_T"],
            "winograd_block_k": wino_gemm["BLOCK_K"], "winograd_block_c": wino_gemm["BLOCK_C"],
            "cpp_winograd_tiles": cpp_tiles}


def _case(why, tags=(), grad=True, **args):
    args.setdefault("bias", True)
    return case(FAMILY, "conv2d", why, grad=grad, tags=tags, **args)


def _activations():
    import importlib
    op = importlib.import_module("dlkernels.ops.conv2d")  # the package exports the function under this name
    return [a for a in op.ACTIVATIONS if a is not None]


def boundary_cases() -> list:
    t = tiles()
    cases = []
    add = cases.append
    # --- one axis does not stand for the other
    add(_case("dilation along W only", shape=(1, 3, 8, 11), filters=4, kernel=(3, 3), dilation=(1, 3),
              padding=(1, 2)))
    add(_case("dilation along H only, stride along W only", shape=(2, 3, 11, 7), filters=5, kernel=(3, 2),
              dilation=(2, 1), stride=(1, 2), padding=(2, 0)))
    add(_case("stride, padding, kernel all differ per axis", shape=(1, 4, 10, 9), filters=3, kernel=(5, 3),
              stride=(3, 2), padding=(2, 1), residual=True, activation="relu"))
    add(_case("padding same with an even kernel, dilation along W", shape=(1, 3, 6, 9), filters=2, kernel=(2, 4),
              dilation=(1, 2), padding="same"))
    add(_case("padding valid, no bias", shape=(1, 3, 7, 6), filters=4, kernel=(2, 3), padding="valid", bias=False))
    # --- epilogues and layouts, every backend
    for activation in _activations():
        for layout in ("nchw", "channels_last"):
            add(_case(f"{activation} with residual, {layout}", shape=(2, 4, 6, 5), filters=6, kernel=(3, 3),
                      padding=1, residual=True, activation=activation, layout=layout))
    add(_case("strided input", shape=(1, 4, 7, 6), filters=3, kernel=(3, 2), padding=(1, 0), layout="strided"))
    add(_case("transposed input, groups", shape=(1, 6, 6, 8), filters=4, kernel=(3, 3), groups=2,
              stride=(2, 1), padding=1, layout="transposed"))
    add(_case("3-D batchless input", shape=(3, 6, 7), filters=4, kernel=(3, 3), padding=(0, 1)))
    add(_case("NaN through relu", shape=(1, 3, 6, 7), filters=3, kernel=(3, 3), padding=1, values="nan",
              activation="relu", grad=False))
    for dtype in ("float16", "bfloat16", "float64"):
        add(_case(dtype, shape=(1, 6, 5, 7), filters=4, kernel=(3, 2), stride=(1, 2), padding=(1, 1), groups=2,
                  dtype=dtype, layout="channels_last", residual=True, activation="relu"))
    # --- Triton GEMM tiles: M = N*P*Q pixels, N = filters per group, K = channels per group x taps
    for pixels in around(t["block_m"]):
        add(_case(f"{pixels} output pixels around BLOCK_M", shape=(1, 3, 1 + 2, pixels + 2), filters=3,
                  kernel=(3, 3)))
    for filters in around(t["block_n"]):
        add(_case(f"{filters} filters around BLOCK_N (dgrad: channels)", shape=(1, 4, 4, 5), filters=filters,
                  kernel=(2, 3), padding=(0, 1), layout="channels_last"))
    for channels in sorted({t["flat_below"] - 1, t["flat_below"], t["block_k"] + 1}):
        add(_case(f"{channels} channels per group: flat / tap-major steps around BLOCK_K",
                  shape=(1, 2 * channels, 4, 3), filters=4, groups=2, kernel=(2, 3), padding=(1, 1), stride=(2, 1)))
    # --- depthwise: [pixels, channels] tiles, taps per wgrad pass, channel blocks in channels_last
    block = t["depthwise_block"]
    for total in around(block):  # NCHW: one channel, so the outputs of a tile are one run of `total`
        out_h = max(h for h in range(1, int(total**0.5) + 1) if total % h == 0)
        add(_case(f"depthwise, {total} outputs around its BLOCK", shape=(1, 1, out_h + 1, total // out_h + 2),
                  filters=1, groups=1, kernel=(2, 3), padding=(0, 0)))
    for taps, kernel in zip(around(t["max_taps"]), ((3, 5), (2, 8), (1, 17))):
        assert kernel[0] * kernel[1] == taps
        add(_case(f"depthwise, {taps} taps around _MAX_TAPS", shape=(1, 3, 4, 19), filters=3, groups=3,
                  kernel=kernel, padding=(kernel[0] // 2, 1), dilation=(1, 1), layout="channels_last"))
    add(_case("depthwise channels_last, C above the channel block, stride and dilation per axis",
              shape=(1, t["max_block_c"] + 1, 5, 4), filters=t["max_block_c"] + 1, groups=t["max_block_c"] + 1,
              kernel=(3, 3), stride=(2, 1), dilation=(1, 2), padding=(1, 2), layout="channels_last"))
    add(_case("depthwise multiplier 2 is not depthwise: grouped GEMM", shape=(1, 3, 5, 6), filters=6, groups=3,
              kernel=(3, 3), padding=1))
    # --- Winograd (public algo): output tiles of the C++ reference, BLOCK_T / BLOCK_K / BLOCK_C of Triton
    for tile in t["cpp_winograd_tiles"]:
        for out_h in around(tile):
            add(_case(f"Winograd F({tile},3): {out_h} x {2 * tile + 1} outputs", shape=(1, 3, out_h, 2 * tile + 1),
                      filters=3, kernel=(3, 3), padding=(1, 1), algo=f"winograd_{tile}x{tile}"))
    add(_case("Winograd across BLOCK_T, BLOCK_K and BLOCK_C with residual, relu, channels_last",
              shape=(1, t["winograd_block_c"] + 1, 9, 15), filters=t["winograd_block_k"] + 1, kernel=(3, 3),
              padding=(1, 0), algo="winograd_2x2", residual=True, activation="relu", layout="channels_last"))
    add(_case("Winograd F(4,3), padding 2 along H only", shape=(2, 4, 5, 7), filters=3, kernel=(3, 3),
              padding=(2, 0), algo="winograd_4x4"))
    # --- invalid calls
    add(_case("kernel larger than the padded input along W", shape=(1, 2, 6, 3), filters=2, kernel=(3, 3),
              dilation=(1, 2), grad=False))
    add(_case("groups do not divide the channels", shape=(1, 4, 5, 5), filters=3, kernel=(3, 3), groups=2,
              grad=False, tags=("bad_weight",)))
    add(_case("stride 0 along W", shape=(1, 2, 5, 5), filters=2, kernel=(3, 3), stride=(1, 0), grad=False))
    add(_case("padding same with stride 2", shape=(1, 2, 6, 6), filters=2, kernel=(3, 3), stride=2, padding="same",
              grad=False))
    add(_case("residual of the wrong shape", shape=(1, 2, 6, 6), filters=2, kernel=(3, 3), residual="wrong",
              grad=False))
    add(_case("Winograd asked for a strided conv: ours refuse, torch has no algo", shape=(1, 2, 6, 6),
              filters=2, kernel=(3, 3), stride=(1, 2), algo="winograd", grad=False, tags=("ours_refuse",)))
    add(_case("empty batch: ours refuse, auto gives torch's result", shape=(0, 2, 5, 5), filters=2, kernel=(3, 3),
              grad=False, tags=("ours_refuse",)))
    return cases


def random_cases(seed: int, count: int) -> list:
    draw = rng(seed)
    cases = []
    for index in range(count):
        groups = draw.choice([1, 1, 1, 2, 3])
        depthwise = draw.random() < 0.2
        channels = groups * draw.randint(1, 6) if not depthwise else draw.randint(1, 8)
        groups = channels if depthwise else groups
        filters = channels if depthwise else groups * draw.randint(1, 6)
        kernel = (draw.randint(1, 4), draw.randint(1, 4))
        algo = "direct"
        args = dict(shape=(draw.randint(1, 2), channels, draw.randint(2, 10), draw.randint(2, 10)), filters=filters,
                    kernel=kernel, groups=groups, stride=(draw.randint(1, 3), draw.randint(1, 3)),
                    dilation=(draw.randint(1, 2), draw.randint(1, 2)),
                    padding=(draw.randint(0, kernel[0]), draw.randint(0, kernel[1])),
                    bias=draw.random() < 0.7, residual=draw.random() < 0.3,
                    activation=draw.choice([None, *_activations()]),
                    dtype=draw.choices(["float32", "float64", "float16", "bfloat16"], weights=[5, 3, 1, 1])[0],
                    layout=draw.choice(["nchw", "channels_last", "strided", "transposed"]))
        if draw.random() < 0.2:
            args.update(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), groups=1, filters=draw.randint(1, 6),
                        padding=(draw.randint(0, 2), draw.randint(0, 2)))
            algo = draw.choice(["winograd_2x2", "winograd_4x4"])
            # Winograd's fp16/bf16 error is the rounding of its transforms, which does not shrink with the few
            # channels drawn here while torch's does: tests/test_conv2d.py holds it to its bar with 48 channels.
            args["dtype"] = draw.choice(["float32", "float64"])
        cases.append(_case(f"random draw {index} of seed {seed}", algo=algo, **args))
    return cases


def _reference(x, weight, bias, residual, kwargs):
    conv_kwargs = {k: v for k, v in kwargs.items() if k in ("stride", "padding", "dilation", "groups")}
    y = F.conv2d(x, weight, bias, **conv_kwargs)
    if residual is not None:
        y = y + residual
    activation = kwargs.get("activation")
    return y if activation is None else getattr(F, activation)(y)


def _max_error(actual, reference):
    return (actual.double() - reference).abs().nan_to_num(0.0).max().item() if reference.numel() else 0.0


def _assert_accurate(case, backend, what, ours, same_dtype, reference, factor, scale=None):
    """scale: the magnitude the rounding floor is relative to, max |reference| unless given."""
    reference = reference.double()
    if tuple(ours.shape) != tuple(reference.shape) or ours.dtype != same_dtype.dtype:
        raise AssertionError(f"{case.id} [{backend}] {what}: {ours.dtype} {tuple(ours.shape)}, expected "
                             f"{same_dtype.dtype} {tuple(reference.shape)}")
    if not torch.equal(ours.isnan(), reference.isnan()):
        raise AssertionError(f"{case.id} [{backend}] {what}: NaNs in different places")
    ours_error, torch_error = _max_error(ours, reference), _max_error(same_dtype, reference)
    # A few rounding units of slack: sums of a handful of terms where torch's order happens to be exact.
    # Winograd's transforms amplify the rounding of their operands by about `factor` whatever the channel count,
    # while torch's error shrinks with few channels: its floor scales with the factor.
    units = 32 * factor if ours.dtype == torch.float64 else 4 * (factor if factor > 2 else 1)
    scale = reference.nan_to_num(0.0).abs().max().item() if scale is None else scale
    floor = units * UNIT_ROUNDOFF[ours.dtype] * scale
    if not ours_error <= factor * torch_error + floor:
        raise AssertionError(f"{case.id} [{backend}] {what}: max error {ours_error:.3e} > {factor} x torch's "
                             f"{torch_error:.3e} + {floor:.3e}")


def _tensors(case, generator):
    args = dict(case.args)
    dtype = DTYPES[args.get("dtype", "float32")]
    layout = args.get("layout", "nchw")
    shape = args["shape"]
    channels = shape[-3]
    groups = args.get("groups", 1)
    kernel = args["kernel"]
    fan_in = max(1, channels // groups * kernel[0] * kernel[1])
    x = in_layout(fill(shape, dtype, generator, args.get("values", "randn")), layout)
    weight_channels = channels // groups if "bad_weight" not in case.tags else channels // 2
    weight = in_layout(randn((args["filters"], weight_channels, *kernel), dtype, generator, fan_in**-0.5), layout)
    bias = randn((args["filters"],), dtype, generator) if args.get("bias") else None
    residual = None
    if args.get("residual"):
        try:
            out_shape = _reference(x.double(), weight.double(), None, None, _op_args(case)).shape
        except RuntimeError:
            out_shape = (*shape[:-3], args["filters"], 1, 1)
        if args["residual"] == "wrong":
            out_shape = (*out_shape[:-1], out_shape[-1] + 1)
        residual = in_layout(randn(out_shape, dtype, generator), layout)
    return dtype, x, weight, bias, residual


def _op_args(case):
    return {k: v for k, v in case.args if k not in TENSOR_ARGS}


def check(case, backend: str) -> None:
    kwargs = _op_args(case)
    generator = torch.Generator().manual_seed(case_seed(case))
    dtype, x, weight, bias, residual = _tensors(case, generator)
    algo = kwargs.pop("algo", "direct")

    def ours(chosen, x=x, weight=weight, bias=bias, residual=residual):
        return dlkernels.conv2d(x, weight, bias, **kwargs, algo=algo, residual=residual, backend=chosen)

    def torch_call():
        return _reference(x, weight, bias, residual, kwargs)

    torch_error = None
    try:
        same_dtype = torch_call()
    except Exception as error:  # noqa: BLE001 - torch's verdict on the call
        torch_error = error
    if torch_error is not None or "ours_refuse" in case.tags:
        assert_refused(case, backend, lambda chosen: ours(chosen), torch_error, torch_call)
        return

    inputs = [t if t is None else t.detach().requires_grad_(case.grad) for t in (x, weight, bias, residual)]
    inputs64 = [t if t is None else t.detach().double().requires_grad_(case.grad) for t in (x, weight, bias, residual)]
    same_inputs = [t if t is None else t.detach().requires_grad_(case.grad) for t in (x, weight, bias, residual)]
    actual = ours(backend, *inputs)
    same_dtype = _reference(*same_inputs, kwargs)
    expected = _reference(*inputs64, kwargs)
    factor = ERROR_FACTOR[algo]
    _assert_accurate(case, backend, "output", actual, same_dtype, expected, factor)
    if case.get("layout", "nchw") == "channels_last" and actual.dim() == 4 and (
            actual.is_contiguous(memory_format=torch.channels_last)
            != same_dtype.is_contiguous(memory_format=torch.channels_last)):
        raise AssertionError(f"{case.id} [{backend}] strides {actual.stride()} are not torch's {same_dtype.stride()}")
    if not case.grad:
        return
    grad_output = randn(expected.shape, dtype, generator)
    names = ("input", "weight", "bias", "residual")
    wanted = [i for i, t in enumerate(inputs) if t is not None]
    grads = torch.autograd.grad(actual, [inputs[i] for i in wanted], grad_output)
    grads_same = torch.autograd.grad(same_dtype, [same_inputs[i] for i in wanted], grad_output)
    grads64 = torch.autograd.grad(expected, [inputs64[i] for i in wanted], grad_output.double())
    for i, g, g_same, g64 in zip(wanted, grads, grads_same, grads64):
        # Winograd's data gradient is a Winograd conv too; its weight gradient is the direct kernel's.
        # The bias gradient is a sum of many terms that may cancel: its rounding floor is relative to sum |terms|.
        scale = grad_output.double().abs().sum((0, 2, 3) if grad_output.dim() == 4 else (1, 2)).max().item() \
            if names[i] == "bias" else None
        _assert_accurate(case, backend, f"grad {names[i]}", g, g_same, g64, factor if names[i] == "input" else 2.0,
                         scale)
