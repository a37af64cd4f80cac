"""dlkernels._native.attention: flash attention over the C ABI (libdlk_cpu.so / libdlk_cuda.so).

Both entry points are compared, within tolerances, with attention written in float64 torch ops
(softmax, logsumexp and autograd).
"""
import math

import pytest
import torch

from dlkernels import _native

if not _native.has_cpu_lib():
    pytest.skip("libdlk_cpu.so is not built (python csrc/build.py)", allow_module_level=True)

from dlkernels._native import attention as native  # noqa: E402  (declares its symbols on import)


TOLERANCES = {torch.float64: (1e-9, 1e-9), torch.float32: (2e-4, 2e-4), torch.bfloat16: (3e-2, 3e-2),
              torch.float16: (5e-3, 5e-3)}


def close(actual, expected):
    rtol, atol = TOLERANCES[actual.dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


def reference(q, k, v, bias, scale, causal, bottom_right):
    """(out, lse) of dense (B, H, N, D) float64 tensors; k and v may have fewer heads (GQA)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + bias
    if causal:
        n_q, n_k = q.shape[2], k.shape[2]
        shift = n_k - n_q if bottom_right else 0
        visible = torch.arange(n_k)[None, :] <= torch.arange(n_q)[:, None] + shift
        scores = scores.masked_fill(~visible.to(q.device), -math.inf)
    return torch.softmax(scores, dim=-1) @ v, torch.logsumexp(scores, dim=-1)


def randn(shape, dtype, device="cpu"):
    return torch.randn(shape, dtype=torch.float64).to(device=device, dtype=dtype)


# (B, Hq, Hk, Nq, Nk, D)
SHAPES = [(2, 4, 2, 5, 7, 32), (1, 2, 2, 9, 9, 64), (2, 3, 1, 4, 6, 96)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mask", ["none", "causal", "causal_top_left", "bias"])
def test_forward_and_backward(shape, dtype, mask):
    b, hq, hk, nq, nk, d = shape
    q = randn((b, nq, hq, d), dtype).transpose(1, 2)  # strided: the kernels read any row / head strides
    k, v = randn((b, hk, nk, d), dtype), randn((b, hk, nk, d), dtype)
    bias = randn((1, hq, nq, nk), dtype).expand(b, hq, nq, nk) if mask == "bias" else None
    scale = 1 / math.sqrt(d)
    causal, bottom_right = mask.startswith("causal"), mask == "causal"
    args = (bias, None, None, nq, nk, scale, causal, bottom_right, 0.0, None, False)
    out, lse = native.attention_forward(q, k, v, *args)
    assert out.stride() == q.stride() and lse.shape == (b, hq, nq) and lse.dtype == native._stat_dtype(q)

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    expected_out, expected_lse = reference(q64, k64, v64, None if bias is None else bias.double(), scale, causal,
                                           bottom_right)
    close(out, expected_out)
    torch.testing.assert_close(lse.double(), expected_lse, rtol=1e-4, atol=1e-4)

    grad_out = randn(out.shape, dtype)
    grads = native.attention_backward(grad_out, q, k, v, out, lse, *args)
    expected = torch.autograd.grad(expected_out, (q64, k64, v64), grad_out.double())
    for actual, wanted in zip(grads, expected):
        close(actual, wanted)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_matches_each_sequence(causal):
    lengths_q, lengths_k, hq, hk, d = [3, 5, 1], [4, 5, 2], 4, 2, 32
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0).tolist()], dtype=torch.int32)
    q = randn((sum(lengths_q), hq, d), torch.float64)
    k, v = randn((sum(lengths_k), hk, d), torch.float64), randn((sum(lengths_k), hk, d), torch.float64)
    args = (None, cu_q, cu_k, max(lengths_q), max(lengths_k), 0.3, causal, True, 0.0, None, False)
    out, lse = native.attention_forward(q, k, v, *args)
    assert lse.shape == (hq, q.shape[0])
    grad_out = randn(out.shape, torch.float64)
    grad_q, grad_k, grad_v = native.attention_backward(grad_out, q, k, v, out, lse, *args)
    for i in range(len(lengths_q)):
        rows_q, rows_k = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        dense = [t[rows].transpose(0, 1)[None].requires_grad_() for t, rows in ((q, rows_q), (k, rows_k),
                                                                                 (v, rows_k))]
        expected_out, expected_lse = reference(*dense, None, 0.3, causal, True)
        close(out[rows_q], expected_out[0].transpose(0, 1))
        close(lse[:, rows_q], expected_lse[0])
        expected = torch.autograd.grad(expected_out, dense, grad_out[rows_q].transpose(0, 1)[None])
        for actual, wanted, rows in zip((grad_q, grad_k, grad_v), expected, (rows_q, rows_k, rows_k)):
            close(actual[rows], wanted[0].transpose(0, 1))


def test_dropout_drops_the_same_elements_forward_and_backward():
    q, k, v = (randn((1, 2, 16, 32), torch.float64) for _ in range(3))
    seed = torch.tensor([1234])  # read through its address, as the kernels read the op's device tensor
    args = (None, None, None, 16, 16, 0.2, False, True, 0.5, seed, False)
    out, lse = native.attention_forward(q, k, v, *args)
    plain, _ = native.attention_forward(q, k, v, *args[:8], 0.0, None, False)
    assert not torch.allclose(out, plain)
    # The seed decides: the same seed gives the same output, another seed another one.
    assert torch.equal(out, native.attention_forward(q, k, v, *args)[0])
    assert not torch.equal(out, native.attention_forward(q, k, v, *args[:9], torch.tensor([99]), False)[0])
    seed.fill_(99)  # the value at call time counts, not the one when the arguments were built
    assert not torch.equal(out, native.attention_forward(q, k, v, *args)[0])
    seed.fill_(1234)
    # out is linear in v, so the backward's grad_v must reproduce it: <grad_out, out> = <grad_v, v>.
    grad_out = randn(out.shape, torch.float64)
    _, _, grad_v = native.attention_backward(grad_out, q, k, v, out, lse, *args)
    torch.testing.assert_close((grad_out * out).sum(), (grad_v * v).sum())


def test_checks_before_the_kernel():
    q = randn((1, 2, 4, 32), torch.float32)
    dense = (None, None, None, 4, 4, 1.0, False, True, 0.0, None, False)
    with pytest.raises(RuntimeError, match="unsupported head dim 16"):
        native.attention_forward(q[..., :16], q[..., :16], q[..., :16], *dense)
    with pytest.raises(RuntimeError, match="multiple of the key/value heads"):
        native.attention_forward(randn((1, 3, 4, 32), torch.float32), q, q, *dense)
    with pytest.raises(RuntimeError, match="max_seqlen_q = q.size"):
        native.attention_forward(q, q, q, None, None, None, 5, 4, 1.0, False, True, 0.0, None, False)
    with pytest.raises(RuntimeError, match="unsupported dtype"):
        native.attention_forward(q.int(), q.int(), q.int(), *dense)


def test_cpu_library_checks_cu_seqlens_values():
    """A cu_seqlens that would index out of bounds is refused by the library, not read."""
    q = randn((6, 2, 32), torch.float32)
    good = torch.tensor([0, 6], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="max_seqlen_q / max_seqlen_k must bound every length"):
        native.attention_forward(q, q, q, None, good, good, 4, 6, 1.0, False, True, 0.0, None, False)
    with pytest.raises(RuntimeError, match="end at the number of tokens"):
        native.attention_forward(q, q, q, None, torch.tensor([0, 5], dtype=torch.int32), good, 6, 6, 1.0, False,
                                 True, 0.0, None, False)


def test_wgmma_available_is_false_without_a_hopper_gpu():
    if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0):
        pytest.skip("a 9.0 device may run the wgmma kernel")
    assert native.attention_wgmma_available() is False


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_matches_reference(dtype, causal):
    q, k, v = (randn((2, 4, 70, 64), dtype, "cuda") for _ in range(3))
    args = (None, None, None, 70, 70, 0.125, causal, True, 0.0, None, False)
    out, lse = native.attention_forward(q, k, v, *args)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    expected_out, expected_lse = reference(q64, k64, v64, None, 0.125, causal, True)
    torch.testing.assert_close(out, expected_out.to(dtype), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(lse.double(), expected_lse, rtol=1e-3, atol=1e-3)
    grad_out = randn(out.shape, dtype, "cuda")
    grads = native.attention_backward(grad_out, q, k, v, out, lse, *args)
    expected = torch.autograd.grad(expected_out, (q64, k64, v64), grad_out.double())
    for actual, wanted in zip(grads, expected):
        torch.testing.assert_close(actual, wanted.to(dtype), rtol=5e-2, atol=5e-2)
