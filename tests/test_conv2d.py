"""dlkernels.conv2d (direct and Winograd) against torch.nn.functional.conv2d: values and gradients.

Accuracy bar (FlashAttention's rule, the issue's test bar): against an fp64 result of the same
inputs, our max error is at most 2x the max error of PyTorch's conv computed in the same dtype, plus
one rounding unit of the largest output value (so that a reference that happens to be exact cannot
fail a correct kernel). float64 is its own reference, so there the allowance is factor x 32 rounding units. Winograd is held to the error it is known to have (WINOGRAD_ERROR_FACTOR),
and `algo="auto"` only uses tiles that meet the 2x bar (ACCURATE_WINOGRAD_TILES, checked below).
"""
import copy
import importlib

import pytest
import torch
import torch.nn.functional as F

import dlkernels
conv_ops = importlib.import_module("dlkernels.ops.conv2d")  # the package exports the function under this name
from opinfo_samples import check_against_torch
from helpers import CPU_BACKENDS, GPU_BACKENDS, LAYOUTS, in_layout, is_channels_last

# torch's own padding="same" path warns about even kernels; the reference is meant to take it.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}
DTYPES = list(UNIT_ROUNDOFF)
LOW_PRECISION = [torch.float16, torch.bfloat16]
# Winograd's error against PyTorch's at the same precision, bounded from measurements on the C++
# reference (which follows the kernels' precision contract): F(2,3) 1-3x, F(4,3) 8-40x.
WINOGRAD_ERROR_FACTOR = {2: 4.0, 4: 64.0}


def max_error(actual, reference):
    return (actual.double() - reference).abs().max().item()


def assert_accurate(ours, torch_same_dtype, reference, factor=2.0, what="output"):
    """max |ours - ref| <= factor * max |torch - ref| + u * max |ref|, ref in fp64."""
    reference = reference.double()
    ours_error, torch_error = max_error(ours, reference), max_error(torch_same_dtype, reference)
    units = 32 * factor if ours.dtype == torch.float64 else 1
    floor = units * UNIT_ROUNDOFF[ours.dtype] * reference.abs().max().item()
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    assert ours_error <= factor * torch_error + floor, (
        f"{what}: max error {ours_error:.3e} > {factor} x torch's {torch_error:.3e} + {floor:.3e}")


def make_case(shape, kernel, groups, dtype, layout, bias=True, residual=False, stride=1, padding=0, dilation=1,
              requires_grad=False):
    n, c, h, w = shape
    k, r, s = kernel
    x = in_layout(torch.randn(n, c, h, w, dtype=dtype), layout)
    weight = torch.randn(k, c // groups, r, s, dtype=dtype) / (c // groups * r * s) ** 0.5
    b = torch.randn(k, dtype=dtype) if bias else None
    out_shape = F.conv2d(x.double(), weight.double(), None, stride, padding, dilation, groups).shape
    res = in_layout(torch.randn(out_shape, dtype=dtype), layout) if residual else None
    tensors = [t.requires_grad_(requires_grad) if t is not None else None for t in (x, weight, b, res)]
    return tensors


def torch_conv(x, weight, bias, residual, relu, negative_slope=None, **conv_args):
    """torch's conv, residual add and ReLU (LeakyReLU when a negative_slope is given)."""
    y = F.conv2d(x, weight, bias, **conv_args)
    if residual is not None:
        y = y + residual
    if relu and negative_slope is not None:
        return F.leaky_relu(y, negative_slope)
    return F.relu(y) if relu else y


def grads(out, inputs, grad_output):
    wanted = [t for t in inputs if t is not None]
    return torch.autograd.grad(out, wanted, grad_output)


def compare(x, weight, bias, residual, relu, backend, algo="direct", check_grads=True, factor=2.0,
            negative_slope=None, **conv_args):
    """Our conv and torch's in the same dtype, both against torch in fp64; gradients too. With a negative_slope the
    activation is LeakyReLU."""
    activation = None if not relu else "relu" if negative_slope is None else "leaky_relu"
    slope = {} if negative_slope is None else {"negative_slope": negative_slope}
    ours = dlkernels.conv2d(x, weight, bias, **conv_args, algo=algo, activation=activation, residual=residual,
                            backend=backend, **slope)
    same = torch_conv(x, weight, bias, residual, relu, negative_slope, **conv_args)
    inputs64 = [None if t is None else t.detach().double().requires_grad_(t.requires_grad)
                for t in (x, weight, bias, residual)]
    reference = torch_conv(*inputs64, relu, negative_slope, **conv_args)
    assert_accurate(ours, same, reference, factor)
    assert is_channels_last(ours) == is_channels_last(reference) or x.shape[1] == 1
    if not check_grads:
        return
    grad_output = torch.randn_like(same)
    for name, g_ours, g_same, g_ref in zip(("input", "weight", "bias", "residual"),
                                           grads(ours, (x, weight, bias, residual), grad_output),
                                           grads(same, (x, weight, bias, residual), grad_output),
                                           grads(reference, inputs64, grad_output.double())):
        assert g_ours.dtype == x.dtype, name
        assert_accurate(g_ours, g_same, g_ref, factor, what=f"grad {name}")


# (input shape, (K, R, S), groups, conv arguments): small, because the Triton interpreter is slow.
DIRECT_CASES = {
    "3x3": ((2, 4, 7, 9), (6, 3, 3), 1, dict(padding=1)),
    "3x3-s2-groups": ((1, 6, 8, 8), (4, 3, 3), 2, dict(stride=2, padding=1)),
    "depthwise": ((2, 4, 6, 6), (4, 3, 3), 4, dict(padding=1)),
    "1x1": ((2, 8, 5, 5), (5, 1, 1), 1, dict()),
    "5x3-dilated-asym": ((1, 3, 11, 10), (4, 5, 3), 1, dict(stride=(1, 2), padding=(2, 3), dilation=(2, 1))),
    "11x11-s4": ((1, 3, 23, 23), (4, 11, 11), 1, dict(stride=4, padding=2)),
    "same-even-kernel": ((1, 3, 6, 7), (2, 4, 2), 1, dict(padding="same")),
}
# Triton in its interpreter runs the whole dtype x layout matrix on two cases and fp32 on all.
TRITON_FULL_MATRIX = {"3x3", "3x3-s2-groups"}


@pytest.mark.parametrize("relu,residual", [(False, False), (True, True)], ids=["plain", "residual-relu"])
@pytest.mark.parametrize("case", DIRECT_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_direct_matches_torch(backend, dtype, layout, case, relu, residual):
    if backend == "triton" and case not in TRITON_FULL_MATRIX and dtype != torch.float32:
        pytest.skip("the interpreter runs every case in fp32 and every dtype on two cases")
    shape, kernel, groups, conv_args = DIRECT_CASES[case]
    x, weight, bias, res = make_case(shape, kernel, groups, dtype, layout, residual=residual, requires_grad=True,
                                     **conv_args)
    compare(x, weight, bias, res, relu, backend, groups=groups, **conv_args)


# LeakyReLU epilogue: the cases whose kernels differ (implicit GEMM, grouped/strided, Triton's depthwise kernel) and
# Winograd, in fp32 and fp64, with bias and residual; torch's default slope, DCGAN's 0.2 and the identity slope 1.
LEAKY_CASES = {name: DIRECT_CASES[name] for name in ("3x3", "3x3-s2-groups", "depthwise")}
LEAKY_CASES["winograd_2x2"] = ((1, 4, 7, 6), (5, 3, 3), 1, dict(padding=1))


@pytest.mark.parametrize("slope", [0.01, 0.2, 1.0])
@pytest.mark.parametrize("case", LEAKY_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_leaky_relu_epilogue_matches_torch(backend, dtype, case, slope):
    """activation="leaky_relu": values and gradients of input, weight, bias and residual vs
    F.leaky_relu(F.conv2d(...) + residual)."""
    torch.manual_seed(7)
    shape, kernel, groups, conv_args = LEAKY_CASES[case]
    layout = "channels_last" if case == "3x3" else "nchw"
    x, weight, bias, res = make_case(shape, kernel, groups, dtype, layout, residual=True, requires_grad=True,
                                     **conv_args)
    algo = case if case.startswith("winograd") else "direct"
    factor = WINOGRAD_ERROR_FACTOR[2] if algo != "direct" else 2.0
    compare(x, weight, bias, res, True, backend, algo=algo, factor=factor, negative_slope=slope, groups=groups,
            **conv_args)


@pytest.mark.parametrize("algo", ["direct", "winograd_2x2"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_leaky_relu_slope_zero_is_relu(backend, algo):
    """Slope 0 runs the ReLU epilogue exactly, forward and backward (torch's leaky_relu(x, 0) differs only at -inf
    and for the gradient at NaN outputs)."""
    torch.manual_seed(8)
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for kwargs in (dict(activation="relu"), dict(activation="leaky_relu", negative_slope=0.0)):
        out = dlkernels.conv2d(x, weight, padding=1, algo=algo, backend=backend, **kwargs)
        results.append((out, *torch.autograd.grad(out, (x, weight), torch.ones_like(out))))
    for ours, relu in zip(*results):
        torch.testing.assert_close(ours, relu, rtol=0, atol=0)


# Winograd's low-precision error is mostly the rounding of the transformed operands, which does not
# shrink with fewer channels while PyTorch's error does: 48 channels keep the ratio representative.
WINOGRAD_CASES = {
    "pad1": ((2, 48, 9, 7), dict(padding=1)),  # output 9x7: partial tiles on both axes
    "pad0": ((1, 48, 10, 11), dict(padding=0)),
    "same": ((1, 48, 6, 5), dict(padding="same")),
}


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_winograd_matches_torch(backend, dtype, layout, case, tile):
    if backend == "triton" and (case != "pad1" or dtype in LOW_PRECISION):
        pytest.skip("the interpreter runs one case in fp32/fp64 here, and fp16/bf16 against the C++ reference "
                    "in test_triton_winograd_matches_the_cpp_reference")
    shape, conv_args = WINOGRAD_CASES[case]
    channels = 8 if backend == "triton" else shape[1]  # fp32/fp64 errors need no 48 channels to be representative
    x, weight, bias, res = make_case((shape[0], channels, *shape[2:]), (channels, 3, 3), 1, dtype, layout,
                                     residual=True, requires_grad=True, **conv_args)
    # The input gradient is a Winograd conv too, with padding 2 - p (here 1, 2 and 1); the weight gradient
    # always comes from the direct kernel.
    # ReLU masks where outputs near zero differ by more than the rounding, so gradients are checked without it
    # and the fused ReLU on the output only.
    algo, factor = f"winograd_{tile}x{tile}", WINOGRAD_ERROR_FACTOR[tile]
    compare(x, weight, bias, res, True, backend, algo=algo, factor=factor, check_grads=False, **conv_args)
    compare(x, weight, bias, res, False, backend, algo=algo, factor=factor, **conv_args)


TRITON_ON_CPU = CPU_BACKENDS[1:]


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("backend", TRITON_ON_CPU)
def test_triton_winograd_matches_the_cpp_reference(backend, dtype, layout, case, tile):
    """Both follow the same precision contract (dlk/winograd.h): on the same inputs they agree to the last bit
    but for summation order, so a few channels suffice and every rounding point is checked."""
    shape, conv_args = WINOGRAD_CASES[case]
    x, weight, bias, res = make_case((*shape[:1], 8, *shape[2:]), (8, 3, 3), 1, dtype, layout, residual=True,
                                     requires_grad=True, **conv_args)
    outputs = {}
    for which in (backend, "reference"):
        out = dlkernels.conv2d(x, weight, bias, **conv_args, algo=f"winograd_{tile}x{tile}", residual=res,
                               activation="relu", backend=which)
        outputs[which] = (out, *grads(out, (x, weight, bias, res), torch.ones_like(out)))
    for name, ours, reference in zip(("output", "input", "weight", "bias", "residual"), *outputs.values()):
        scale = reference.double().abs().max().item()
        torch.testing.assert_close(ours, reference, rtol=0, atol=2 * UNIT_ROUNDOFF[dtype] * scale, msg=name)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_winograd_data_gradient_with_padding_beyond_two(backend):
    """Padding 3 makes the data-gradient convolution's padding 2 - 3 = -1."""
    x, weight, bias, _ = make_case((1, 3, 5, 6), (4, 3, 3), 1, torch.float64, "nchw", requires_grad=True)
    compare(x, weight, bias, None, False, backend, algo="winograd_2x2", padding=3)


def winograd_error_ratio(dtype, tile, channels, size=12):
    """Max error of the C++ Winograd reference / PyTorch's at `dtype`, both against fp64 (same inputs)."""
    generator = torch.Generator().manual_seed(channels)
    x = torch.randn(1, channels, size, size, generator=generator, dtype=torch.float64).to(dtype)
    weight = (torch.randn(channels, channels, 3, 3, generator=generator, dtype=torch.float64)
              / (3 * channels**0.5)).to(dtype)
    reference = F.conv2d(x.double(), weight.double(), padding=1)
    ours = dlkernels.conv2d(x, weight, padding=1, algo=f"winograd_{tile}x{tile}", backend="reference")
    return max_error(ours, reference) / max_error(F.conv2d(x, weight, padding=1), reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_auto_uses_only_winograd_tiles_that_meet_the_accuracy_bar(dtype, record_property):
    """ACCURATE_WINOGRAD_TILES must hold up: a listed tile meets the 2x bar at ResNet-like channel counts,
    and F(4,3), which is listed nowhere, misses it everywhere (its transforms hold 8 and 1/24)."""
    precision = conv_ops.precision_of(dtype, allow_tf32=False)
    for tile in (2, 4):
        ratios = [winograd_error_ratio(dtype, tile, channels) for channels in (64, 256)]
        record_property(f"{precision}_F{tile}_error_ratio", ratios)
        if tile in conv_ops.ACCURATE_WINOGRAD_TILES[precision]:
            assert max(ratios) <= 2.0, f"F({tile},3) is listed as accurate at {precision}, ratios {ratios}"
        if tile == 4:
            assert min(ratios) > 2.0, f"F(4,3) meets the bar at {precision} ({ratios}): list it"


ALGO_FACTOR = {"direct": 2.0, "winograd_2x2": WINOGRAD_ERROR_FACTOR[2], "winograd_4x4": WINOGRAD_ERROR_FACTOR[4]}


def relative_errors(actual, reference):
    """(max, mean) of |actual - reference| relative to max |reference| and mean |reference|."""
    error = (actual.double() - reference).abs()
    return error.max().item() / reference.abs().max().item(), error.mean().item() / reference.abs().mean().item()


def accuracy_report(backend, device, record_property, shape=(2, 64, 14, 14)):
    """Per algorithm and dtype: our and PyTorch's max/mean relative error against fp64 on the same inputs,
    recorded as test properties (junit XML), and each algorithm held to its bar."""
    generator = torch.Generator().manual_seed(1)
    x64 = torch.randn(shape, generator=generator, dtype=torch.float64)
    w64 = torch.randn(shape[1], shape[1], 3, 3, generator=generator, dtype=torch.float64) / (3 * shape[1] ** 0.5)
    for dtype in LOW_PRECISION + [torch.float32]:
        x, weight = x64.to(dtype).to(device), w64.to(dtype).to(device)
        reference = F.conv2d(x.double(), weight.double(), padding=1)
        theirs = relative_errors(F.conv2d(x, weight, padding=1), reference)
        record_property(f"torch_{str(dtype)[6:]}_max_mean", theirs)
        for algo, factor in ALGO_FACTOR.items():
            ours = relative_errors(dlkernels.conv2d(x, weight, padding=1, algo=algo, backend=backend), reference)
            record_property(f"{algo}_{str(dtype)[6:]}_max_mean", ours)
            assert ours[0] <= factor * theirs[0] + UNIT_ROUNDOFF[dtype], (algo, dtype, ours, theirs)


def test_accuracy_report(record_property):
    accuracy_report("reference", "cpu", record_property)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_accuracy_report_against_cudnn(backend, record_property):
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        accuracy_report(backend, "cuda", record_property, shape=(8, 256, 14, 14))


def test_auto_choice(monkeypatch):
    x = torch.randn(1, 64, 16, 16)
    weight = torch.randn(64, 64, 3, 3)
    pick = lambda x, weight, stride=(1, 1): conv_ops._tile_for("auto", x, weight, stride, (1, 1), 1, [16, 16], False)
    assert pick(x, weight) == conv_ops.DIRECT  # no tile meets the accuracy bar in float32
    monkeypatch.setitem(conv_ops.ACCURATE_WINOGRAD_TILES, "float32", (2,))
    assert pick(x, weight) == 2
    assert pick(x, weight, stride=(2, 2)) == conv_ops.DIRECT
    assert pick(x[:, :8], weight[:8, :8]) == conv_ops.DIRECT  # too few channels to repay the transforms
    assert pick(x.half(), weight.half()) == conv_ops.DIRECT


def test_measured_choice_times_the_accurate_candidates_once_per_shape(monkeypatch):
    monkeypatch.setitem(conv_ops.ACCURATE_WINOGRAD_TILES, "float64", (4, 2))
    conv_ops.set_benchmark(True)
    try:
        x, weight = torch.randn(1, 8, 10, 10, dtype=torch.float64), torch.randn(8, 8, 3, 3, dtype=torch.float64)
        out = dlkernels.conv2d(x, weight, padding=1, backend="reference")
        assert len(conv_ops._MEASURED_TILES) == 1
        assert next(iter(conv_ops._MEASURED_TILES.values())) in (conv_ops.DIRECT, 4, 2)
        dlkernels.conv2d(x, weight, padding=1, backend="reference")
        dlkernels.conv2d(x[:, :, :8], weight, padding=1, backend="reference")  # another shape: measured again
        assert len(conv_ops._MEASURED_TILES) == 2
        torch.testing.assert_close(out, F.conv2d(x, weight, padding=1), rtol=1e-10, atol=1e-10)
    finally:
        conv_ops.set_benchmark(False)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_winograd_inference_reuses_the_transformed_weight_until_it_changes(backend):
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        first = dlkernels.conv2d(x, weight, padding=1, algo="winograd_2x2", backend=backend)
        cached = conv_ops._TRANSFORMED_WEIGHTS[weight][1]
        again = dlkernels.conv2d(x, weight, padding=1, algo="winograd_2x2", backend=backend)
        assert conv_ops._TRANSFORMED_WEIGHTS[weight][1] is cached
        weight.mul_(2)  # an in-place update (an optimizer step) must invalidate the cache
        updated = dlkernels.conv2d(x, weight, padding=1, algo="winograd_2x2", backend=backend)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(updated, F.conv2d(x, weight, padding=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_winograd_inference_cache_sees_data_rebinding_and_can_be_cleared(backend):
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)

    def check():
        with torch.no_grad():
            out = dlkernels.conv2d(x, weight, padding=1, algo="winograd_2x2", backend=backend)
        torch.testing.assert_close(out, F.conv2d(x, weight, padding=1), rtol=1e-12, atol=1e-12)

    check()
    weight.data = torch.randn(5, 4, 3, 3, dtype=torch.float64)  # new storage: the data pointer moves
    check()
    weight.data.zero_()  # no version counter sees this edit: the documented remedy
    dlkernels.clear_conv2d_weight_cache()
    check()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batchless_and_strided_inputs(backend):
    x = torch.randn(3, 9, 10, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(dlkernels.conv2d(x, weight, padding=1, backend=backend),
                               F.conv2d(x, weight, padding=1))
    wide = torch.randn(2, 6, 9, 20, dtype=torch.float64)[:, ::2, :, ::2]  # neither NCHW- nor NHWC-contiguous
    torch.testing.assert_close(dlkernels.conv2d(wide, weight, backend=backend), F.conv2d(wide, weight))


# ----------------------------------------------------------------------------- custom op machinery
def _opcheck_args(backend, tile):
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    return (x, weight, bias, None, [1, 1], [1, 1], [1, 1], 1, [6, 6], True, False, False, tile, backend)


@pytest.mark.parametrize("tile", [0, 2])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend, tile):
    # tile 2 checks the LeakyReLU slope argument (appended to the schema); tile 0 the older call without it
    slope = (0.2,) if tile else ()
    torch.library.opcheck(torch.ops.dlk.conv2d.default, _opcheck_args(backend, tile) + slope)
    x, weight = _opcheck_args(backend, tile)[:2]
    grad = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    torch.library.opcheck(torch.ops.dlk.conv2d_backward.default, (grad, x.detach(), weight.detach(), [1, 1], [1, 1], [1, 1], 1,
                                                      False, False, tile, backend, True, True))


def test_torch_compile_matches_eager():
    model = torch.nn.Sequential(dlkernels.nn.Conv2d(3, 8, 3, padding=1, activation="relu"),
                                dlkernels.nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=2, activation="leaky_relu",
                                                    negative_slope=0.2)).double()
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.Conv2d(8, 4, 3, stride=2, padding=1, groups=2),
                                    torch.nn.LeakyReLU(0.2)).double()
    reference[0].load_state_dict(model[0].state_dict())
    reference[2].load_state_dict(model[1].state_dict())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out, expected = compiled(x), reference(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    for ours, theirs in ((model[0].weight, reference[0].weight), (model[1].weight, reference[2].weight),
                         (model[1].bias, reference[2].bias)):
        torch.testing.assert_close(ours.grad, theirs.grad)


# ----------------------------------------------------------------------------- module and convert
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_module_is_a_drop_in(padding_mode):
    reference = torch.nn.Conv2d(4, 6, 3, stride=1, padding=1, padding_mode=padding_mode).double()
    ours = dlkernels.nn.Conv2d(4, 6, 3, stride=1, padding=1, padding_mode=padding_mode).double()
    assert ours.state_dict().keys() == reference.state_dict().keys()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x))


def test_convert_fuses_conv_relu_and_keeps_outputs():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 9, 9)
    expected = model(x)
    keys = set(model.state_dict())
    converted = dlkernels.convert(model)
    assert type(converted[0]) is dlkernels.nn.Conv2d and converted[0].activation == "relu"
    assert type(converted[1]) is torch.nn.Identity and converted[0].bias is None
    assert set(converted.state_dict()) == keys
    torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_convert_fuses_conv_and_bn_leaky_relu(training):
    """Conv2d + LeakyReLU and BatchNorm2d + LeakyReLU fuse (slope carried over, state_dict keys kept) and compute
    what the unconverted model does, values and gradients; a negative slope stays torch's LeakyReLU."""
    torch.manual_seed(9)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.LeakyReLU(0.2),
                                torch.nn.Conv2d(6, 6, 3, stride=2, padding=1, bias=False), torch.nn.BatchNorm2d(6),
                                torch.nn.LeakyReLU(inplace=True), torch.nn.Conv2d(6, 4, 1),
                                torch.nn.LeakyReLU(-0.5)).double().train(training)
    twin = copy.deepcopy(model)
    keys = list(model.state_dict())
    converted = dlkernels.convert(model, backend="reference")
    assert [type(m) for m in converted] == [dlkernels.nn.Conv2d, torch.nn.Identity, dlkernels.nn.Conv2d,
                                            dlkernels.nn.BatchNormReLU2d, torch.nn.Identity, dlkernels.nn.Conv2d,
                                            torch.nn.LeakyReLU]
    assert (converted[0].activation, converted[0].negative_slope) == ("leaky_relu", 0.2)
    assert (converted[3].activation, converted[3].negative_slope) == ("leaky_relu", 0.01)
    assert converted[2].activation is None and converted[5].activation is None
    assert list(converted.state_dict()) == keys
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out, expected = converted(x), twin(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    for ours, theirs in zip(torch.autograd.grad(out, list(converted.parameters()), grad),
                            torch.autograd.grad(expected, list(twin.parameters()), grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    for name, buffer in twin.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(converted.state_dict()[name], buffer)


# ----------------------------------------------------------------------------- bad inputs
def _bad(**overrides):
    args = dict(input=torch.randn(1, 4, 8, 8), weight=torch.randn(6, 4, 3, 3), bias=None, stride=1, padding=0,
                dilation=1, groups=1)
    args.update(overrides)
    return args


BAD_INPUTS = {
    "channel mismatch": (_bad(weight=torch.randn(6, 3, 3, 3)), ValueError, "expects 3 input channels"),
    "groups do not divide channels": (_bad(groups=3), ValueError, "groups=3 must divide"),
    "groups do not divide filters": (_bad(weight=torch.randn(5, 2, 3, 3), groups=2), ValueError, "must divide"),
    "weight rank": (_bad(weight=torch.randn(6, 4, 3)), ValueError, "weight must be 4-D"),
    "input rank": (_bad(input=torch.randn(4, 8)), ValueError, "input must be 3-D or 4-D"),
    "dtype mismatch": (_bad(weight=torch.randn(6, 4, 3, 3, dtype=torch.float64)), TypeError, "does not match"),
    "integer input": (_bad(input=torch.ones(1, 4, 8, 8, dtype=torch.int32)), TypeError, "unsupported dtype"),
    "kernel larger than padded input": (_bad(input=torch.randn(1, 4, 2, 8)), ValueError, "larger than the padded"),
    "dilated kernel too large": (_bad(dilation=4), ValueError, "larger than the padded"),
    "empty input": (_bad(input=torch.randn(0, 4, 8, 8)), ValueError, "must not be empty"),
    "bias shape": (_bad(bias=torch.randn(5)), ValueError, r"bias must have shape \(6,\)"),
    "negative padding": (_bad(padding=-1), ValueError, "padding must be >= 0"),
    "zero stride": (_bad(stride=0), ValueError, "stride must be >= 1"),
    "same with stride": (_bad(padding="same", stride=2), ValueError, "'same' is not supported for strided"),
    "unknown padding string": (_bad(padding="full"), ValueError, "padding must be"),
    "groups not an int": (_bad(groups=1.5), ValueError, "groups must be a positive int"),
    "weight not a tensor": (_bad(weight=[1.0]), TypeError, "weight must be a torch.Tensor"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(case):
    args, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        dlkernels.conv2d(**args, backend="reference")  # our validation; auto would give torch's errors


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(algo="fft"), ValueError, "algo must be one of"),
    (dict(algo="winograd", stride=2), ValueError, "needs a 3x3 kernel, stride 1"),
    (dict(algo="winograd_4x4", groups=2), ValueError, "needs a 3x3 kernel"),
    (dict(activation="gelu"), ValueError, "activation must be None, 'relu' or 'leaky_relu'"),
    (dict(activation="leaky_relu", negative_slope=-0.1), ValueError, "negative_slope must be >= 0 for our kernels"),
    (dict(activation="leaky_relu", negative_slope="0.2"), TypeError, "negative_slope must be a float"),
    (dict(residual=torch.randn(1, 6, 7, 7)), ValueError, "residual must have the output's shape"),
    (dict(backend="cuda"), RuntimeError, "backend 'cuda' is unavailable"),
    (dict(backend="tpu"), ValueError, "backend must be one of"),
])
def test_bad_options_raise_clear_errors(kwargs, error, message):
    x, weight = torch.randn(1, 4, 8, 8), torch.randn(6, 4 // kwargs.get("groups", 1), 3, 3)
    with pytest.raises(error, match=message):
        dlkernels.conv2d(x, weight, **{"backend": "reference", **kwargs})


# ------------------------------------------------------------- auto, torch and OpInfo
@pytest.mark.parametrize("backend", ["auto", "torch", "reference"])
def test_opinfo_samples_give_torchs_result_or_error(backend):
    counts = check_against_torch("nn.functional.conv2d", dlkernels.conv2d, backend)
    assert counts["same"] > 0 and counts["same_error"] > 0
    if backend != "reference":
        assert counts["unsupported"] == 0, counts


@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
def test_torch_backend_fuses_the_same_epilogue(activation):
    x, w, b = torch.randn(2, 4, 9, 9, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64), \
        torch.randn(6, dtype=torch.float64)
    residual = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    args = dict(padding=1, activation=activation, residual=residual, negative_slope=0.2)
    torch.testing.assert_close(dlkernels.conv2d(x, w, b, backend="torch", **args),
                               dlkernels.conv2d(x, w, b, backend="reference", **args))


def test_negative_slope_runs_torch_under_auto_and_torch():
    """Our kernels refuse a negative slope by name; "auto" and "torch" accept any slope torch does."""
    x, w = torch.randn(1, 4, 8, 8, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64)
    expected = F.leaky_relu(F.conv2d(x, w, padding=1), -0.3)
    for backend in ("auto", "torch"):
        out = dlkernels.conv2d(x, w, padding=1, activation="leaky_relu", negative_slope=-0.3, backend=backend)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        dlkernels.conv2d(x, w, padding=1, activation="leaky_relu", negative_slope=-0.3, backend="reference")
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        dlkernels.conv2d(x, w, padding=1, activation="leaky_relu", negative_slope=float("nan"), backend="reference")


def test_auto_runs_torch_on_cpu_and_where_ours_refuse():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    explanation = dlkernels.explain(dlkernels.conv2d, x, w, padding=1)
    assert [d.backend for d in explanation] == ["torch"]
    torch.testing.assert_close(explanation.result, F.conv2d(x, w, padding=1), rtol=0, atol=0)
    assert [d.backend for d in dlkernels.explain(dlkernels.conv2d, x, w, backend="reference")] == ["reference"]
    # an empty batch: ours refuse by name, auto gives torch's result
    empty = torch.randn(0, 4, 8, 8)
    with pytest.raises(ValueError, match="must not be empty"):
        dlkernels.conv2d(empty, w, backend="reference")
    assert dlkernels.conv2d(empty, w).shape == (0, 6, 6, 6)
    with pytest.raises(RuntimeError) as from_torch:
        F.conv2d(x, torch.randn(6, 3, 3, 3))
    with pytest.raises(RuntimeError) as from_auto:
        dlkernels.conv2d(x, torch.randn(6, 3, 3, 3))
    assert str(from_auto.value) == str(from_torch.value)


# ----------------------------------------------------------------------------- GPU (vs cuDNN)
# Real layer shapes: ResNet-50 stage 2-4 3x3 and 1x1 layers, a strided 3x3, AlexNet conv1, a depthwise layer.
GPU_LAYERS = {
    "resnet50-3x3-56": ((8, 64, 56, 56), (64, 3, 3), 1, dict(padding=1)),
    "resnet50-3x3-14": ((8, 256, 14, 14), (256, 3, 3), 1, dict(padding=1)),
    "resnet50-1x1-28": ((8, 512, 28, 28), (128, 1, 1), 1, dict()),
    "resnet50-3x3-s2": ((8, 128, 56, 56), (128, 3, 3), 1, dict(stride=2, padding=1)),
    "alexnet-conv1": ((8, 3, 224, 224), (64, 11, 11), 1, dict(stride=4, padding=2)),
    "depthwise": ((8, 128, 56, 56), (128, 3, 3), 128, dict(padding=1)),
}


@pytest.mark.cuda
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("layer", GPU_LAYERS)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_direct_matches_cudnn(backend, layer, dtype, layout):
    shape, kernel, groups, conv_args = GPU_LAYERS[layer]
    x, weight, bias, res = (None if t is None else t.cuda().detach().requires_grad_() for t in
                            make_case(shape, kernel, groups, dtype, layout, residual=True, **conv_args))
    compare(x, weight, bias, res, True, backend, groups=groups, **conv_args)


@pytest.mark.cuda
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("layer", ["resnet50-3x3-56", "resnet50-3x3-14"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_winograd_matches_cudnn(backend, layer, dtype, layout, tile):
    shape, kernel, groups, conv_args = GPU_LAYERS[layer]
    x, weight, bias, res = (None if t is None else t.cuda().detach().requires_grad_() for t in
                            make_case(shape, kernel, groups, dtype, layout, residual=True, **conv_args))
    compare(x, weight, bias, res, True, backend, algo=f"winograd_{tile}x{tile}", factor=WINOGRAD_ERROR_FACTOR[tile],
            **conv_args)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_winograd_tiles_listed_as_accurate_meet_the_bar(backend):
    """The auto table against the real kernels and cuDNN, TF32 included."""
    generator = torch.Generator().manual_seed(0)
    x64 = torch.randn(4, 256, 14, 14, generator=generator, dtype=torch.float64)
    w64 = torch.randn(256, 256, 3, 3, generator=generator, dtype=torch.float64) / 48
    for dtype, tf32 in ((torch.float16, False), (torch.bfloat16, False), (torch.float32, False), (torch.float32, True)):
        x, weight = x64.to(dtype).cuda(), w64.to(dtype).cuda()
        reference = F.conv2d(x.double(), weight.double(), padding=1)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32):
            cudnn_error = max_error(F.conv2d(x, weight, padding=1), reference)
            for tile in conv_ops.ACCURATE_WINOGRAD_TILES[conv_ops.precision_of(dtype, tf32)]:
                ours = dlkernels.conv2d(x, weight, padding=1, algo=f"winograd_{tile}x{tile}", backend=backend)
                assert max_error(ours, reference) <= 2 * cudnn_error + UNIT_ROUNDOFF[dtype] * reference.abs().max()
