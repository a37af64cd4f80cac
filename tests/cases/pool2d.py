"""Cases of the pool2d family: max_pool2d, avg_pool2d, adaptive_avg_pool2d (contract: tests/cases/__init__.py).

Case arguments: `shape`, `dtype`, `layout` (see _spatial.LAYOUTS) and `values` build the input; every other
argument goes to the op as given, so an argument left out is at torch's default.

Tiles. The C++ reference (csrc/cpu/pool2d.cpp) loops over whole planes: it has no tile. The Triton kernels'
interpreter config (the first of triton_kernels/pool2d.py's _CONFIGS) owns BLOCK elements per program: in
NCHW a run of BLOCK outputs (forward) or inputs (backward); in channels_last BLOCK_C = channel_block(C)
channels (at most _MAX_BLOCK_C) times BLOCK // BLOCK_C pixels. The boundary cases place output and input
counts just below, at and above those sizes, read from the kernel module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import dlkernels
from cases import around, case, rng
from cases._spatial import DTYPES, LAYOUTS, assert_matches, assert_refused, case_seed, fill, in_layout

FAMILY = "pool2d"
OPS = ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d")
INPUT_ARGS = ("shape", "dtype", "layout", "values")


def triton_tiles() -> dict[str, int]:
    """Tile sizes of the Triton kernels' interpreter config, from the kernel module itself."""
    from dlkernels.triton_kernels import _common, pool2d as kernels
    block = kernels._CONFIGS[0].kwargs["BLOCK"]
    max_block_c = kernels._MAX_BLOCK_C
    return {"block": block, "max_block_c": max_block_c,
            "pixels_at_max_c": block // _common.channel_block(max_block_c, max_block_c),
            "pixels_at_3_channels": block // _common.channel_block(3, max_block_c)}


def _case(op, why, tags=(), **args):
    return case(FAMILY, op, why, tags=tags, **args)


def _input_size(out, kernel, stride, pad, dilation=1):
    """The input size whose floor-mode output size is exactly `out`."""
    return (out - 1) * stride + dilation * (kernel - 1) + 1 - 2 * pad


def _planes_and_grid(total: int, max_planes: int = 8) -> tuple[int, int, int]:
    """(planes, h, w) with planes * h * w == total and 1 < h < w where some split allows: counts that land
    exactly on a tile size without a square grid."""
    for planes in range(1, max_planes + 1):
        if total % planes == 0:
            rest = total // planes
            sides = [h for h in range(2, rest) if rest % h == 0 and h * h < rest]
            if sides:
                return planes, sides[-1], rest // sides[-1]
    return 1, 1, total


def boundary_cases() -> list:
    tiles = triton_tiles()
    cases = []
    add = cases.append

    # --- one axis does not stand for the other: geometry different per axis, H != W
    add(_case("max_pool2d", "dilation along W only (a kernel ignoring W dilation fails)", shape=(2, 3, 9, 13),
              kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(1, 3), return_indices=True))
    add(_case("max_pool2d", "dilation along H only, stride along W only", shape=(1, 2, 14, 8),
              kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(3, 1), return_indices=True))
    add(_case("max_pool2d", "dilation on both axes, different, channels_last", shape=(2, 5, 11, 12),
              layout="channels_last", kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 3),
              return_indices=True))
    add(_case("avg_pool2d", "kernel, stride and padding all differ per axis", shape=(2, 3, 10, 7),
              kernel_size=(4, 3), stride=(3, 1), padding=(2, 0)))
    add(_case("adaptive_avg_pool2d", "uneven windows, different per axis, output taller than wide",
              shape=(2, 3, 13, 7), output_size=(5, 3)))
    add(_case("adaptive_avg_pool2d", "output larger than input along W: overlapping windows",
              shape=(1, 4, 9, 4), output_size=(2, 7), layout="channels_last"))
    add(_case("adaptive_avg_pool2d", "None keeps the input's W", shape=(1, 3, 8, 5), output_size=(3, None)))

    # --- every argument off its default
    # ceil_mode: the last window starts inside the input but hangs past the right padding along W only
    # (H 5, W 6 with kernel 3, stride 2, padding 1); ATen then counts the window only up to input + padding.
    for include_pad in (True, False):
        for layout in ("nchw", "channels_last"):
            add(_case("avg_pool2d", "ceil_mode window past the right padding", shape=(2, 3, 5, 6), layout=layout,
                      kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=include_pad))
    add(_case("avg_pool2d", "ceil_mode without padding, H and W differ", shape=(1, 2, 7, 10),
              kernel_size=(2, 3), stride=(2, 3), ceil_mode=True, count_include_pad=False))
    add(_case("avg_pool2d", "ceil_mode drops a window that would start in the right padding (W)",
              shape=(1, 2, 6, 5), kernel_size=2, stride=2, padding=1, ceil_mode=True))
    add(_case("max_pool2d", "ceil_mode past the edge with dilation", shape=(1, 3, 8, 11), kernel_size=(2, 3),
              stride=(3, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True, return_indices=True))
    for divisor in (5, -3):
        add(_case("avg_pool2d", "divisor_override replaces the count", shape=(2, 3, 7, 9), kernel_size=(3, 2),
                  stride=(2, 1), padding=(1, 0), divisor_override=divisor))
    add(_case("avg_pool2d", "divisor_override with ceil_mode and count_include_pad=False", shape=(1, 4, 5, 6),
              layout="channels_last", kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
              divisor_override=4))
    add(_case("max_pool2d", "return_indices off: only values and gradients", shape=(2, 3, 7, 6), kernel_size=3,
              stride=(2, 1), padding=1))
    add(_case("max_pool2d", "stride None is the kernel", shape=(1, 3, 9, 8), kernel_size=(3, 2), stride=None,
              return_indices=True))

    # --- layouts and dtypes
    for layout in ("strided", "transposed"):
        add(_case("max_pool2d", f"{layout} input", shape=(2, 3, 8, 7), layout=layout, kernel_size=3, stride=2,
                  padding=1, return_indices=True))
        add(_case("avg_pool2d", f"{layout} input", shape=(2, 3, 8, 7), layout=layout, kernel_size=(2, 3),
                  stride=(1, 2), padding=(1, 1), count_include_pad=False))
    add(_case("adaptive_avg_pool2d", "strided input", shape=(1, 3, 9, 6), layout="strided", output_size=(4, 4)))
    add(_case("max_pool2d", "batchless 3-D input", shape=(3, 7, 9), kernel_size=3, stride=2, return_indices=True))
    for dtype in ("float16", "bfloat16", "float64"):
        add(_case("max_pool2d", f"{dtype}", shape=(2, 4, 7, 9), dtype=dtype, layout="channels_last",
                  kernel_size=3, stride=2, padding=1, return_indices=True))
        add(_case("avg_pool2d", f"{dtype}", shape=(2, 4, 9, 7), dtype=dtype, kernel_size=3, stride=(2, 1),
                  padding=1, ceil_mode=True, count_include_pad=False))
        add(_case("adaptive_avg_pool2d", f"{dtype}", shape=(1, 4, 11, 6), dtype=dtype, output_size=(3, 4)))

    # --- more than one witness: NaN propagation, all -inf windows and tie-breaking, in both layouts
    for layout in ("nchw", "channels_last"):
        add(_case("max_pool2d", "NaN wins, all -inf windows keep an index inside", shape=(1, 3, 7, 8),
                  layout=layout, values="nan", kernel_size=3, stride=2, padding=1, return_indices=True))
        add(_case("max_pool2d", "ties take the first index", shape=(2, 3, 8, 9), layout=layout, values="ties",
                  kernel_size=(3, 2), stride=1, padding=1, return_indices=True))
        add(_case("avg_pool2d", "NaN propagates", shape=(1, 3, 7, 8), layout=layout, values="nan",
                  kernel_size=3, stride=2, padding=1))

    # Windows whose taps all fall in the padding: ATen seeds their index at a position past the plane (H 1)
    # or inside it but outside the window (W 1); either way their gradient must reach no input.
    add(_case("max_pool2d", "empty windows, index past the plane: no gradient", shape=(1, 3, 1, 5),
              kernel_size=(2, 3), stride=1, padding=(1, 1), dilation=(2, 1), return_indices=True))
    add(_case("max_pool2d", "empty windows, index inside the plane: no gradient", shape=(2, 3, 3, 1),
              layout="channels_last", kernel_size=(4, 2), stride=3, padding=(2, 1), dilation=2, ceil_mode=True))

    # --- tile boundaries of the Triton interpreter config (the C++ reference has none)
    block = tiles["block"]
    for total in around(block):  # NCHW forward: a run of `block` outputs per program
        planes, out_h, out_w = _planes_and_grid(total)
        add(_case("max_pool2d", f"{total} outputs around the {block}-element tile", shape=(1, planes,
                  _input_size(out_h, 3, 2, 1), _input_size(out_w, 2, 1, 0, dilation=2)),
                  kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), return_indices=True))
        add(_case("adaptive_avg_pool2d", f"{total} outputs around the {block}-element tile",
                  shape=(1, planes, out_h + 3, out_w // 2 + 1), output_size=(out_h, out_w)))
    for total in around(block):  # NCHW backward: a run of `block` inputs per program
        planes, in_h, in_w = _planes_and_grid(total)
        add(_case("avg_pool2d", f"{total} inputs around the {block}-element tile", shape=(1, planes, in_h, in_w),
                  kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), count_include_pad=False))
    max_c = tiles["max_block_c"]
    pixels = tiles["pixels_at_max_c"]
    _, out_h, out_w = _planes_and_grid(pixels + 1, max_planes=1)
    for channels in around(max_c):  # channels_last: channel blocks, pixels per tile = block // BLOCK_C
        add(_case("max_pool2d", f"{channels} channels around the {max_c}-channel block, {pixels + 1} pixels",
                  shape=(1, channels, _input_size(out_h, 2, 2, 0), _input_size(out_w, 2, 2, 1)),
                  layout="channels_last", kernel_size=2, stride=2, padding=(0, 1), return_indices=True))
    add(_case("avg_pool2d", f"{2 * max_c - 32} channels: a block that divides C", shape=(1, 2 * max_c - 32, 3, 5),
              layout="channels_last", kernel_size=2, stride=1, padding=1))
    pixels = tiles["pixels_at_3_channels"]
    for total in around(pixels):  # channels_last with C = 3: a tile of `pixels` pixels of 4 channel lanes
        _, out_h, out_w = _planes_and_grid(total, max_planes=1)
        add(_case("max_pool2d", f"{total} output pixels around the {pixels}-pixel channels_last tile",
                  shape=(1, 3, _input_size(out_h, 2, 1, 0), _input_size(out_w, 3, 1, 1)), layout="channels_last",
                  kernel_size=(2, 3), stride=1, padding=(0, 1), return_indices=True))
        add(_case("adaptive_avg_pool2d", f"{total} input pixels around the {pixels}-pixel channels_last tile",
                  shape=(1, 3, out_h, out_w), layout="channels_last", output_size=(3, 5)))

    # --- invalid calls: a clear error on ours, torch's error through auto
    add(_case("max_pool2d", "padding over half the kernel along W only", shape=(1, 2, 9, 9), kernel_size=(3, 3),
              padding=(1, 2), grad=False))
    add(_case("avg_pool2d", "padding over half the kernel", shape=(1, 2, 9, 9), kernel_size=(2, 4),
              padding=(2, 1), grad=False))
    add(_case("max_pool2d", "dilated kernel wider than the input along W only", shape=(1, 2, 9, 5),
              kernel_size=3, dilation=(1, 3), grad=False))
    add(_case("avg_pool2d", "kernel taller than the input", shape=(1, 2, 3, 9), kernel_size=(5, 2), grad=False))
    add(_case("max_pool2d", "stride 0 along W", shape=(1, 2, 6, 6), kernel_size=2, stride=(1, 0), grad=False))
    add(_case("max_pool2d", "negative padding", shape=(1, 2, 6, 6), kernel_size=3, padding=(-1, 0), grad=False))
    add(_case("avg_pool2d", "divisor_override 0", shape=(1, 2, 6, 6), kernel_size=2, divisor_override=0,
              grad=False))
    add(_case("adaptive_avg_pool2d", "output size 0 along W: ours refuse, torch gives an empty result",
              shape=(1, 2, 6, 6), output_size=(2, 0), grad=False, tags=("ours_refuse",)))
    add(_case("max_pool2d", "5-D input", shape=(1, 1, 2, 6, 6), kernel_size=2, grad=False))
    add(_case("avg_pool2d", "empty batch: ours refuse, auto gives torch's result", shape=(0, 2, 6, 6),
              kernel_size=2, grad=False, tags=("ours_refuse",)))
    add(_case("max_pool2d", "integer input: ours refuse, auto gives torch's result", shape=(1, 2, 6, 7),
              dtype="int32", values="int", kernel_size=2, grad=False, tags=("ours_refuse",)))
    return cases


def random_cases(seed: int, count: int) -> list:
    """Seeded draws over op, shape, geometry per axis, flags, dtype and layout. Some draws are invalid (a kernel
    wider than the padded input, padding over half the kernel); check() then expects the refusal."""
    draw = rng(seed)
    cases = []
    for index in range(count):
        op = draw.choice(OPS)
        channels = draw.choice([1, 2, 3, 5, 8, 16, 33, 64, 65])
        shape = (draw.randint(1, 2), channels, draw.randint(1, 14), draw.randint(1, 14))
        dtype = draw.choices(["float32", "float64", "float16", "bfloat16"], weights=[5, 3, 1, 1])[0]
        args = dict(shape=shape if draw.random() > 0.1 else shape[1:], dtype=dtype, layout=draw.choice(LAYOUTS),
                    values=draw.choices(["randn", "ties", "nan"], weights=[8, 1, 1])[0] if op == "max_pool2d"
                    else "randn")
        if op == "adaptive_avg_pool2d":
            args["output_size"] = tuple(draw.choice([None, draw.randint(1, 2 * size)]) if draw.random() < 0.2
                                        else draw.randint(1, 2 * size) for size in shape[2:])
        else:
            kernel = (draw.randint(1, 5), draw.randint(1, 5))
            args.update(kernel_size=kernel, stride=(draw.randint(1, 4), draw.randint(1, 4)),
                        padding=tuple(draw.randint(0, k // 2 + (draw.random() < 0.05)) for k in kernel),
                        ceil_mode=draw.random() < 0.5)
            if op == "max_pool2d":
                args.update(dilation=(draw.randint(1, 3), draw.randint(1, 3)), return_indices=draw.random() < 0.7)
            else:
                args.update(count_include_pad=draw.random() < 0.5,
                            divisor_override=draw.choice([None, None, draw.randint(1, 9)]))
        cases.append(_case(op, f"random draw {index} of seed {seed}", **args))
    return cases


def _call(op: str, x: torch.Tensor, kwargs: dict, backend: str | None):
    if backend is None:
        return getattr(F, op)(x, **kwargs)
    return getattr(dlkernels, op)(x, **kwargs, backend=backend)


def _empty_max_windows(in_size, out_size, args) -> torch.Tensor:
    """[out_h, out_w] mask of max-pool windows that hold no input position (every tap in the padding)."""
    def pair(value, default):
        value = default if value is None else value
        return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    kernel = pair(args["kernel_size"], None)
    stride, padding, dilation = pair(args.get("stride"), kernel), pair(args.get("padding"), 0), \
        pair(args.get("dilation"), 1)
    empty = []
    for axis in range(2):
        taps = [[o * stride[axis] - padding[axis] + j * dilation[axis] for j in range(kernel[axis])]
                for o in range(out_size[axis])]
        empty.append(torch.tensor([not any(0 <= t < in_size[axis] for t in row) for row in taps]))
    return empty[0][:, None] | empty[1][None, :]


def check(case, backend: str) -> None:
    args = dict(case.args)
    spec = {name: args.pop(name) for name in INPUT_ARGS if name in args}
    dtype = DTYPES[spec.get("dtype", "float32")]
    generator = torch.Generator().manual_seed(case_seed(case))
    x = in_layout(fill(spec["shape"], dtype, generator, spec.get("values", "randn")), spec.get("layout", "nchw"))

    torch_error = None
    try:
        same_dtype = _call(case.op, x, args, None)
    except Exception as error:  # noqa: BLE001 - torch's verdict on the call
        torch_error = error
    if torch_error is not None or "ours_refuse" in case.tags:
        assert_refused(case, backend, lambda b: _call(case.op, x, args, b), torch_error,
                       lambda: _call(case.op, x, args, None))
        return

    x64 = x.detach().double().requires_grad_(case.grad)
    ours_input = x.detach().requires_grad_(case.grad)
    expected = _call(case.op, x64, args, None)
    actual = _call(case.op, ours_input, args, backend)
    values, expected_values = (actual[0], expected[0]) if isinstance(expected, tuple) else (actual, expected)
    exact = case.op == "max_pool2d"  # a max is one of the inputs: no rounding anywhere
    assert_matches(case, backend, "output", values, expected_values, dtype, exact=exact)
    if isinstance(expected, tuple):
        assert_matches(case, backend, "indices", actual[1], expected[1], torch.int64, exact=True)
    layout_torch = same_dtype[0] if isinstance(same_dtype, tuple) else same_dtype
    if spec.get("layout", "nchw") in ("nchw", "channels_last") and values.dim() == 4:
        for fmt in (torch.channels_last, torch.contiguous_format):
            if values.is_contiguous(memory_format=fmt) != layout_torch.is_contiguous(memory_format=fmt):
                raise AssertionError(f"{case.id} [{backend}] output strides {values.stride()} are not torch's "
                                     f"{layout_torch.stride()}")
    if not case.grad:
        return
    grad_output = torch.randn(expected_values.shape, generator=generator, dtype=torch.float64)
    (grad,) = torch.autograd.grad(values, ours_input, grad_output.to(dtype))
    reference_grad_output = grad_output.to(dtype).double()
    if case.op == "max_pool2d":
        # A dilated window whose every tap lies in the padding outputs -inf with the index ATen seeds it with, a
        # position outside the window (past the plane, or in another row); torch's CPU backward adds that
        # output's gradient there, into an input the window never read. Ours send it nowhere.
        reference_grad_output[_empty_max_windows(x.shape[-2:], expected_values.shape[-2:], args)
                              .expand_as(reference_grad_output)] = 0
    (expected_grad,) = torch.autograd.grad(expected_values, x64, reference_grad_output)
    assert_matches(case, backend, "grad input", grad, expected_grad, dtype)
