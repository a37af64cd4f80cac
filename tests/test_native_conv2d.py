"""dlkernels._native.conv2d: the conv2d ops over the C ABI (libdlk_cpu.so / libdlk_cuda.so).

Every entry point is compared with torch's own convolution within tolerances.
"""

import pytest
import torch
import torch.nn.functional as F

from dlkernels import _native

if not _native.has_cpu_lib():
    pytest.skip("libdlk_cpu.so is not built (python csrc/build.py)", allow_module_level=True)

from dlkernels._native import conv2d as native  # noqa: E402  (declares its symbols on import)


# (rtol, atol) against torch in the same dtype; the reference sums in double whatever the dtype.
TOLERANCES = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-2, 2e-2),
              torch.float16: (2e-3, 2e-3)}
DTYPES = list(TOLERANCES)

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = [
    (2, 4, 7, 9, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (1, 6, 8, 8, 4, 3, 2, (2, 1), (0, 2), (1, 2), 2),
    (2, 4, 6, 5, 4, 3, 3, (1, 2), (2, 1), (2, 1), 4),  # depthwise
    (1, 3, 5, 5, 2, 1, 1, (1, 1), (0, 0), (1, 1), 1),
]


def out_size(size, kernel, stride, padding, dilation):
    return [(size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(2)]


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def make(shape, dtype, channels_last, device="cpu"):
    t = torch.randn(shape, dtype=torch.float64).to(device=device, dtype=dtype)
    return t.contiguous(memory_format=memory_format(channels_last)) if t.dim() == 4 else t


def close(actual, expected):
    rtol, atol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def conv_case(case, dtype, channels_last, device="cpu"):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = make((n, c, h, w), dtype, channels_last, device)
    weight = make((k, c // groups, r, s), dtype, channels_last, device)
    out = out_size((h, w), (r, s), stride, padding, dilation)
    return x, weight, out


def torch_conv(x, weight, bias, residual, stride, padding, dilation, groups, relu):
    y = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), stride, padding, dilation,
                 groups)
    y = y + (0 if residual is None else residual.double())
    return (y.relu() if relu else y).to(x.dtype)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("epilogue", ["none", "bias_residual_relu"])
def test_forward(case, dtype, channels_last, epilogue):
    x, weight, out = conv_case(case, dtype, channels_last)
    stride, padding, dilation, groups = case[7:]
    k = weight.shape[0]
    bias = make((k,), dtype, False) if epilogue != "none" else None
    residual = make((x.shape[0], k, *out), dtype, channels_last) if epilogue != "none" else None
    relu = epilogue != "none"
    args = (x, weight, bias, residual, list(stride), list(padding), list(dilation), groups, out, relu, channels_last,
            False)
    y = native.conv2d_forward(*args)
    assert y.shape == (x.shape[0], k, *out) and y.dtype == dtype
    assert y.is_contiguous(memory_format=memory_format(channels_last))
    close(y, torch_conv(x, weight, bias, residual, stride, padding, dilation, groups, relu))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_backward(case, dtype, channels_last):
    x, weight, out = conv_case(case, dtype, channels_last)
    stride, padding, dilation, groups = case[7:]
    grad_out = make((x.shape[0], weight.shape[0], *out), dtype, channels_last)
    geometry = (list(stride), list(padding), list(dilation), groups, channels_last, False)
    grad_input = native.conv2d_backward_input(grad_out, weight, list(x.shape[2:]), *geometry)
    grad_weight = native.conv2d_backward_weight(grad_out, x, list(weight.shape[2:]), *geometry)

    expected_input, expected_weight, _ = torch.ops.aten.convolution_backward(
        grad_out.double(), x.double(), weight.double(), None, list(stride), list(padding), list(dilation), False,
        [0, 0], groups, [True, True, False])
    assert grad_input.is_contiguous(memory_format=memory_format(channels_last))
    assert grad_weight.is_contiguous(memory_format=memory_format(channels_last))
    close(grad_input, expected_input.to(dtype))
    close(grad_weight, expected_weight.to(dtype))


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("padding", [(1, 1), (0, 2)])
def test_winograd(tile, dtype, channels_last, padding):
    x = make((2, 5, 9, 7), dtype, channels_last)
    weight = make((3, 5, 3, 3), dtype, channels_last)
    bias = make((3,), dtype, False)
    out = out_size(x.shape[2:], (3, 3), (1, 1), padding, (1, 1))
    residual = make((2, 3, *out), dtype, channels_last)
    transformed = native.winograd_transform_weight(weight, tile, channels_last)
    assert transformed.shape == ((tile + 2) ** 2, 3, 5)
    y = native.conv2d_winograd(x, transformed, bias, residual, list(padding), out, tile, True, channels_last, False)
    assert y.is_contiguous(memory_format=memory_format(channels_last))
    expected = torch_conv(x, weight, bias, residual, (1, 1), padding, (1, 1), 1, True)
    if dtype == torch.float64:
        close(y, expected)
    else:  # F(4,3)'s transforms amplify the fp32 rounding of U and V (dlk/winograd.h)
        torch.testing.assert_close(y, expected, rtol=1e-3, atol=1e-3)


def test_winograd_family_module_is_the_same_code():
    from dlkernels._native import conv2d_winograd

    assert conv2d_winograd.conv2d_winograd is native.conv2d_winograd
    assert conv2d_winograd.winograd_transform_weight is native.winograd_transform_weight


def test_checks_before_the_kernel():
    x = make((1, 4, 6, 6), torch.float32, False)
    weight = make((4, 2, 3, 3), torch.float32, False)
    with pytest.raises(RuntimeError, match="channels do not match groups"):
        native.conv2d_forward(x, weight, None, None, [1, 1], [1, 1], [1, 1], 1, [6, 6], False, False, False)
    with pytest.raises(RuntimeError, match="contiguous in channels_last"):
        native.conv2d_forward(x, weight, None, None, [1, 1], [1, 1], [1, 1], 2, [6, 6], False, True, False)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        native.conv2d_forward(x.int(), weight.int(), None, None, [1, 1], [1, 1], [1, 1], 2, [6, 6], False, False,
                              False)
    with pytest.raises(RuntimeError, match="tile must be 2 or 4"):
        native.winograd_transform_weight(make((4, 4, 3, 3), torch.float32, False), 3, False)


def test_library_reports_bad_arguments():
    """The C wrappers refuse what the kernels would misread, and the message reaches Python."""
    lib = _native.cpu_lib()
    x = make((1, 2, 4, 4), torch.float32, False)
    y = torch.empty(1, 2, 4, 4)
    geometry = (1, 2, 4, 4, 2, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0)
    status = lib.dlk_conv2d_forward_cpu(x.data_ptr(), x.data_ptr(), None, None, y.data_ptr(), *geometry, 0, 0.0, 7)
    assert status == 1 and "unknown dtype code 7" in lib.last_error()
    bad_groups = geometry[:15] + (3,) + geometry[16:]
    status = lib.dlk_conv2d_forward_cpu(x.data_ptr(), x.data_ptr(), None, None, y.data_ptr(), *bad_groups, 0, 0.0, 2)
    assert status == 2 and "groups" in lib.last_error()
    # The backward reads the slope from the output's sign: a negative slope would flip it.
    status = lib.dlk_conv2d_forward_cpu(x.data_ptr(), x.data_ptr(), None, None, y.data_ptr(), *geometry, 1, -0.5, 2)
    assert status == 2 and "negative_slope must be >= 0" in lib.last_error()
    status = lib.dlk_conv2d_forward_cpu(x.data_ptr(), x.data_ptr(), None, None, y.data_ptr(), *geometry, 0, -0.5, 2)
    assert status == 0  # ignored while the activation is off
    with pytest.raises(RuntimeError, match="unknown dtype code 7"):
        _native.check(lib.dlk_conv2d_winograd_transform_weight_cpu(x.data_ptr(), y.data_ptr(), 2, 2, 2, 0, 7), lib,
                      "winograd_transform_weight")


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_cuda_matches_torch(case, dtype, channels_last):
    x, weight, out = conv_case(case, dtype, channels_last, "cuda")
    stride, padding, dilation, groups = case[7:]
    bias = make((weight.shape[0],), dtype, False, "cuda")
    y = native.conv2d_forward(x, weight, bias, None, list(stride), list(padding), list(dilation), groups, out, True,
                              channels_last, False)
    torch.testing.assert_close(y, torch_conv(x, weight, bias, None, stride, padding, dilation, groups, True),
                               rtol=2e-2, atol=2e-2)
    grad_out = make((x.shape[0], weight.shape[0], *out), dtype, channels_last, "cuda")
    geometry = (list(stride), list(padding), list(dilation), groups, channels_last, False)
    grad_input = native.conv2d_backward_input(grad_out, weight, list(x.shape[2:]), *geometry)
    grad_weight = native.conv2d_backward_weight(grad_out, x, list(weight.shape[2:]), *geometry)
    expected_input, expected_weight, _ = torch.ops.aten.convolution_backward(
        grad_out.double(), x.double(), weight.double(), None, list(stride), list(padding), list(dilation), False,
        [0, 0], groups, [True, True, False])
    torch.testing.assert_close(grad_input, expected_input.to(dtype), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad_weight, expected_weight.to(dtype), rtol=2e-2, atol=5e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("tile", [2, 4])
def test_cuda_winograd_matches_torch(tile):
    x = make((2, 8, 12, 10), torch.float32, False, "cuda")
    weight = make((16, 8, 3, 3), torch.float32, False, "cuda")
    transformed = native.winograd_transform_weight(weight, tile, False)
    y = native.conv2d_winograd(x, transformed, None, None, [1, 1], [12, 10], tile, False, False, False)
    torch.testing.assert_close(y, torch_conv(x, weight, None, None, (1, 1), (1, 1), (1, 1), 1, False), rtol=1e-3,
                               atol=1e-3)


@pytest.mark.parametrize("slope", [0.2, 0.01, 1.0])
def test_leaky_relu_epilogue_matches_torch(slope):
    """The reference's LeakyReLU epilogue (direct and Winograd) against F.leaky_relu in float64, inf included."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 6, 6, generator=generator, dtype=torch.float64)
    x[0, 0, 0, 0] = float("inf")
    weight = torch.randn(5, 4, 3, 3, generator=generator, dtype=torch.float64)
    expected = F.leaky_relu(F.conv2d(x, weight, padding=1), slope)
    y = native.conv2d_forward(x, weight, None, None, [1, 1], [1, 1], [1, 1], 1, [6, 6], True, False, False, slope)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    transformed = native.winograd_transform_weight(weight, 2, False)
    y = native.conv2d_winograd(x, transformed, None, None, [1, 1], [6, 6], 2, True, False, False, slope)
    finite = expected.isfinite()  # Winograd's transforms spread the inf to NaN/inf over its tile
    torch.testing.assert_close(y[finite], expected[finite], rtol=1e-10, atol=1e-10)
