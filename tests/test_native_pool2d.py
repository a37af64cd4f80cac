"""dlkernels._native.pool2d: the pooling ops over the C ABI (libdlk_cpu.so / libdlk_cuda.so).

Every entry point is compared with torch's own pooling: max values and indices exactly, averages
within tolerances.
"""
import pytest
import torch
import torch.nn.functional as F

from dlkernels import _native

if not _native.has_cpu_lib():
    pytest.skip("libdlk_cpu.so is not built (python csrc/build.py)", allow_module_level=True)

from dlkernels._native import pool2d as native  # noqa: E402  (declares its symbols on import)


MAX, AVG, ADAPTIVE = 0, 1, 2
TOLERANCES = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6), torch.bfloat16: (1e-2, 1e-2),
              torch.float16: (1e-3, 1e-3)}
DTYPES = list(TOLERANCES)

# (mode, N, C, H, W, kernel, stride, padding, dilation, count_include_pad, divisor_override, output_size)
CASES = {
    "max_3x3": (MAX, 2, 3, 9, 7, (3, 3), (2, 2), (1, 1), (1, 1), True, 0, None),
    "max_dilated": (MAX, 1, 4, 10, 11, (3, 2), (1, 2), (1, 0), (2, 3), True, 0, None),
    "avg_pad": (AVG, 2, 3, 8, 9, (3, 3), (2, 1), (1, 1), (1, 1), True, 0, None),
    "avg_exclude_pad": (AVG, 1, 5, 7, 7, (2, 3), (2, 2), (1, 1), (1, 1), False, 0, None),
    "avg_divisor": (AVG, 2, 2, 6, 6, (2, 2), (2, 2), (0, 0), (1, 1), True, 3, None),
    "adaptive": (ADAPTIVE, 2, 3, 10, 7, (1, 1), (1, 1), (0, 0), (1, 1), True, 0, (4, 3)),
    "adaptive_global": (ADAPTIVE, 3, 4, 5, 6, (1, 1), (1, 1), (0, 0), (1, 1), True, 0, (1, 1)),
}


def output_size(case):
    mode, _, _, h, w, kernel, stride, padding, dilation, _, _, adaptive_size = case
    if mode == ADAPTIVE:
        return adaptive_size
    extent = [dilation[i] * (kernel[i] - 1) + 1 if mode == MAX else kernel[i] for i in range(2)]
    return tuple((size + 2 * padding[i] - extent[i]) // stride[i] + 1 for i, size in enumerate((h, w)))


def make_input(case, dtype, channels_last, device="cpu"):
    _, n, c, h, w = case[:5]
    x = torch.randn(n, c, h, w, dtype=torch.float64, device=device).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def forward_args(case, channels_last):
    mode, _, _, _, _, kernel, stride, padding, dilation, count_include_pad, divisor_override, _ = case
    return (mode, list(kernel), list(stride), list(padding), list(dilation), list(output_size(case)),
            count_include_pad, divisor_override, channels_last)


def backward_args(case, channels_last):
    mode, _, _, h, w, kernel, stride, padding, dilation, count_include_pad, divisor_override, _ = case
    return (mode, [h, w], list(kernel), list(stride), list(padding), list(dilation), count_include_pad,
            divisor_override, channels_last)


def torch_pool(x, case):
    """torch's output and, for max, indices."""
    mode, _, _, _, _, kernel, stride, padding, dilation, count_include_pad, divisor_override, _ = case
    if mode == MAX:
        return F.max_pool2d(x, kernel, stride, padding, dilation, return_indices=True)
    if mode == AVG:
        return F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad,
                            divisor_override=divisor_override or None), None
    return F.adaptive_avg_pool2d(x, output_size(case)), None


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward_match_torch(name, dtype, channels_last):
    case = CASES[name]
    x = make_input(case, dtype, channels_last)
    out, indices = native.pool2d_forward(x, *forward_args(case, channels_last))
    expected_format = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=expected_format) and out.dtype == dtype

    reference_x = x.detach().clone().requires_grad_()
    expected, expected_indices = torch_pool(reference_x, case)
    if case[0] == MAX:
        torch.testing.assert_close(out, expected.detach(), rtol=0, atol=0)
        torch.testing.assert_close(indices, expected_indices, rtol=0, atol=0)
    else:
        assert_close(out, expected.detach(), dtype)
        assert indices.numel() == 0

    grad_output = torch.randn_like(out)
    grad_input = native.pool2d_backward(grad_output, indices, *backward_args(case, channels_last))
    expected.backward(grad_output)
    assert grad_input.shape == x.shape and grad_input.is_contiguous(memory_format=expected_format)
    assert_close(grad_input, reference_x.grad, dtype)


def test_empty_batch():
    case = CASES["max_3x3"]
    x = torch.randn(0, 3, 9, 7)
    out, indices = native.pool2d_forward(x, *forward_args(case, False))
    assert out.shape == (0, 3, *output_size(case)) and indices.shape == out.shape


def test_checks_before_the_kernel():
    case = CASES["avg_pad"]
    with pytest.raises(RuntimeError, match="must be 4-D"):
        native.pool2d_forward(torch.randn(3, 8, 9), *forward_args(case, False))
    with pytest.raises(RuntimeError, match="contiguous in channels_last"):
        native.pool2d_forward(make_input(case, torch.float32, False), *forward_args(case, True))
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        native.pool2d_forward(torch.ones(1, 1, 4, 4, dtype=torch.int32), *forward_args(case, False))
    with pytest.raises(RuntimeError, match="mode must be 0, 1 or 2"):
        native.pool2d_forward(make_input(case, torch.float32, False), 7, *forward_args(case, False)[1:])
    max_case = CASES["max_3x3"]
    out, indices = native.pool2d_forward(make_input(max_case, torch.float32, False), *forward_args(max_case, False))
    with pytest.raises(RuntimeError, match="indices must be int64"):
        native.pool2d_backward(out, indices.int(), *backward_args(max_case, False))


def test_library_reports_bad_arguments():
    """The C side refuses what Python let through and says why, through dlk_cpu_last_error."""
    lib = _native.cpu_lib()
    x, out = torch.randn(1, 1, 4, 4), torch.empty(1, 1, 2, 2)
    geometry = (1, 1, 4, 4, 2, 2, 9, 2, 2, 2, 2, 0, 0, 1, 1, 1, 0, 0)  # mode 9
    status = lib.dlk_pool2d_forward_cpu(x.data_ptr(), out.data_ptr(), None, 2, *geometry)
    assert status == 2
    with pytest.raises(RuntimeError, match=r"pool2d_forward \(cpu\).*mode must be 0, 1 or 2, got 9"):
        _native.check(status, lib, "pool2d_forward")
    status = lib.dlk_pool2d_forward_cpu(x.data_ptr(), out.data_ptr(), None, 17, *geometry)
    with pytest.raises(RuntimeError, match="unknown dtype 17"):
        _native.check(status, lib, "pool2d_forward")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", CASES)
def test_cuda_matches_torch(name, dtype):
    if not _native.has_cuda_lib():
        pytest.skip("libdlk_cuda.so is not built (python csrc/build.py --cuda on)")
    case = CASES[name]
    x = make_input(case, dtype, False, device="cuda")
    out, indices = native.pool2d_forward(x, *forward_args(case, False))
    expected, expected_indices = torch_pool(x, case)
    assert_close(out, expected, dtype)
    if case[0] == MAX:
        torch.testing.assert_close(indices, expected_indices, rtol=0, atol=0)
    grad_output = torch.randn_like(out)
    grad_input = native.pool2d_backward(grad_output, indices, *backward_args(case, False))
    reference_x = x.detach().clone().requires_grad_()
    torch_pool(reference_x, case)[0].backward(grad_output)
    assert_close(grad_input, reference_x.grad, dtype)
