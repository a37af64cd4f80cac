"""Pooling against torch.nn.functional: every backend x dtype x layout x geometry, values and gradients.

Tolerances (tests/helpers.py): max pooling values and indices compare exactly; averages and
gradients within about one unit in the last place of the dtype (summation order is the only
difference from ATen, which also accumulates in fp32).
"""
import contextlib
import functools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import dlkernels
from helpers import CPU_BACKENDS, DTYPES, GPU_BACKENDS, HAS_CUDA, LAYOUTS, assert_close, in_layout, is_channels_last
from opinfo_samples import check_against_torch


# Shapes: C=3 keeps NCHW and channels_last distinguishable; C=16 exercises vectorised channel paths.
SHAPES = [(2, 3, 9, 8), (2, 16, 7, 7)]

MAX_CASES = [
    dict(kernel_size=3, stride=2, padding=1),  # ResNet stem
    dict(kernel_size=2),  # VGG
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, stride=3, ceil_mode=True),  # last window hangs over the edge
]
AVG_CASES = [
    dict(kernel_size=3, stride=1, padding=1),  # GoogLeNet-style
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), divisor_override=5),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
]
ADAPTIVE_SIZES = [1, (3, 3), (4, 2), (5, 9), (None, 2)]


def _input(shape, dtype, layout, device="cpu"):
    x = torch.randn(shape, dtype=torch.float32, device=device).to(dtype)
    return in_layout(x, layout).requires_grad_()


def _check_pool(ours_fn, ref_fn, x, exact_values):
    """Runs both, compares outputs (exactly or within tolerance), layout, and input gradients."""
    x_ref = x.detach().clone().requires_grad_()
    out, ref = ours_fn(x), ref_fn(x_ref)
    out_values, ref_values = (out[0], ref[0]) if isinstance(out, tuple) else (out, ref)
    if exact_values:
        assert torch.equal(out_values, ref_values)
        assert torch.equal(out[1], ref[1]), "max indices differ from torch"
    else:
        assert_close(out_values, ref_values)
    assert out_values.dtype == x.dtype
    if out_values.dim() == 4 and out_values.shape[2] * out_values.shape[3] > 1:
        assert is_channels_last(out_values) == is_channels_last(x), "output layout differs from input layout"
    grad = torch.randn_like(ref_values)
    (grad_ours,) = torch.autograd.grad(out_values, x, grad)
    (grad_ref,) = torch.autograd.grad(ref_values, x_ref, grad)
    assert_close(grad_ours, grad_ref)
    assert grad_ours.shape == x.shape


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool2d(backend, dtype, layout, shape, case):
    x = _input(shape, dtype, layout)
    _check_pool(lambda t: dlkernels.max_pool2d(t, **case, return_indices=True, backend=backend),
                lambda t: F.max_pool2d(t, **case, return_indices=True), x, exact_values=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("grad_mode", ["no_grad", "no_requires_grad"])
def test_max_pool2d_inference_runs_without_indices(backend, layout, grad_mode, monkeypatch):
    """Without return_indices and with nothing to differentiate, max_pool2d asks our C++ / CUDA kernels
    for no indices (they skip writing them); values still equal torch's exactly."""
    from dlkernels._backends import implementation
    module = implementation("pool2d", backend)
    requests = []

    def spy(*args, **kwargs):
        requests.append(kwargs.get("need_indices", True))
        out, indices = real(*args, **kwargs)
        assert indices.numel() == 0 or backend == "triton", "indices were written though none were asked for"
        return out, indices
    real = module.pool2d_forward
    monkeypatch.setattr(module, "pool2d_forward", spy)
    x = in_layout(torch.randn(2, 16, 9, 8, dtype=torch.float64), layout)
    with torch.no_grad() if grad_mode == "no_grad" else contextlib.nullcontext():
        out = dlkernels.max_pool2d(x.requires_grad_(grad_mode == "no_grad"), 3, stride=2, padding=1, backend=backend)
    assert requests == [backend == "triton"], "max_pool2d did not take the path without indices"
    assert torch.equal(out, F.max_pool2d(x.detach(), 3, stride=2, padding=1))
    assert is_channels_last(out) == is_channels_last(x)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool2d(backend, dtype, layout, shape, case):
    x = _input(shape, dtype, layout)
    _check_pool(lambda t: dlkernels.avg_pool2d(t, **case, backend=backend), lambda t: F.avg_pool2d(t, **case),
                x, exact_values=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool2d(backend, dtype, layout, shape, output_size):
    x = _input(shape, dtype, layout)
    _check_pool(lambda t: dlkernels.adaptive_avg_pool2d(t, output_size, backend=backend),
                lambda t: F.adaptive_avg_pool2d(t, output_size), x, exact_values=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_max_pool2d_ties_take_first_index(backend):
    # Few distinct integers: most windows hold several equal maxima; torch keeps the first.
    x = torch.randint(0, 3, (2, 4, 8, 8)).float()
    for layout in LAYOUTS:
        xs = in_layout(x, layout)
        out, idx = dlkernels.max_pool2d(xs, 3, 1, 1, return_indices=True, backend=backend)
        ref, ref_idx = F.max_pool2d(xs, 3, 1, 1, return_indices=True)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_max_pool2d_propagates_nan_and_handles_all_minus_inf(backend):
    x = torch.randn(1, 2, 6, 6)
    x[0, 0, 1, 1] = math.nan
    x[0, 0, 2, 3] = math.nan
    x[0, 1] = -math.inf
    out, idx = dlkernels.max_pool2d(x, 3, 2, 1, return_indices=True, backend=backend)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)
    assert out[0, 0].isnan().any()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_avg_pool2d_propagates_nan(backend):
    x = torch.randn(1, 2, 6, 6)
    x[0, 1, 3, 3] = math.nan
    torch.testing.assert_close(dlkernels.avg_pool2d(x, 3, 2, 1, backend=backend), F.avg_pool2d(x, 3, 2, 1),
                               equal_nan=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batchless_input(backend):
    x = torch.randn(3, 7, 7, requires_grad=True)
    _check_pool(lambda t: dlkernels.max_pool2d(t, 3, 2, return_indices=True, backend=backend),
                lambda t: F.max_pool2d(t, 3, 2, return_indices=True), x, exact_values=True)
    _check_pool(lambda t: dlkernels.avg_pool2d(t, 2, backend=backend), lambda t: F.avg_pool2d(t, 2), x, False)
    _check_pool(lambda t: dlkernels.adaptive_avg_pool2d(t, 2, backend=backend),
                lambda t: F.adaptive_avg_pool2d(t, 2), x, False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_strided_input_is_accepted(backend):
    base = torch.randn(2, 6, 10, 12)
    for x in (base[:, ::2, 1:, ::2], base.transpose(2, 3), base.permute(0, 1, 3, 2)[..., 1:]):
        x = x.detach().requires_grad_()
        _check_pool(lambda t: dlkernels.max_pool2d(t, 2, return_indices=True, backend=backend),
                    lambda t: F.max_pool2d(t, 2, return_indices=True), x, exact_values=True)
        _check_pool(lambda t: dlkernels.avg_pool2d(t, 3, 2, 1, backend=backend),
                    lambda t: F.avg_pool2d(t, 3, 2, 1), x, exact_values=False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_global_average_pool_keeps_channels_last_gradient(backend):
    # 1x1 outputs are contiguous in both layouts; the gradient must still come back channels_last.
    x = in_layout(torch.randn(2, 8, 5, 5), "channels_last").requires_grad_()
    out = dlkernels.adaptive_avg_pool2d(x, 1, backend=backend)
    assert out.stride() == F.adaptive_avg_pool2d(x, 1).stride()
    out.sum().backward()
    assert is_channels_last(x.grad)
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 25))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_global_max_pool_gradient_whose_strides_differ_in_size_1_dims(backend, layout):
    # Global max pool -> flatten -> linear: the gradient arrives with strides of its own in the 1x1 dims (or
    # stride 0 everywhere when it has one element), which is the same dense layout as the saved indices.
    for shape, head in (((2, 3, 4, 4), torch.randn(3, 5)), ((1, 1, 2, 2), torch.ones(1, 1))):
        x = in_layout(torch.randn(shape), layout).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        (dlkernels.max_pool2d(x, shape[-1], backend=backend).flatten(1) @ head).sum().backward()
        (F.max_pool2d(x_ref, shape[-1]).flatten(1) @ head).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)
        assert x.grad.stride() == x_ref.grad.stride()


def test_backends_are_available():
    # Guards the matrices: a backend silently missing would make its tests vanish.
    assert dlkernels.available_backends("cpu") == (["reference"] if HAS_CUDA else ["triton", "reference"])
    if HAS_CUDA:
        assert dlkernels.available_backends("cuda") == ["cuda", "triton"]


# --------------------------------------------------------------------------- bad input
class ours:  # the public ops with backend="reference": our validation, not torch's
    max_pool2d = functools.partial(dlkernels.max_pool2d, backend="reference")
    avg_pool2d = functools.partial(dlkernels.avg_pool2d, backend="reference")
    adaptive_avg_pool2d = functools.partial(dlkernels.adaptive_avg_pool2d, backend="reference")


BAD_INPUTS = [
    (lambda: ours.max_pool2d(torch.randn(4, 4), 2), ValueError, "input must be 3-D or 4-D"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 2, 4, 4), 2), ValueError, "input must be 3-D or 4-D"),
    (lambda: ours.max_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int32), 2), TypeError, "unsupported dtype"),
    (lambda: ours.avg_pool2d(torch.ones(1, 1, 4, 4, dtype=torch.complex64), 2), TypeError, "unsupported dtype"),
    (lambda: ours.max_pool2d([[1.0]], 2), TypeError, "input must be a torch.Tensor"),
    (lambda: ours.max_pool2d(torch.randn(0, 3, 4, 4), 2), ValueError, "input must not be empty"),
    (lambda: ours.avg_pool2d(torch.randn(2, 0, 4, 4), 2), ValueError, "input must not be empty"),
    (lambda: ours.adaptive_avg_pool2d(torch.randn(2, 3, 0, 4), 2), ValueError, "input must not be empty"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 0), ValueError, "kernel_size must be >= 1"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), (2, -1)), ValueError, "kernel_size must be >= 1"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), (2, 2, 2)), TypeError, "kernel_size must be an int or a pair"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 2.5), TypeError, "kernel_size must be an int or a pair"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 2, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 9, 9), 3, padding=2), ValueError, "at most half of kernel_size"),
    (lambda: ours.avg_pool2d(torch.randn(1, 1, 9, 9), 3, padding=2), ValueError, "at most half of kernel_size"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 7), ValueError, "does not fit"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 5, 5), 3, dilation=3), ValueError, "does not fit"),
    (lambda: ours.avg_pool2d(torch.randn(1, 1, 4, 4), 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: ours.adaptive_avg_pool2d(torch.randn(1, 1, 4, 4), 0), ValueError, "output_size must be >= 1"),
    (lambda: ours.adaptive_avg_pool2d(torch.randn(1, 1, 4, 4), (2, 2, 2)), TypeError, "output_size"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 2, backend="fast"), ValueError, "backend must be one of"),
    (lambda: ours.max_pool2d(torch.randn(1, 1, 4, 4), 2, backend="cuda"), RuntimeError,
     "backend 'cuda' is unavailable: the CUDA kernels need a CUDA tensor"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------- auto, torch and OpInfo
POOL_OPINFOS = {"nn.functional.max_pool2d": dlkernels.max_pool2d, "nn.functional.avg_pool2d": dlkernels.avg_pool2d,
                "nn.functional.adaptive_avg_pool2d": dlkernels.adaptive_avg_pool2d}


@pytest.mark.parametrize("name", POOL_OPINFOS)
@pytest.mark.parametrize("backend", ["auto", "torch", "reference"])
def test_opinfo_samples_give_torchs_result_or_error(name, backend):
    # auto sees every sample; the named backends every 8th of max_pool2d's 1440 (CI time)
    every = 8 if backend != "auto" and name.endswith("max_pool2d") else 1
    counts = check_against_torch(name, POOL_OPINFOS[name], backend, every=every)
    assert counts["same"] > 0 and counts["same_error"] > 0
    if backend == "reference":  # our kernels must cover most of them, not dodge them all
        assert counts["same"] >= 2 * counts["unsupported"], counts


def test_auto_runs_torch_on_cpu_and_explains_why():
    x = torch.randn(2, 3, 8, 8)
    explanation = dlkernels.explain(lambda: dlkernels.max_pool2d(x, 2) + dlkernels.avg_pool2d(x, 2))
    assert [(d.op, d.backend) for d in explanation] == [("max_pool2d", "torch"), ("avg_pool2d", "torch")]
    assert "cpu tensors run torch" in explanation[0].reason
    torch.testing.assert_close(explanation.result, F.max_pool2d(x, 2) + F.avg_pool2d(x, 2), rtol=0, atol=0)
    assert [d.backend for d in dlkernels.explain(dlkernels.max_pool2d, x, 2, backend="reference")] == ["reference"]


def test_auto_gives_torchs_error_where_ours_would_refuse():
    # 5-D input: ours raise their own ValueError by name, auto behaves exactly as torch does.
    x = torch.randn(1, 1, 2, 4, 4)
    with pytest.raises(ValueError, match="input must be 3-D or 4-D"):
        dlkernels.max_pool2d(x, 2, backend="reference")
    with pytest.raises(RuntimeError) as from_torch:
        F.max_pool2d(x, 2)
    with pytest.raises(RuntimeError) as from_auto:
        dlkernels.max_pool2d(x, 2)
    assert str(from_auto.value) == str(from_torch.value)
    # where torch accepts what ours refuse (an empty batch), auto returns torch's result
    empty = torch.randn(0, 3, 4, 4)
    assert dlkernels.max_pool2d(empty, 2).shape == F.max_pool2d(empty, 2).shape == (0, 3, 2, 2)


def test_cpu_backend_name_still_works_with_a_deprecation_warning():
    x = torch.randn(1, 2, 6, 6)
    with pytest.warns(FutureWarning, match="backend='cpu' is deprecated, use backend='reference'"):
        out = dlkernels.max_pool2d(x, 2, backend="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(out, dlkernels.max_pool2d(x, 2, backend="reference"), rtol=0, atol=0)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dlkernels.max_pool2d(torch.randn(1, 1, 4, 4), 2, backend="triton")


# ---------------------------------------------------------------- torch.library / compile
def _opcheck_cases(backend):
    x = torch.randn(2, 3, 7, 6)
    xg = x.clone().requires_grad_()
    g = torch.randn(2, 3, 4, 3)
    indices = F.max_pool2d(x, 3, 2, 1, return_indices=True)[1]
    ops = torch.ops.dlk
    return [
        (ops.max_pool2d.default, (xg, [3, 3], [2, 2], [1, 1], [1, 1], [4, 3], backend)),
        (ops.max_pool2d_backward.default, (g, indices, [7, 6], [3, 3], [2, 2], [1, 1], [1, 1], False, backend)),
        (ops.avg_pool2d.default, (xg, [3, 3], [2, 2], [1, 1], [4, 3], False, 0, backend)),
        (ops.avg_pool2d_backward.default, (g, [7, 6], [3, 3], [2, 2], [1, 1], True, 0, False, backend)),
        (ops.adaptive_avg_pool2d.default, (xg, [4, 3], backend)),
        (ops.adaptive_avg_pool2d_backward.default, (g, [7, 6], False, backend)),
    ]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", range(6))
def test_opcheck(backend, case):
    op, args = _opcheck_cases(backend)[case]
    torch.library.opcheck(op, args)


def _small_cnn(pool_module):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), pool_module.MaxPool2d(3, 2, 1), torch.nn.ReLU(),
        pool_module.AvgPool2d(2, ceil_mode=True), pool_module.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4))


def test_torch_compile_fullgraph_matches_eager_torch():
    x = torch.randn(2, 3, 15, 15)
    ours, ref = _small_cnn(dlkernels.nn), _small_cnn(torch.nn)
    compiled = torch.compile(ours, fullgraph=True)
    out, out_ref = compiled(x), ref(x)
    torch.testing.assert_close(out, out_ref)
    out.sum().backward()
    out_ref.sum().backward()
    for (name, p), p_ref in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=f"grad of {name}")


# ------------------------------------------------------------------------- modules
def test_modules_mirror_torch_nn():
    pairs = [(dlkernels.nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
             (dlkernels.nn.AvgPool2d(3, 2, 1, count_include_pad=False), torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
             (dlkernels.nn.AdaptiveAvgPool2d((2, 3)), torch.nn.AdaptiveAvgPool2d((2, 3)))]
    x = torch.randn(2, 3, 9, 9)
    for ours, ref in pairs:
        assert ours.state_dict().keys() == ref.state_dict().keys()
        assert repr(ours) == repr(ref)
        torch.testing.assert_close(ours(x), ref(x))
    out, idx = dlkernels.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(idx, torch.nn.MaxPool2d(2, return_indices=True)(x)[1])


def test_convert_swaps_pooling_modules_and_keeps_outputs():
    model = _small_cnn(torch.nn)
    x = torch.randn(2, 3, 15, 15)
    expected, keys = model(x), model.state_dict().keys()
    converted = dlkernels.convert(model, backend="cpu")
    assert isinstance(converted[1], dlkernels.nn.MaxPool2d) and converted[1].backend == "cpu"
    assert isinstance(converted[3], dlkernels.nn.AvgPool2d) and isinstance(converted[4], dlkernels.nn.AdaptiveAvgPool2d)
    assert converted.state_dict().keys() == keys
    torch.testing.assert_close(converted(x), expected)
    assert isinstance(dlkernels.convert(torch.nn.MaxPool2d(2)), dlkernels.nn.MaxPool2d)


# ------------------------------------------------------------------------------ GPU
GPU_CASES = [  # (op, shape, kwargs): the layers named in the Foundation issue
    ("max_pool2d", (32, 64, 112, 112), dict(kernel_size=3, stride=2, padding=1)),  # ResNet stem
    ("max_pool2d", (16, 64, 224, 224), dict(kernel_size=2, stride=2)),  # VGG
    ("max_pool2d", (8, 96, 35, 35), dict(kernel_size=3, stride=2, ceil_mode=True)),
    ("avg_pool2d", (32, 192, 28, 28), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ("adaptive_avg_pool2d", (32, 2048, 7, 7), dict(output_size=1)),  # global average pool
    ("adaptive_avg_pool2d", (4, 512, 13, 17), dict(output_size=(6, 5))),
]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op,shape,kwargs", GPU_CASES, ids=[f"{o}-{s}" for o, s, _ in GPU_CASES])
def test_gpu_matches_cudnn(backend, dtype, layout, op, shape, kwargs):
    x = _input(shape, dtype, layout, device="cuda")
    ref_fn = getattr(F, op)
    ours_fn = getattr(dlkernels, op)
    if op == "max_pool2d":
        kwargs = dict(kwargs, return_indices=True)
    _check_pool(lambda t: ours_fn(t, **kwargs, backend=backend), lambda t: ref_fn(t, **kwargs), x,
                exact_values=op == "max_pool2d")
