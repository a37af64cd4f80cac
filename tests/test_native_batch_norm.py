"""dlkernels._native.batch_norm: the fused BatchNorm ops over the C ABI (libdlk_cpu.so / libdlk_cuda.so).

Every entry point is compared, chained as training and eval forward and backward, with torch's
F.batch_norm (+ residual) (+ relu) and autograd within tolerances.
"""
import pytest
import torch
import torch.nn.functional as F

from dlkernels import _native

if not _native.has_cpu_lib():
    pytest.skip("libdlk_cpu.so is not built (python csrc/build.py)", allow_module_level=True)

from dlkernels._native import batch_norm as native  # noqa: E402  (declares its symbols on import)


TOLERANCES = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-5), torch.bfloat16: (3e-2, 3e-2),
              torch.float16: (3e-3, 3e-3)}
DTYPES = list(TOLERANCES)
SHAPES = [(4, 3, 5, 6), (2, 8, 1, 1), (1, 5, 7, 3)]
MOMENTUM, EPS = 0.1, 1e-5


def stat_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def make(shape, dtype, channels_last, device="cpu", offset=0.0):
    t = (torch.randn(shape, dtype=torch.float64, device=device) * 2 + offset).to(dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def per_channel(channels, dtype, device="cpu", positive=False):
    t = torch.rand(channels, dtype=torch.float64, device=device) + 0.5 if positive else \
        torch.randn(channels, dtype=torch.float64, device=device)
    return t.to(stat_dtype(dtype))


def assert_close(actual, expected, dtype):
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


def torch_block(x, weight, bias, residual, relu, training, running_mean, running_var):
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training=training, momentum=MOMENTUM, eps=EPS)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("epilogue", ["plain", "relu", "residual_relu"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_torch(shape, dtype, training, epilogue, channels_last):
    relu, with_residual = epilogue != "plain", epilogue == "residual_relu"
    channels = shape[1]
    x = make(shape, dtype, channels_last, offset=3.0)  # an offset mean: the statistics must not cancel
    residual = make(shape, dtype, channels_last) if with_residual else None
    weight, bias = per_channel(channels, dtype), per_channel(channels, dtype)
    running_mean, running_var = per_channel(channels, dtype), per_channel(channels, dtype, positive=True)
    torch_running_mean, torch_running_var = running_mean.clone(), running_var.clone()

    if training:
        mean, invstd = native.batch_norm_stats(x, running_mean, running_var, MOMENTUM, EPS, channels_last)
    else:
        mean, invstd = running_mean, (running_var + EPS).rsqrt()
    out = native.batch_norm_apply(x, mean, invstd, weight, bias, residual, relu, channels_last)

    # torch in float64 for the low-precision dtypes: our statistics accumulate in float or double.
    reference_dtype = torch.float64 if dtype in (torch.float16, torch.bfloat16) else dtype
    ref_x = x.detach().to(reference_dtype).requires_grad_()
    ref_residual = residual.to(reference_dtype).requires_grad_() if with_residual else None
    ref_weight = weight.to(reference_dtype).requires_grad_()
    ref_bias = bias.to(reference_dtype).requires_grad_()
    expected = torch_block(ref_x, ref_weight, ref_bias, ref_residual, relu, training,
                           torch_running_mean.to(reference_dtype, copy=True),
                           torch_running_var.to(reference_dtype, copy=True))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    assert_close(out, expected.detach(), dtype)
    if training:
        F.batch_norm(x.to(stat_dtype(dtype)), torch_running_mean, torch_running_var, training=True,
                     momentum=MOMENTUM, eps=EPS)
        assert_close(running_mean, torch_running_mean, torch.float32 if dtype != torch.float64 else dtype)
        assert_close(running_var, torch_running_var, torch.float32 if dtype != torch.float64 else dtype)

    grad_output = make(shape, dtype, channels_last)
    output_for_relu = out if relu else None
    sum_dy, sum_dy_xhat = native.batch_norm_backward_reduce(grad_output, output_for_relu, x, mean, invstd, relu,
                                                            channels_last)
    grad_input, grad_residual = native.batch_norm_backward_apply(
        grad_output, output_for_relu, x, mean, invstd, weight, sum_dy, sum_dy_xhat, training, relu, with_residual,
        channels_last)
    expected.backward(grad_output.to(reference_dtype))
    assert_close(grad_input, ref_x.grad, dtype)
    assert_close(sum_dy, ref_bias.grad, dtype)  # the bias gradient
    assert_close(sum_dy_xhat, ref_weight.grad, dtype)  # the weight gradient
    if with_residual:
        assert_close(grad_residual, ref_residual.grad, dtype)
    else:
        assert grad_residual.numel() == 0


def test_stats_without_running_statistics_and_empty_input():
    x = make((2, 3, 4, 4), torch.float32, False)
    mean, invstd = native.batch_norm_stats(x, None, None, MOMENTUM, EPS, False)
    torch.testing.assert_close(mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(invstd, (x.var(dim=(0, 2, 3), unbiased=False) + EPS).rsqrt())
    running_mean, running_var = torch.zeros(3), torch.ones(3)
    native.batch_norm_stats(torch.empty(0, 3, 4, 4), running_mean, running_var, MOMENTUM, EPS, False)
    assert running_mean.eq(0).all() and running_var.eq(1).all()  # an empty batch leaves them alone, as torch


def test_checks_before_the_kernel():
    x = make((2, 3, 4, 4), torch.float32, False)
    mean, invstd = native.batch_norm_stats(x, None, None, MOMENTUM, EPS, False)
    with pytest.raises(RuntimeError, match="must be 4-D"):
        native.batch_norm_stats(x[0], None, None, MOMENTUM, EPS, False)
    with pytest.raises(RuntimeError, match="contiguous in channels_last"):
        native.batch_norm_stats(x, None, None, MOMENTUM, EPS, True)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        native.batch_norm_stats(x.int(), None, None, MOMENTUM, EPS, False)
    with pytest.raises(RuntimeError, match="running_mean must be a contiguous 1-D torch.float32"):
        native.batch_norm_stats(x, torch.zeros(3, dtype=torch.float64), None, MOMENTUM, EPS, False)
    with pytest.raises(RuntimeError, match="weight must be a contiguous 1-D"):
        native.batch_norm_apply(x, mean, invstd, torch.ones(4), None, None, False, False)
    with pytest.raises(RuntimeError, match="residual must have the input's shape"):
        native.batch_norm_apply(x, mean, invstd, None, None, x.double(), False, False)
    with pytest.raises(RuntimeError, match="output is needed with the activation"):
        native.batch_norm_backward_reduce(x, None, x, mean, invstd, True, False)


def test_library_reports_bad_arguments():
    """The C side refuses what Python let through and says why, through dlk_cpu_last_error."""
    lib = _native.cpu_lib()
    x, stat = torch.randn(1, 2, 2, 2), torch.empty(2)
    common = (x.data_ptr(), stat.data_ptr(), stat.data_ptr(), None, None, 0.1, 1e-5)
    status = lib.dlk_batch_norm_stats_cpu(*common, 2, 1, -2, 4, 0)
    with pytest.raises(RuntimeError, match=r"batch_norm_stats \(cpu\).*sizes must be non-negative"):
        _native.check(status, lib, "batch_norm_stats")
    status = lib.dlk_batch_norm_backward_reduce_cpu(x.data_ptr(), None, x.data_ptr(), stat.data_ptr(),
                                                    stat.data_ptr(), stat.data_ptr(), stat.data_ptr(), 1, 0.0,
                                                    2, 1, 2, 4, 0)
    with pytest.raises(RuntimeError, match="output is needed with the activation"):
        _native.check(status, lib, "batch_norm_backward_reduce")
    # The backward reads the slope from the output's sign: a negative slope would flip it.
    out = torch.empty_like(x)
    status = lib.dlk_batch_norm_apply_cpu(x.data_ptr(), stat.data_ptr(), stat.data_ptr(), None, None, None,
                                          out.data_ptr(), 1, -0.1, 2, 1, 2, 4, 0)
    with pytest.raises(RuntimeError, match="negative_slope must be >= 0"):
        _native.check(status, lib, "batch_norm_apply")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu_reference(dtype, channels_last):
    if not _native.has_cuda_lib():
        pytest.skip("libdlk_cuda.so is not built (python csrc/build.py --cuda on)")
    shape = (8, 16, 33, 17)  # N*S large enough for the split reductions and their workspace
    x = make(shape, dtype, channels_last, device="cuda", offset=2.0)
    residual = make(shape, dtype, channels_last, device="cuda")
    weight, bias = per_channel(16, dtype, "cuda"), per_channel(16, dtype, "cuda")
    running = [per_channel(16, dtype, "cuda"), per_channel(16, dtype, "cuda", positive=True)]
    cpu_running = [t.cpu() for t in running]
    mean, invstd = native.batch_norm_stats(x, *running, MOMENTUM, EPS, channels_last)
    cpu_mean, cpu_invstd = native.batch_norm_stats(x.cpu(), *cpu_running, MOMENTUM, EPS, channels_last)
    for a, b in zip([mean, invstd, *running], [cpu_mean, cpu_invstd, *cpu_running]):
        assert_close(a.cpu(), b, torch.float32 if dtype != torch.float64 else dtype)
    out = native.batch_norm_apply(x, mean, invstd, weight, bias, residual, True, channels_last)
    cpu_out = native.batch_norm_apply(x.cpu(), cpu_mean, cpu_invstd, weight.cpu(), bias.cpu(), residual.cpu(), True,
                                      channels_last)
    assert_close(out.cpu(), cpu_out, dtype)
    grad_output = make(shape, dtype, channels_last, device="cuda")
    sums = native.batch_norm_backward_reduce(grad_output, out, x, mean, invstd, True, channels_last)
    cpu_sums = native.batch_norm_backward_reduce(grad_output.cpu(), out.cpu(), x.cpu(), mean.cpu(), invstd.cpu(), True,
                                                 channels_last)
    for a, b in zip(sums, cpu_sums):
        assert_close(a.cpu(), b, dtype)
    grads = native.batch_norm_backward_apply(grad_output, out, x, mean, invstd, weight, *sums, True, True, True,
                                             channels_last)
    cpu_grads = native.batch_norm_backward_apply(grad_output.cpu(), out.cpu(), x.cpu(), mean.cpu(), invstd.cpu(),
                                                 weight.cpu(), *[s.cpu() for s in sums], True, True, True,
                                                 channels_last)
    for a, b in zip(grads, cpu_grads):
        assert_close(a.cpu(), b, dtype)
