"""Cases for dlkernels.batch_norm_relu (and its module BatchNormReLU2d): see tests/cases/__init__.py.

Tiles. The C++ reference has none: it loops over channels (OpenMP) and reduces every channel in
one pass, so only its arguments need covering. The Triton kernels tile [ROWS, INNER] elements with
BLOCK = ROWS * INNER taken from the first autotune config (the interpreter's): in channels_last
INNER is a block of channels (at most _MAX_BLOCK_C), in NCHW a run of one plane (_spatial_block);
reductions split each channel into chunks of whole tiles and merge the chunks' partials in blocks
of _MERGE_BLOCK_C channels. The shapes below are derived from those numbers through the kernel
module's own helpers, so they keep crossing the tiles if the configs change (test_cases_batch_norm
checks that they do). The merge kernel's _MERGE_BLOCK_K chunk blocks cannot be crossed on CPU: the
interpreter splits a channel into at most target_programs(cpu) = 8 chunks.
"""
from __future__ import annotations

import math
import re
import zlib

import torch
import torch.nn.functional as F

import dlkernels
import dlkernels.triton_kernels.batch_norm as triton_bn
from . import Case, around, case, rng

FAMILY = "batch_norm"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
# Statistics, running statistics and weight / bias gradients are fp32 reductions (fp64 for float64).
STAT_TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), None: dict(rtol=1e-4, atol=1e-5)}
# (rtol, atol) of outputs and input gradients against the float64 result rounded to the dtype: one
# rounding of the dtype (tests/helpers.py TOLERANCES, repeated here so the module imports alone).
TOLERANCES = {torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3), torch.float32: (1e-5, 1e-6),
              torch.float64: (1e-12, 1e-12)}

# --- the Triton kernels' tiles, from their module ---------------------------------------------
REDUCE_BLOCK = triton_bn._REDUCE_CONFIGS[0].kwargs["BLOCK"]
ELEMENTWISE_BLOCK = triton_bn._ELEMENTWISE_CONFIGS[0].kwargs["BLOCK"]
MAX_BLOCK_C = triton_bn._MAX_BLOCK_C
MAX_BLOCK_S = triton_bn._MAX_BLOCK_S
MERGE_BLOCK_C = triton_bn._MERGE_BLOCK_C


def tile_inner(channels: int, spatial: int, channels_last: bool) -> int:
    """INNER of the Triton tile for this geometry (the kernels' own choice)."""
    return triton_bn._tile_inner(channels, spatial, channels_last)


def tile_rows(channels: int, spatial: int, channels_last: bool, block: int = REDUCE_BLOCK) -> int:
    return block // tile_inner(channels, spatial, channels_last)


def _first_spatial(predicate, start: int = 2) -> int:
    """The smallest plane size S >= start whose NCHW tile width satisfies predicate(S, INNER)."""
    return next(s for s in range(start, 1 << 16) if predicate(s, tile_inner(2, s, False)))


def _plane(spatial: int) -> tuple[int, int]:
    """(H, W) with H * W == spatial and H != W where possible (H < W), so H/W mix-ups show."""
    for h in range(2, math.isqrt(spatial) + 1):
        if spatial % h == 0 and h != spatial // h:
            return h, spatial // h
    return 1, spatial


def _images(rows: int) -> tuple[int, int, int]:
    """(N, H, W) with N * H * W == rows, H != W: `rows` positions of the (M, C) matrix."""
    for n in range(1, rows + 1):
        if rows % n == 0 and _plane(rows // n)[0] > 1:
            return n, *_plane(rows // n)
    return 1, 1, rows


# NCHW planes: one that needs several tiles with a tail, one that is a whole number of tiles, and
# one at the widest tile (_MAX_BLOCK_S).
SPATIAL_TAIL = _first_spatial(lambda s, inner: s > inner and s % inner != 0)
SPATIAL_WHOLE = _first_spatial(lambda s, inner: s > inner and s % inner == 0)
SPATIAL_WIDEST = 2 * MAX_BLOCK_S


# --- cases -------------------------------------------------------------------------------------
def _bn(why: str, shape, *, layout: str = "nchw", dtype: str = "float32", training: bool = True,
        momentum: float = 0.1, eps: float = 1e-5, affine: str = "both", running: bool = True,
        residual: str | None = None, activation: str | None = "relu", tags=()) -> Case:
    """residual: None, "same" (the input's layout) or "nchw" (contiguous, whatever the input's)."""
    return case(FAMILY, "batch_norm_relu", why, tags=tags, shape=tuple(shape), layout=layout, dtype=dtype,
                training=training, momentum=momentum, eps=eps, affine=affine, running=running, residual=residual,
                activation=activation)


def _error(why: str, error: str, match: str, **overrides) -> Case:
    """An invalid call: every backend must raise `error` matching `match`; auto must do what torch does."""
    args = dict(shape=(2, 3, 4, 5), layout="nchw", dtype="float32", training=True, momentum=0.1, eps=1e-5,
                affine="both", running=True, residual=None, activation="relu")
    args.update(overrides)
    return case(FAMILY, "batch_norm_relu", why, grad=False, tags=("error",), error=error, match=match, **args)


def boundary_cases() -> list[Case]:
    cases = []
    # channels_last: channel blocks below, at and above MAX_BLOCK_C (= the merge's MERGE_BLOCK_C),
    # each with (M = N*H*W) rows around one row tile, then several row tiles.
    for channels, extra_rows, options in zip(
            around(MAX_BLOCK_C), (1, 0, 1),
            (dict(eps=0.5), dict(training=False, residual="same", eps=0.25),
             dict(residual="nchw", activation=None, momentum=0.7))):
        rows = tile_rows(channels, 2, True) * (1 + (channels > MAX_BLOCK_C)) + extra_rows
        n, h, w = _images(rows)
        cases.append(_bn(f"channels_last, C={channels} around the channel block, M={rows} rows",
                         (n, channels, h, w), layout="channels_last", **options))
    # Few channels, many rows: several row tiles per chunk and empty trailing chunks.
    rows = tile_rows(3, 2, True) + 7
    cases.append(_bn("channels_last, C=3, rows over one tile, eps and momentum off default",
                     (*_images(rows)[:1], 3, *_images(rows)[1:]), layout="channels_last", eps=1e-3, momentum=0.0))
    # NCHW: planes crossing the spatial tile with a tail, and images around one row tile.
    tail_rows = tile_rows(2, SPATIAL_TAIL, False)
    for batch, options in zip(around(tail_rows), (dict(training=False, affine="weight"), dict(eps=0.5),
                                                  dict(residual="same", activation=None, affine="bias"))):
        cases.append(_bn(f"NCHW, S={SPATIAL_TAIL} over tiles of {tile_inner(2, SPATIAL_TAIL, False)}, N={batch}",
                         (batch, 2, *_plane(SPATIAL_TAIL)), **options))
    cases.append(_bn(f"NCHW, S={SPATIAL_WHOLE}: whole tiles; no affine, no running statistics",
                     (3, 2, *_plane(SPATIAL_WHOLE)), affine="none", running=False))
    cases.append(_bn(f"NCHW, C=1, S={SPATIAL_WIDEST}: the widest tile, momentum 1",
                     (2, 1, *_plane(SPATIAL_WIDEST)), momentum=1.0))
    # (N, C) and (N, C, L): spatial 1 runs the channels_last kernels, over two channel blocks.
    cases.append(_bn("(N, C) over two channel blocks", (9, MAX_BLOCK_C + 1), eps=0.1))
    cases.append(_bn("(N, C, L), eval with eps", (5, 3, 37), training=False, eps=0.5, residual="same"))
    # Layouts: non-contiguous views in both layouts, residual in the other layout.
    cases.append(_bn("strided NCHW view", (3, 4, 3, 5), layout="strided", residual="same", eps=0.3))
    cases.append(_bn("strided channels_last view, NCHW residual", (3, 5, 2, 3), layout="strided_channels_last",
                     residual="nchw", training=False))
    # dtypes: float64 (tight), float16 and bfloat16 samples.
    cases.append(_bn("float64 channels_last training", (3, 5, 2, 3), layout="channels_last", dtype="float64",
                     eps=0.2, momentum=0.0))
    cases.append(_bn("float64 eval", (2, 3, 3, 4), dtype="float64", training=False, affine="none", eps=0.1))
    cases.append(_bn("float16 training", (4, 3, 3, 5), dtype="float16", residual="same", eps=0.1))
    cases.append(_bn("bfloat16 channels_last training", (2, 6, 3, 2), layout="channels_last", dtype="bfloat16",
                     running=False, activation=None))
    # The module: momentum=None (cumulative average over steps) and no running statistics.
    cases.append(case(FAMILY, "BatchNormReLU2d", "module, momentum=None over two steps", shape=(3, 4, 2, 5),
                      momentum=None, eps=0.1, track_running_stats=True, steps=2))
    cases.append(case(FAMILY, "BatchNormReLU2d", "module without running statistics", shape=(3, 4, 2, 5),
                      momentum=0.1, eps=1e-5, track_running_stats=False, steps=1))
    return cases + error_cases()


def error_cases() -> list[Case]:
    return [
        _error("momentum above 1", "ValueError", "momentum must be in", momentum=1.5),
        _error("negative eps", "ValueError", "eps must be >= 0", eps=-1e-3),
        _error("one value per channel when training", "ValueError", "more than 1 value per channel",
               shape=(1, 3, 1, 1)),
        _error("eval without running statistics", "ValueError", "required when training=False", training=False,
               running=False),
        _error("residual of another shape", "ValueError", "residual must match", residual="bad_shape"),
        _error("weight of the wrong length", "ValueError", r"weight must have shape \(3,\)", affine="bad_weight"),
        _error("unknown activation", "ValueError", "activation must be", activation="gelu"),
        _error("integer input", "TypeError", "unsupported dtype", dtype="int64"),
    ]


def random_cases(seed: int, count: int) -> list[Case]:
    draw = rng(seed)
    cases = []
    while len(cases) < count:
        rank = draw.choice((2, 3, 4, 4, 4))
        channels = draw.choice((1, 2, 3, draw.randint(1, 70)))
        shape = (draw.randint(1, 6), channels, *(draw.randint(1, 9) for _ in range(rank - 2)))
        if math.prod(shape) > 4096:
            continue
        training = draw.random() < 0.7
        running = not training or draw.random() < 0.7
        if training and math.prod(shape) // channels <= 1:
            continue
        layouts = ["nchw", "channels_last", "strided", "strided_channels_last"] if rank == 4 else ["nchw"]
        cases.append(_bn(
            f"random draw {len(cases)} of seed {seed}", shape, layout=draw.choice(layouts),
            dtype=draw.choices(list(DTYPES), weights=(1, 1, 6, 2))[0], training=training,
            momentum=draw.choice((0.0, 0.1, 0.37, 1.0)), eps=draw.choice((1e-5, 1e-3, 0.25)),
            affine=draw.choice(("both", "weight", "bias", "none")), running=running,
            residual=draw.choice((None, None, "same", "nchw")), activation=draw.choice(("relu", None))))
    return cases


# --- check -------------------------------------------------------------------------------------
def _generator(case: Case) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(case.id.encode()))


def _in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x (a float64 leaf's values) copied into `layout`; the strided layouts are views of a larger tensor."""
    if x.dim() != 4 or layout == "nchw":
        return x.clone()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    memory_format = torch.channels_last if layout == "strided_channels_last" else torch.contiguous_format
    big = torch.zeros(n, c, h, 2 * w, dtype=x.dtype).contiguous(memory_format=memory_format)
    big[..., ::2] = x
    return big[..., ::2]


def _tensors(case: Case, dtype: torch.dtype):
    """The case's float64 leaves: input, weight, bias, residual (None where absent), running stats."""
    gen = _generator(case)
    shape, channels = case.get("shape"), case.get("shape")[1]
    randn = lambda *size: torch.randn(*size, generator=gen, dtype=torch.float64)
    x = randn(*shape) * 2 + 0.5
    affine = case.get("affine")
    weight = randn(channels) if affine in ("both", "weight") else None
    weight = randn(channels + 1) if affine == "bad_weight" else weight
    bias = randn(channels) if affine in ("both", "bias", "bad_weight") else None
    residual = {None: None, "bad_shape": randn(*shape[:-1], shape[-1] + 1)}.get(case.get("residual"), None)
    if case.get("residual") in ("same", "nchw"):
        residual = randn(*shape)
    running = (randn(channels), torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5) \
        if case.get("running") else (None, None)
    return x, weight, bias, residual, running


def _as(t, dtype, layout="nchw", grad=True):
    if t is None:
        return None
    return _in_layout(t.to(dtype), layout).requires_grad_(grad)


def _call(case: Case, backend: str):
    """Runs the case on `backend`: (output, running stats after, our leaves, float64 leaves)."""
    dtype = DTYPES.get(case.get("dtype"), torch.int64)
    x, weight, bias, residual, (running_mean, running_var) = _tensors(case, dtype)
    layout = case.get("layout")
    stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    floating = dtype.is_floating_point
    ours = dict(input=_as(x, dtype, layout, floating), weight=_as(weight, stat_dtype),
                bias=_as(bias, stat_dtype),
                residual=_as(residual, dtype, layout if case.get("residual") == "same" else "nchw", floating))
    stats = [None if s is None else s.to(stat_dtype) for s in (running_mean, running_var)]
    out = dlkernels.batch_norm_relu(ours["input"], *stats, ours["weight"], ours["bias"], case.get("training"),
                                    case.get("momentum"), case.get("eps"), residual=ours["residual"],
                                    activation=case.get("activation"), backend=backend)
    return out, stats, ours, dict(input=x, weight=weight, bias=bias, residual=residual), (running_mean, running_var)


def _close(actual, expected, dtype, what, case):
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol,
                               msg=lambda m: f"{case.id} [{case.why}] {what}: {m}")


def _stat_close(actual, expected, what, case):
    tol = STAT_TOL.get(actual.dtype, STAT_TOL[None])
    torch.testing.assert_close(actual, expected.to(actual.dtype), **tol,
                               msg=lambda m: f"{case.id} [{case.why}] {what}: {m}")


def check(case: Case, backend: str) -> None:
    if "error" in case.tags:
        return _check_error(case, backend)
    if case.op == "BatchNormReLU2d":
        return _check_module(case, backend)
    dtype = DTYPES[case.get("dtype")]
    out, stats, ours, exact, running = _call(case, backend)
    x = ours["input"]
    if x.dim() == 4 and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
        want_cl = case.get("layout") in ("channels_last", "strided_channels_last")
        assert (out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()) == want_cl, \
            f"{case.id}: output layout"

    # float64 torch on the same (rounded) values.
    leaves = {k: None if v is None else ours[k].detach().double().requires_grad_() for k, v in exact.items()}
    ref_running = [None if s is None else s.clone() for s in running]
    pre = F.batch_norm(leaves["input"], *ref_running, leaves["weight"], leaves["bias"], case.get("training"),
                       case.get("momentum"), case.get("eps"))
    if leaves["residual"] is not None:
        pre = pre + leaves["residual"]
    relu = case.get("activation") == "relu"
    _close(out, pre.relu() if relu else pre, dtype, "output", case)
    for name, got, want in zip(("running_mean", "running_var"), stats, ref_running):
        if got is not None:
            _stat_close(got, want, name, case)

    # Gradients, through our own ReLU mask: at the kink a one-ulp difference may flip it.
    grad = torch.randn(out.shape, generator=_generator(case), dtype=torch.float64).to(dtype)
    mask = (out.detach() > 0).double() if relu else 1.0
    names = [k for k, v in ours.items() if v is not None]
    got = torch.autograd.grad(out, [ours[k] for k in names], grad)
    want = torch.autograd.grad(pre, [leaves[k] for k in names], grad.double() * mask)
    for name, g, w in zip(names, got, want):
        if name in ("input", "residual"):
            _close(g, w, dtype, f"grad of {name}", case)
        else:
            _stat_close(g, w, f"grad of {name}", case)


def _check_module(case: Case, backend: str) -> None:
    channels = case.get("shape")[1]
    kwargs = dict(eps=case.get("eps"), momentum=case.get("momentum"),
                  track_running_stats=case.get("track_running_stats"))
    ours = dlkernels.nn.BatchNormReLU2d(channels, **kwargs, backend=backend)
    reference = torch.nn.BatchNorm2d(channels, **kwargs).double()
    gen = _generator(case)
    with torch.no_grad():
        for module in (ours, reference):
            module.weight.copy_(torch.randn(channels, generator=_generator(case)))
            module.bias.copy_(torch.randn(channels, generator=_generator(case)).flip(0) * 0.5)
    for step in range(case.get("steps")):
        x = torch.randn(case.get("shape"), generator=gen, dtype=torch.float64) * (step + 1) + step
        out = ours(x.float())
        _close(out, reference(x).relu(), torch.float32, f"output of step {step}", case)
    for name, buffer in reference.named_buffers():
        got = dict(ours.named_buffers())[name]
        if buffer.dtype.is_floating_point:
            _stat_close(got, buffer, name, case)
        else:
            assert torch.equal(got, buffer), f"{case.id}: {name}"


def _error_call(case: Case, backend: str):
    def run():
        return _call(case, backend)[0]
    return run


def _outcome(run):
    try:
        return run(), None
    except Exception as error:  # noqa: BLE001 -- compared with what torch raises
        return None, error


def _check_error(case: Case, backend: str) -> None:
    _, error = _outcome(_error_call(case, backend))
    expected = case.get("error")
    assert error is not None, f"{case.id} [{case.why}]: no error on backend {backend!r}"
    assert type(error).__name__ == expected and re.search(case.get("match"), str(error)), \
        f"{case.id} [{case.why}]: expected {expected} matching {case.get('match')!r}, got {error!r}"
    # backend="auto" runs torch on CPU: it must raise what torch raises, or give torch's result.
    auto, auto_error = _outcome(_error_call(case, "auto"))
    torch_result, torch_error = _outcome(_error_call(case, "torch"))
    assert type(auto_error) is type(torch_error), \
        f"{case.id}: auto raised {auto_error!r}, torch raised {torch_error!r}"
    if torch_error is None:
        torch.testing.assert_close(auto, torch_result, equal_nan=True)
