"""dlkernels.conv_transpose2d against torch.nn.functional.conv_transpose2d: values and gradients.

Accuracy bar (as tests/test_conv2d.py): against an fp64 result of the same inputs, our max error is at most 2x
PyTorch's own in the same dtype, plus one rounding unit of the largest reference value; float64 allows 64 units.
Shapes stay small: the Triton kernels run in their CPU interpreter here.
"""
import pytest
import torch
import torch.nn.functional as F

import dlkernels
from helpers import CPU_BACKENDS, LAYOUTS, in_layout, is_channels_last
from opinfo_samples import check_against_torch

UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}
DTYPES = list(UNIT_ROUNDOFF)


def assert_accurate(ours, torch_same_dtype, reference, what="output", factor=2.0):
    """max |ours - ref| <= factor * max |torch - ref| + u * max |ref|, ref in fp64."""
    reference = reference.double()
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    assert ours.dtype == torch_same_dtype.dtype, f"{what}: dtype {ours.dtype} != {torch_same_dtype.dtype}"
    ours_error = (ours.double() - reference).abs().max().item()
    torch_error = (torch_same_dtype.double() - reference).abs().max().item()
    units = 32 * factor if ours.dtype == torch.float64 else 1
    floor = units * UNIT_ROUNDOFF[ours.dtype] * reference.abs().max().item()
    assert ours_error <= factor * torch_error + floor, (
        f"{what}: max error {ours_error:.3e} > {factor} x torch's {torch_error:.3e} + {floor:.3e}")


# (input shape, weight shape (C_in, C_out / groups, kH, kW), groups, bias, arguments); H != W throughout.
CASES = {
    "dcgan-s2": ((2, 4, 5, 6), (4, 3, 4, 4), 1, False, dict(stride=2, padding=1)),
    "per-axis": ((1, 4, 4, 3), (4, 3, 3, 2), 2, True,
                 dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2))),
    # output_padding (2, 3) >= stride (3, 2) on the second axis: torch allows it below the dilation
    "output-padding-past-stride": ((2, 2, 4, 5), (2, 2, 4, 5), 2, True,
                                   dict(stride=(3, 2), padding=(1, 2), output_padding=(2, 3), dilation=(4, 4))),
    "depthwise": ((2, 3, 4, 6), (3, 1, 3, 3), 3, True, dict(padding=(0, 1))),
}
# The interpreter runs every case in fp32 and the other dtypes on one case.
TRITON_ALL_DTYPES = "per-axis"


def make_case(input_shape, weight_shape, groups, bias, dtype, layout):
    x = in_layout(torch.randn(input_shape, dtype=dtype), layout).requires_grad_(True)
    fan_in = weight_shape[0] // groups * weight_shape[2] * weight_shape[3]
    weight = (torch.randn(weight_shape, dtype=dtype) / fan_in**0.5).requires_grad_(True)
    b = torch.randn(weight_shape[1] * groups, dtype=dtype, requires_grad=True) if bias else None
    return x, weight, b


def as_fp64(tensors):
    return [None if t is None else t.detach().double().requires_grad_(True) for t in tensors]


def grads(out, inputs, grad_output):
    return torch.autograd.grad(out, [t for t in inputs if t is not None], grad_output)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_torch(backend, dtype, layout, case):
    if backend == "triton" and dtype != torch.float32 and case != TRITON_ALL_DTYPES:
        pytest.skip("the interpreter runs every case in fp32 and every dtype on one case")
    input_shape, weight_shape, groups, bias, args = CASES[case]
    inputs = make_case(input_shape, weight_shape, groups, bias, dtype, layout)
    ours = dlkernels.conv_transpose2d(*inputs, **args, groups=groups, backend=backend)
    same = F.conv_transpose2d(*inputs, **args, groups=groups)
    inputs64 = as_fp64(inputs)
    reference = F.conv_transpose2d(*inputs64, **args, groups=groups)
    assert_accurate(ours, same, reference)
    assert is_channels_last(ours) == (layout == "channels_last")
    grad_output = torch.randn_like(same)
    for name, g_ours, g_same, g_ref in zip(("input", "weight", "bias"), grads(ours, inputs, grad_output),
                                           grads(same, inputs, grad_output),
                                           grads(reference, inputs64, grad_output.double())):
        assert_accurate(g_ours, g_same, g_ref, what=f"grad {name}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batchless_and_strided_inputs(backend):
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(dlkernels.conv_transpose2d(x, weight, stride=2, backend=backend),
                               F.conv_transpose2d(x, weight, stride=2))
    sliced = torch.randn(2, 6, 4, 10, dtype=torch.float64)[:, ::2, :, ::2]  # neither NCHW- nor NHWC-contiguous
    torch.testing.assert_close(dlkernels.conv_transpose2d(sliced, weight, backend=backend),
                               F.conv_transpose2d(sliced, weight))


# ----------------------------------------------------------------------------- custom op machinery
def _opcheck_args(backend, bias=True):
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    # stride 2, padding 1, output_padding (1, 0), groups 2: output (7, 9)
    return (x, weight, b, [2, 2], [1, 1], [1, 1], 2, [6, 9], False, False, backend)


OPCHECKS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend):
    # AOT dispatch, the costly check (many runs), on the reference only: the registrations are the same
    checks = OPCHECKS if backend == "reference" else OPCHECKS[:-1]
    torch.library.opcheck(torch.ops.dlk.conv_transpose2d.default, _opcheck_args(backend), test_utils=checks)


def test_torch_compile_matches_eager():
    model = torch.nn.Sequential(dlkernels.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2),
                                dlkernels.nn.ConvTranspose2d(6, 3, 3, bias=False)).double()
    twin = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2),
                               torch.nn.ConvTranspose2d(6, 3, 3, bias=False)).double()
    twin.load_state_dict(model.state_dict())
    for m in model:
        m.backend = "reference"  # auto would run torch's op on CPU
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    out, expected = compiled(x), twin(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, msg=name)


# ----------------------------------------------------------------------------- module and convert
@pytest.mark.parametrize("backend", ["reference"])
def test_module_is_a_drop_in_with_output_size(backend):
    twin = torch.nn.ConvTranspose2d(4, 6, 3, stride=(2, 3), padding=1, dilation=(1, 2), groups=2).double()
    ours = dlkernels.nn.ConvTranspose2d(4, 6, 3, stride=(2, 3), padding=1, dilation=(1, 2), groups=2,
                                        backend=backend).double()
    assert ours.state_dict().keys() == twin.state_dict().keys()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64)
    for size in (None, [9, 12], [10, 14]):  # the smallest size and the largest output_padding allows
        out = ours(x, output_size=size)
        torch.testing.assert_close(out, twin(x, output_size=size))
    assert out.shape[2:] == (10, 14)
    with pytest.raises(ValueError, match="requested an output size of"):  # torch's own check, kept
        ours(x, output_size=[11, 14])


def test_convert_swaps_conv_transpose_and_keeps_outputs():
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 4, 2, 1, bias=False), torch.nn.ReLU(),
                                torch.nn.ConvTranspose2d(4, 2, 3, output_padding=0)).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected, keys = model(x), set(model.state_dict())
    converted = dlkernels.convert(model, backend="reference")
    assert [type(m) for m in converted] == [dlkernels.nn.ConvTranspose2d, torch.nn.ReLU, dlkernels.nn.ConvTranspose2d]
    assert converted[0].bias is None and set(converted.state_dict()) == keys
    explanation = dlkernels.explain(converted, x)
    assert [d.backend for d in explanation] == ["reference", "reference"]
    torch.testing.assert_close(explanation.result, expected)


# ----------------------------------------------------------------------------- bad inputs, auto, OpInfo
def _bad(**overrides):
    args = dict(input=torch.randn(1, 4, 5, 5), weight=torch.randn(4, 3, 3, 3), bias=None, stride=1, padding=0,
                output_padding=0, groups=1, dilation=1)
    args.update(overrides)
    return args


BAD_INPUTS = {
    "channel mismatch": (_bad(weight=torch.randn(3, 3, 3, 3)), ValueError, "expects 3 input channels"),
    "groups do not divide channels": (_bad(groups=3), ValueError, "groups=3 must divide"),
    "groups not an int": (_bad(groups=2.0), ValueError, "groups must be a positive int"),
    "weight rank": (_bad(weight=torch.randn(4, 3, 3)), ValueError, "weight must be 4-D"),
    "input rank": (_bad(input=torch.randn(4, 5)), ValueError, "input must be 3-D or 4-D"),
    "dtype mismatch": (_bad(weight=torch.randn(4, 3, 3, 3, dtype=torch.float64)), TypeError, "does not match"),
    "integer input": (_bad(input=torch.ones(1, 4, 5, 5, dtype=torch.int32)), TypeError, "unsupported dtype"),
    "empty input": (_bad(input=torch.randn(0, 4, 5, 5)), ValueError, "input must not be empty"),
    "bias shape": (_bad(bias=torch.randn(4)), ValueError, r"bias must have shape \(3,\)"),
    "negative padding": (_bad(padding=(0, -1)), ValueError, "padding must be >= 0"),
    "zero stride": (_bad(stride=0), ValueError, "stride must be >= 1"),
    "zero dilation": (_bad(dilation=(1, 0)), ValueError, "dilation must be >= 1"),
    "string padding": (_bad(padding="same"), TypeError, "padding must be an int or a pair"),
    "output_padding too large": (_bad(stride=2, output_padding=(0, 2)), ValueError,
                                 "output_padding must be smaller than stride or dilation"),
    "no output": (_bad(padding=4), ValueError, "leaves no output"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(case):
    args, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        dlkernels.conv_transpose2d(**args, backend="reference")  # our validation; auto gives torch's errors


def test_auto_runs_torch_on_cpu_and_gives_torchs_errors():
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(4, 3, 3, 3)
    explanation = dlkernels.explain(dlkernels.conv_transpose2d, x, weight, stride=2)
    assert [d.backend for d in explanation] == ["torch"]
    torch.testing.assert_close(explanation.result, F.conv_transpose2d(x, weight, stride=2), rtol=0, atol=0)
    with pytest.raises(RuntimeError) as from_torch:
        F.conv_transpose2d(x, weight, padding=4)
    with pytest.raises(RuntimeError) as from_auto:
        dlkernels.conv_transpose2d(x, weight, padding=4)
    assert str(from_auto.value) == str(from_torch.value)
    torch.testing.assert_close(dlkernels.conv_transpose2d(x, weight, backend="torch"), F.conv_transpose2d(x, weight))


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_opinfo_samples_give_torchs_result_or_error(backend):
    counts = check_against_torch("nn.functional.conv_transpose2d", dlkernels.conv_transpose2d, backend)
    assert counts["same"] > 0, counts
    assert counts["unsupported"] == 0, counts  # every sample is one our kernels cover


# ----------------------------------------------------------------------------- double backward (WGAN-GP)
# conv2d's backward (dlk::conv2d_backward) is differentiable, and conv_transpose2d's backward is built from it, so
# torch.autograd.grad(..., create_graph=True) works through both, to any order.
# (input shape, weight shape, conv2d arguments)
CONV2D_DOUBLE_BACKWARD = {
    "strided-groups-relu": ((1, 2, 4, 3), (2, 1, 3, 2), dict(stride=(2, 1), padding=1, groups=2, activation="relu")),
    "dilated-same-even-kernel": ((1, 1, 3, 4), (2, 1, 2, 3), dict(padding="same", dilation=(2, 1))),
    "winograd-relu": ((1, 1, 3, 4), (2, 1, 3, 3), dict(padding=1, algo="winograd_2x2", activation="relu")),
    # the WGAN-GP critic's layer: strided conv + LeakyReLU(0.2)
    "strided-leaky-relu": ((1, 2, 4, 4), (3, 2, 2, 2), dict(stride=2, padding=1, activation="leaky_relu",
                                                            negative_slope=0.2)),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV2D_DOUBLE_BACKWARD)
def test_conv2d_gradgradcheck(case, layout):
    input_shape, weight_shape, args = CONV2D_DOUBLE_BACKWARD[case]
    x = in_layout(torch.randn(input_shape, dtype=torch.float64), layout).requires_grad_(True)
    weight = torch.randn(weight_shape, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(weight_shape[0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: dlkernels.conv2d(x, w, b, **args, backend="reference"), (x, weight, bias))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_conv_transpose2d_gradgradcheck(layout):
    # gradgradcheck costs a backward per element: tiny shapes (per-axis arguments, output_padding past the stride)
    input_shape, weight_shape, groups = (1, 2, 2, 3), (2, 1, 2, 3), 2
    args = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 1), dilation=(1, 2))
    x, weight, bias = as_fp64(make_case(input_shape, weight_shape, groups, True, torch.float64, layout))
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: dlkernels.conv_transpose2d(x, w, b, **args, groups=groups, backend="reference"),
        (x, weight, bias))


def nested_derivatives(network, leaves, order):
    """Derivatives of order 1..order of `network` with respect to every leaf: each order differentiates a random
    projection of the previous one, with create_graph=True (a gradient penalty is order 2)."""
    generator = torch.Generator().manual_seed(1)
    current, found = [network(*leaves)], []
    for _ in range(order):
        scalar = sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype)).sum() for t in current)
        current = [g for g in torch.autograd.grad(scalar, leaves, create_graph=True, allow_unused=True)
                   if g is not None]
        found += current
    return found


def conv_then_transpose(conv2d, conv_transpose2d):
    """conv2d + ReLU epilogue, then conv_transpose2d: the second layer makes the first one's grad_output depend on
    parameters, so every term of both double backwards is exercised."""
    def network(x, w1, b1, w2, b2):
        hidden = conv2d(x, w1, b1, stride=2, padding=1)
        return conv_transpose2d(hidden, w2, b2, stride=2, padding=(1, 0), output_padding=(1, 0), groups=2)
    return network


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_second_derivatives_match_torch(backend, order=2):
    # (torch's own third derivative of conv_transpose2d with output_padding fails, so order 3 has no reference)
    leaves = [torch.randn(1, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(4, 2, 3, 2),
              torch.randn(4)]
    leaves = [t.double().requires_grad_(True) for t in leaves]
    ours = conv_then_transpose(
        lambda *a, **k: dlkernels.conv2d(*a, **k, activation="relu", backend=backend),
        lambda *a, **k: dlkernels.conv_transpose2d(*a, **k, backend=backend))
    theirs = conv_then_transpose(lambda *a, **k: F.relu(F.conv2d(*a, **k)), F.conv_transpose2d)
    expected = nested_derivatives(theirs, leaves, order)
    actual = nested_derivatives(ours, leaves, order)
    assert len(actual) == len(expected) >= 2 * len(leaves) - 2  # ReLU's second derivative is 0
    for i, (a, e) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda m: f"derivative {i}: {m}")
