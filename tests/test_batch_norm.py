"""Fused BatchNorm (+ residual) (+ ReLU) against torch: values, running statistics and gradients.

The reference is torch's F.batch_norm computed in float64 from the same (upcast) inputs. Outputs
must match it within about one unit in the last place of the dtype (tests/helpers.py TOLERANCES);
statistics, running statistics and weight/bias gradients are fp32 sums, held to STAT_TOL.
Gradients use our own ReLU mask (output > 0): at the kink a one-ulp difference in the output may
legitimately flip the mask, which would make a mask-for-mask comparison meaningless.
"""
import copy
import inspect

import pytest
import torch
import torch.nn.functional as F

import dlkernels
from opinfo_samples import check_against_torch, opinfo
from helpers import CPU_BACKENDS, DTYPES, GPU_BACKENDS, LAYOUTS, assert_close, in_layout, is_channels_last

STAT_TOL = dict(rtol=1e-4, atol=1e-5)  # fp32 statistics vs the float64 reference

CASES = [  # (shape, training, affine, residual, activation, momentum)
    ((4, 5, 6, 7), True, True, False, "relu", 0.1),
    ((4, 5, 6, 7), True, True, True, "relu", 0.3),
    ((3, 16, 4, 4), True, False, True, None, 0.1),
    ((3, 16, 4, 4), False, True, True, "relu", 0.1),
    ((2, 3, 1, 1), True, True, False, "relu", 0.1),  # 1x1 spatial: two values per channel
    ((1, 4, 1, 1), False, True, False, "relu", 0.1),  # batch 1 in eval
    ((6, 5), True, True, False, "relu", 0.1),  # BatchNorm1d-style (N, C)
    ((4, 5, 9), False, False, True, None, 0.1),  # (N, C, L)
]


def _make(shape, dtype, layout, affine, residual, device="cpu"):
    channels = shape[1]
    x = in_layout(torch.randn(shape, device=device).to(dtype), layout).requires_grad_()
    params = dict(
        running_mean=torch.randn(channels, device=device),
        running_var=torch.rand(channels, device=device) + 0.5,
        weight=torch.randn(channels, device=device, requires_grad=True) if affine else None,
        bias=torch.randn(channels, device=device, requires_grad=True) if affine else None,
        residual=in_layout(torch.randn(shape, device=device).to(dtype), layout).requires_grad_() if residual else None,
    )
    return x, params


def _reference(x, params, training, momentum, eps=1e-5):
    """Pre-activation output and updated running statistics, all in float64."""
    as64 = lambda t: None if t is None else t.detach().double().requires_grad_(t.requires_grad)
    x64 = as64(x)
    rm, rv = params["running_mean"].double(), params["running_var"].double()
    w64, b64, r64 = as64(params["weight"]), as64(params["bias"]), as64(params["residual"])
    pre = F.batch_norm(x64, rm, rv, w64, b64, training, momentum, eps)
    if r64 is not None:
        pre = pre + r64
    return pre, rm, rv, (x64, w64, b64, r64)


def _check(backend, shape, dtype, layout, training, affine, residual, activation, momentum, device="cpu"):
    x, params = _make(shape, dtype, layout, affine, residual, device)
    pre, rm_ref, rv_ref, leaves = _reference(x, params, training, momentum)
    running_mean, running_var = params["running_mean"].clone(), params["running_var"].clone()

    out = dlkernels.batch_norm_relu(x, running_mean, running_var, params["weight"], params["bias"], training,
                                    momentum, residual=params["residual"], activation=activation, backend=backend)
    expected = pre.relu() if activation == "relu" else pre
    assert out.dtype == dtype and out.shape == x.shape
    if x.dim() == 4 and x.shape[2] * x.shape[3] > 1:
        assert is_channels_last(out) == is_channels_last(x)
    assert_close(out, expected.to(dtype), dtype)
    torch.testing.assert_close(running_mean, rm_ref.float(), **STAT_TOL)
    torch.testing.assert_close(running_var, rv_ref.float(), **STAT_TOL)

    grad = torch.randn_like(out)
    mask = (out > 0) if activation == "relu" else torch.ones_like(out, dtype=torch.bool)
    inputs = [t for t in (x, params["weight"], params["bias"], params["residual"]) if t is not None]
    ref_inputs = [t for t in leaves if t is not None]
    ours = torch.autograd.grad(out, inputs, grad)
    ref = torch.autograd.grad(pre, ref_inputs, grad.double() * mask)
    assert_close(ours[0], ref[0].to(dtype), dtype)  # input
    for got, want in zip(ours[1:], ref[1:]):
        if got.dtype == dtype and got.shape == x.shape:  # residual: exactly the masked grad
            assert_close(got, want.to(dtype), dtype)
        else:  # weight, bias: fp32 reductions
            torch.testing.assert_close(got, want.float(), **STAT_TOL)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_batch_norm_relu(backend, dtype, layout, case):
    _check(backend, case[0], dtype, layout, *case[1:])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_statistics_are_stable_for_large_mean(backend):
    # E[x^2] - E[x]^2 in fp32 loses every digit here; Welford / two-level partials must not.
    x = 1000 + torch.randn(8, 2, 64, 64)
    running_mean, running_var = torch.zeros(2), torch.ones(2)
    dlkernels.batch_norm_relu(x, running_mean, running_var, training=True, momentum=1.0, backend=backend)
    torch.testing.assert_close(running_mean, x.double().mean((0, 2, 3)).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(running_var, x.double().var((0, 2, 3)).float(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_half_parameters_and_running_stats(backend):
    # A model converted with .half(): fp16 parameters and statistics, as torch allows.
    bn = dlkernels.nn.BatchNormReLU2d(4, backend=backend).half()
    ref = torch.nn.BatchNorm2d(4).half()
    x = torch.randn(3, 4, 5, 5).half()
    torch.testing.assert_close(bn(x), ref(x).relu(), rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-3, atol=1e-3)
    assert bn.running_mean.dtype == torch.float16


# ------------------------------------------------------------------------- modules
def _module_pair(**kwargs):
    ours = dlkernels.nn.BatchNormReLU2d(6, **kwargs, backend="reference")
    ref = torch.nn.BatchNorm2d(6, **kwargs)
    ref.load_state_dict(ours.state_dict()) if kwargs.get("track_running_stats", True) else None
    return ours, ref


# BatchNorm2d(bias=False): an affine weight without a shift, new in torch 2.13.
TORCH_BN_HAS_BIAS_FLAG = "bias" in inspect.signature(torch.nn.BatchNorm2d.__init__).parameters
WITHOUT_BIAS = [dict(bias=False)] if TORCH_BN_HAS_BIAS_FLAG else []


@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=None), dict(affine=False),
                                    dict(track_running_stats=False), dict(momentum=0.5, eps=1e-3), *WITHOUT_BIAS],
                         ids=str)
def test_module_matches_torch_batchnorm_over_steps(kwargs):
    ours, ref = _module_pair(**kwargs)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for step in range(3):
        x = torch.randn(4, 6, 5, 5) * (step + 1) + step
        torch.testing.assert_close(ours(x), ref(x).relu())
    for name, buffer in ref.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buffer, msg=name)
    ours.eval(), ref.eval()
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(ours(x), ref(x).relu())


@pytest.mark.skipif(not TORCH_BN_HAS_BIAS_FLAG, reason="this torch's BatchNorm2d has no bias flag")
def test_convert_keeps_batch_norm_without_bias():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 1), torch.nn.BatchNorm2d(6, bias=False), torch.nn.ReLU())
    model.train()(torch.randn(4, 3, 5, 5))  # non-trivial running statistics
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    expected = model.eval()(x)
    ours = dlkernels.convert(copy.deepcopy(model), backend="reference")
    assert type(ours[1]) is dlkernels.nn.BatchNormReLU2d and ours[1].bias is None
    assert ours.state_dict().keys() == model.state_dict().keys()
    torch.testing.assert_close(ours(x), expected)


def test_module_loads_torch_state_dict_and_fuses_residual():
    ref = torch.nn.BatchNorm2d(6)
    ref.train()(torch.randn(8, 6, 4, 4))  # non-trivial running statistics
    ours = dlkernels.nn.BatchNormAddReLU2d(6, backend="reference")
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    x, residual = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(ours(x, residual), (ref(x) + residual).relu())
    assert "activation='relu'" in repr(ours)


def test_torch_compile_training_step_matches_torch():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    ours = torch.nn.Sequential(conv, dlkernels.nn.BatchNormReLU2d(8, backend="reference"))
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    ref.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(4, 3, 8, 8)
    out, out_ref = compiled(x), ref(x)
    torch.testing.assert_close(out, out_ref)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    torch.testing.assert_close(ours[0].weight.grad, ref[0].weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[1].weight.grad, ref[1].weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[1].running_var, ref[1].running_var)


# --------------------------------------------------------------------- torch.library
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend):
    x = torch.randn(3, 4, 5, 5)
    stats = (torch.zeros(4), torch.ones(4))
    mean, invstd = x.mean((0, 2, 3)), torch.rsqrt(x.var((0, 2, 3), unbiased=False) + 1e-5)
    w = torch.randn(4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    r = torch.randn(3, 4, 5, 5, requires_grad=True)
    ops = torch.ops.dlk
    torch.library.opcheck(ops.batch_norm_stats.default, (x, *stats, 0.1, 1e-5, False, backend))
    torch.library.opcheck(ops.batch_norm_relu.default,
                          (x.requires_grad_(), mean, invstd, w, b, r, True, True, False, backend))
    out = torch.ops.dlk.batch_norm_relu(x, mean, invstd, w, b, r, True, True, False, backend).detach()
    torch.library.opcheck(ops.batch_norm_relu_backward.default,
                          (torch.randn_like(out), out, x.detach(), mean, invstd, w.detach(), True, True, True, False,
                           backend))


# ------------------------------------------------------------------------- bad input
def _call(**overrides):
    args = dict(input=torch.randn(2, 3, 4, 4), running_mean=torch.zeros(3), running_var=torch.ones(3),
                weight=torch.ones(3), bias=torch.zeros(3), training=True)
    kwargs = {k: overrides.pop(k) for k in ("residual", "activation", "backend") if k in overrides}
    kwargs.setdefault("backend", "reference")  # our validation: auto would run torch on CPU
    args.update(overrides)
    return lambda: dlkernels.batch_norm_relu(**args, **kwargs)


BAD_INPUTS = [
    (_call(input=torch.randn(3)), ValueError, "input must be 2-D, 3-D or 4-D"),
    (_call(input=torch.ones(2, 3, 4, 4, dtype=torch.int64)), TypeError, "unsupported dtype"),
    (_call(input=torch.randn(0, 3, 4, 4)), ValueError, "input must not be empty"),
    (_call(running_mean=torch.zeros(4)), ValueError, r"running_mean must have shape \(3,\)"),
    (_call(weight=torch.ones(2)), ValueError, r"weight must have shape \(3,\)"),
    (_call(bias=torch.zeros(3, 1)), ValueError, r"bias must have shape \(3,\)"),
    (_call(running_var=None), ValueError, "both be given or both be None"),
    (_call(running_mean=None, running_var=None, training=False), ValueError, "required when training=False"),
    (_call(input=torch.randn(1, 3, 1, 1)), ValueError, "more than 1 value per channel"),
    (_call(input=torch.randn(1, 3)), ValueError, "more than 1 value per channel"),
    (_call(residual=torch.randn(2, 3, 4, 5)), ValueError, "residual must match"),
    (_call(residual=torch.randn(2, 3, 4, 4).double()), ValueError, "residual must match"),
    (_call(activation="gelu"), ValueError, "activation must be 'relu', 'leaky_relu' or None"),
    (_call(momentum=1.5), ValueError, "momentum must be in"),
    (_call(backend="cuda"), RuntimeError, "need a CUDA tensor"),
    (_call(weight=[1.0, 1.0, 1.0]), TypeError, "weight must be a torch.Tensor"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------- auto and torch
def _as_torch_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                         eps=1e-5, *, backend):
    """F.batch_norm's signature on our op."""
    return dlkernels.batch_norm_relu(input, running_mean, running_var, weight, bias, training, momentum, eps,
                                     activation=None, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "torch", *CPU_BACKENDS])
def test_opinfo_samples_give_torchs_result_or_error(backend, monkeypatch):
    # batch_norm's OpInfo ships no error inputs (error_inputs_func is None), which check_against_torch
    # does not expect yet; the bad-input tests and AUTO_RUNS_TORCH cover errors instead.
    info = opinfo("nn.functional.batch_norm")
    if info.error_inputs_func is None:
        monkeypatch.setattr(info, "error_inputs_func", lambda *args, **kwargs: [])
    counts = check_against_torch("nn.functional.batch_norm", _as_torch_batch_norm, backend)
    assert counts["same"] > 0
    if backend in ("auto", "torch"):
        assert counts["unsupported"] == 0


AUTO_RUNS_TORCH = [  # torch accepts these; ours do not cover them
    dict(input=torch.randn(4, 3, 5), momentum=-0.5),
    dict(input=torch.randn(0)),
]


@pytest.mark.parametrize("call", AUTO_RUNS_TORCH, ids=["negative momentum", "1-D empty input"])
def test_auto_runs_torch_where_ours_do_not_cover(call):
    channels = call["input"].shape[1] if call["input"].dim() > 1 else 0
    results = []
    for backend in ("auto", "torch"):
        stats = [torch.zeros(channels), torch.ones(channels)]
        out = dlkernels.batch_norm_relu(call["input"], *stats, training=True, momentum=call.get("momentum", 0.1),
                                        backend=backend)
        results.append((out, *stats))
    torch.testing.assert_close(results[0], results[1])
    stats = [torch.zeros(channels), torch.ones(channels)]
    expected = F.batch_norm(call["input"], *stats, training=True, momentum=call.get("momentum", 0.1)).relu()
    torch.testing.assert_close(results[0][0], expected)
    torch.testing.assert_close(list(results[0][1:]), stats)  # running stats updated once, as torch does
    with pytest.raises(ValueError):
        dlkernels.batch_norm_relu(call["input"], torch.zeros(channels), torch.ones(channels), training=True,
                                  momentum=call.get("momentum", 0.1), backend="reference")


def test_torch_backend_composes_residual_and_activation():
    torch.manual_seed(0)
    x, residual = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    weight, bias = torch.randn(3), torch.randn(3)
    for activation in ("relu", None):
        stats, ref_stats = [torch.zeros(3), torch.ones(3)], [torch.zeros(3), torch.ones(3)]
        out = dlkernels.batch_norm_relu(x, *stats, weight, bias, True, 0.2, residual=residual,
                                        activation=activation, backend="torch")
        expected = F.batch_norm(x, *ref_stats, weight, bias, True, 0.2) + residual
        torch.testing.assert_close(out, expected.relu() if activation else expected)
        torch.testing.assert_close(stats, ref_stats)
    with pytest.raises(ValueError, match="activation must be"):
        dlkernels.batch_norm_relu(x, None, None, training=True, activation="gelu", backend="torch")


def test_explain_names_the_backend():
    x = torch.randn(4, 3, 5, 5)
    for backend, reason in (("auto", "cpu tensors run torch"), ("torch", "requested"), ("reference", "requested")):
        stats = [torch.zeros(3), torch.ones(3)]
        explanation = dlkernels.explain(dlkernels.batch_norm_relu, x, *stats, training=True, backend=backend)
        assert [(d.op, d.backend) for d in explanation] == [("batch_norm_relu", "torch" if backend == "auto"
                                                                                 else backend)]
        assert reason in explanation[0].reason
        # Running statistics moved exactly once: momentum 0.1 of the way to the batch statistics.
        expected = 0.1 * x.mean((0, 2, 3))
        torch.testing.assert_close(stats[0], expected, **STAT_TOL)


# ------------------------------------------------------------------------------ GPU
GPU_SHAPES = [(32, 64, 112, 112), (32, 256, 56, 56), (32, 512, 28, 28), (32, 2048, 7, 7)]  # ResNet-50 BN layers


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype,layout", [(torch.float16, "channels_last"), (torch.bfloat16, "channels_last"),
                                          (torch.float32, "nchw")], ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=str)
@pytest.mark.parametrize("training,residual", [(True, False), (True, True), (False, True)], ids=str)
def test_gpu_matches_reference(backend, dtype, layout, shape, training, residual):
    _check(backend, shape, dtype, layout, training, True, residual, "relu", 0.1, device="cuda")


def test_convert_fuses_batch_norm_relu_in_sequential():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                                torch.nn.BatchNorm2d(6)).double()
    model.train()(torch.randn(4, 3, 8, 8, dtype=torch.float64))  # non-trivial running statistics
    keys, x = model.state_dict().keys(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = model.eval()(x)
    converted = dlkernels.convert(model, backend="reference")
    assert isinstance(converted[1], dlkernels.nn.BatchNormReLU2d) and converted[1].activation == "relu"
    assert isinstance(converted[2], torch.nn.Identity)
    assert converted[3].activation is None and converted[3].running_mean.dtype == torch.float64
    assert converted.state_dict().keys() == keys
    torch.testing.assert_close(converted(x), expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nan_propagates_like_torch_relu(backend):
    x = torch.randn(2, 3, 4, 4)
    x[0, 1, 2, 2] = float("nan")  # channel 1's statistics, and so all its outputs, become NaN
    x_ref = x.clone().requires_grad_()
    x.requires_grad_()
    out = dlkernels.batch_norm_relu(x, None, None, training=True, backend=backend)
    ref = F.batch_norm(x_ref, None, None, training=True).relu()
    torch.testing.assert_close(out, ref, equal_nan=True)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(ref, x_ref, grad)[0],
                               equal_nan=True)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("slope", [0.2, 0.01, 0.0, 1.0])
def test_leaky_relu_epilogue_matches_torch(backend, slope):
    """activation="leaky_relu": values and gradients vs torch in float64, NaN/inf inputs included."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    x[0, 0, 0, :2] = torch.tensor([float("nan"), float("inf")])  # channel 0's statistics become NaN
    x = x.requires_grad_()
    weight = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    out = dlkernels.batch_norm_relu(x, None, None, weight, bias, True, activation="leaky_relu",
                                    negative_slope=slope, backend=backend)
    normalized = F.batch_norm(x, None, None, weight, bias, True)
    # Slope 0 is ReLU exactly (torch's leaky_relu(0) differs at -inf and for the gradient at NaN outputs).
    expected = torch.relu(normalized) if slope == 0 else F.leaky_relu(normalized, slope)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    grad = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    ours = torch.autograd.grad(out, (x, weight, bias), grad)
    theirs = torch.autograd.grad(expected, (x, weight, bias), grad)
    for name, a, b in zip(("input", "weight", "bias"), ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, equal_nan=True, msg=name)


def test_leaky_relu_negative_slope():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        dlkernels.batch_norm_relu(x, None, None, training=True, activation="leaky_relu", negative_slope=-0.1,
                                  backend="reference")
    out = dlkernels.batch_norm_relu(x, None, None, training=True, activation="leaky_relu", negative_slope=-0.1)
    torch.testing.assert_close(out, F.leaky_relu(F.batch_norm(x, None, None, training=True), -0.1))
