"""dlkernels.attention / scaled_dot_product_attention / nn.MultiheadAttention against PyTorch: values and gradients.

Accuracy bar (FlashAttention's test rule, the issue's bar): against an fp64 evaluation of the same
inputs, our max error is at most 2x the max error of the same math evaluated by PyTorch in the
input dtype, plus a few rounding units of the largest reference value (so that a reference that
happens to be exact cannot fail a correct kernel). Gradients are held to the same rule against fp64
autograd. Dropout is checked exactly: the reference rebuilds the kernels' keep mask with a NumPy port
of the Philox rule in csrc/include/dlk/attention.h.
"""
import functools
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dlkernels
from helpers import CPU_BACKENDS, GPU_BACKENDS, HAS_CUDA
from opinfo_samples import check_against_torch, opinfo

attention_ops = importlib.import_module("dlkernels.ops.attention")

UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}
KERNEL_DTYPES = [torch.float16, torch.bfloat16, torch.float32]
ALL_DTYPES = [*KERNEL_DTYPES, torch.float64]


def dtype_params(backends_with_float64=("reference",)):
    """(backend, dtype) pairs: float64 only where the backend supports it."""
    pairs = []
    for backend in CPU_BACKENDS:
        name = backend if isinstance(backend, str) else backend.values[0]
        marks = () if isinstance(backend, str) else backend.marks
        for dtype in ALL_DTYPES:
            if dtype == torch.float64 and name not in backends_with_float64:
                continue
            pairs.append(pytest.param(name, dtype, marks=marks, id=f"{name}-{str(dtype)[6:]}"))
    return pairs


# ----------------------------------------------------------------------------- reference
def philox_first_word(seed: int, counters: np.ndarray) -> np.ndarray:
    """Philox-4x32-10's first output word per 64-bit counter: the rule of dlk/attention.h (= tl.randint)."""
    mask32 = np.uint64(0xFFFFFFFF)
    c0 = counters.astype(np.uint64) & mask32
    c1 = counters.astype(np.uint64) >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    round_a, round_b = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        old_c0, old_c2 = c0, c2
        c0 = ((round_b * old_c2) >> np.uint64(32)) ^ c1 ^ k0
        c2 = ((round_a * old_c0) >> np.uint64(32)) ^ c3 ^ k1
        c1 = (round_b * old_c2) & mask32
        c3 = (round_a * old_c0) & mask32
        k0 = (k0 + np.uint64(0x9E3779B9)) & mask32
        k1 = (k1 + np.uint64(0xBB67AE85)) & mask32
    return c0


def drawn_seed(device="cpu") -> int:
    """The Philox seed the op draws first after a torch.manual_seed: one torch.randint on q's device."""
    return int(torch.randint(0, 2**62, (1,), device=device).item())


def keep_mask(seed: int, dropout_p: float, batch: int, heads: int, seqlen_q: int, seqlen_k: int, *,
              first_tokens=None, total_q=None, max_seqlen_k=None) -> torch.Tensor:
    """(batch, heads, seqlen_q, seqlen_k) bool: the elements the kernels keep. Packed batches number query tokens
    globally: pass each sequence's first query token, the total number of query tokens and max_seqlen_k."""
    first_tokens = np.arange(batch) * seqlen_q if first_tokens is None else np.asarray(first_tokens)
    total_q = batch * seqlen_q if total_q is None else total_q
    max_seqlen_k = seqlen_k if max_seqlen_k is None else max_seqlen_k
    h = np.arange(heads, dtype=np.uint64)[None, :, None, None]
    token = (first_tokens.astype(np.uint64)[:, None, None, None]
             + np.arange(seqlen_q, dtype=np.uint64)[None, None, :, None])
    j = np.arange(seqlen_k, dtype=np.uint64)[None, None, None, :]
    counters = (h * np.uint64(total_q) + token) * np.uint64(max_seqlen_k) + j
    threshold = min(math.floor(dropout_p * 2.0**32), 2**32 - 1)
    return torch.from_numpy(philox_first_word(seed, counters) >= np.uint64(threshold))


def math_attention(q, k, v, *, causal=False, bottom_right=True, scale=None, bias=None, keep=None, dropout_p=0.0,
                   kernel_dtype=None):
    """softmax(scale q k^T + bias, masked) v in q's dtype (upcast only where torch itself does), on (B, H, N, D).
    Rows without a visible key give 0, as the kernels do. The scale is rounded as the kernels round it for
    inputs of kernel_dtype (default q's dtype)."""
    heads_q, heads_kv = q.shape[1], k.shape[1]
    if heads_q != heads_kv:
        k = k.repeat_interleave(heads_q // heads_kv, dim=1)
        v = v.repeat_interleave(heads_q // heads_kv, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if (kernel_dtype or q.dtype) != torch.float64:  # kernels take it as float32 (dlk/attention.h); fp64 exact
        scale = float(np.float32(scale))
    scores = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    n_q, n_k = q.shape[2], k.shape[2]
    if causal:
        shift = n_k - n_q if bottom_right else 0
        visible = torch.arange(n_k)[None, :] <= torch.arange(n_q)[:, None] + shift
        scores = scores.masked_fill(~visible, -math.inf)
    dead = (scores == -math.inf).all(dim=-1, keepdim=True)  # rows that see no key: 0, with zero gradients
    probs = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    if keep is not None:
        probs = probs * keep.to(probs.dtype) / (1.0 - dropout_p)
    return probs @ v


def make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype, requires_grad=False):
    q = torch.randn(batch, heads_q, seqlen_q, head_dim).to(dtype)
    k = torch.randn(batch, heads_kv, seqlen_k, head_dim).to(dtype)
    v = torch.randn(batch, heads_kv, seqlen_k, head_dim).to(dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def max_error(actual, reference):
    return (actual.double() - reference.double()).abs().max().item()


def assert_accurate(ours, torch_same_dtype, reference, factor=2.0, what="output"):
    ours_error, torch_error = max_error(ours, reference), max_error(torch_same_dtype, reference)
    # fp32: the online softmax rescales each row once per key block, and torch's blocked GEMM sums in another order:
    # both errors sit at a few units, so the floor allows 8 (measured: up to 3x torch's 2e-7 in a grad of ~1).
    units = {torch.float64: 64, torch.float32: 8}.get(ours.dtype, 2)
    floor = units * UNIT_ROUNDOFF[ours.dtype] * max(reference.double().abs().max().item(), 1.0)
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    assert ours_error <= factor * torch_error + floor, (
        f"{what}: max error {ours_error:.3e} > {factor} x torch's {torch_error:.3e} + {floor:.3e}")


def check_against_math(run, q, k, v, grad_seed=1, **math_args):
    """run(q, k, v) -> out, compared with math_attention in q's dtype and in fp64, values and gradients."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    low = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    exact = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    out = run(*leaves)
    torch_low = math_attention(*low, **math_args)
    reference = math_attention(*exact, **{**math_args, "bias": None if math_args.get("bias") is None
                                          else math_args["bias"].double()}, kernel_dtype=q.dtype)
    assert out.dtype == q.dtype
    assert_accurate(out, torch_low, reference)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(q.dtype)
    out.backward(grad)
    torch_low.backward(grad)
    reference.backward(grad.double())
    for name, ours, lowp, ref in zip("qkv", leaves, low, exact):
        assert_accurate(ours.grad, lowp.grad, ref.grad, what=f"grad_{name}")


# ----------------------------------------------------------------------------- values and gradients
CASES = {  # (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim)
    "square": (2, 2, 2, 17, 17, 32),
    "longer-keys": (1, 2, 2, 9, 40, 32),
    "longer-queries": (1, 2, 2, 40, 9, 32),
    "gqa": (2, 4, 2, 16, 23, 32),
    "mqa-dim64": (1, 3, 1, 12, 12, 64),
    "dim96": (1, 1, 1, 7, 33, 96),
}


@pytest.mark.parametrize("backend,dtype", dtype_params())
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_math(backend, dtype, case, causal):
    batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim = CASES[case]
    q, k, v = make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype)
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, causal=causal, backend=backend), q, k, v,
                       causal=causal)


def test_float64_uses_the_exact_scale():
    """1/sqrt(96) and 0.3 are not floats: a float64 call (the C++ reference) must not round them; the kernels'
    float32 scale would leave a 1e-8 relative error, far above float64's."""
    backend = "reference"
    q, k, v = make_qkv(1, 2, 2, 16, 16, 96, torch.float64)
    for scale in (None, 0.3):
        out = dlkernels.attention(q, k, v, scale=scale, backend=backend)
        exact = 1.0 / math.sqrt(96) if scale is None else scale
        expected = torch.softmax(exact * q @ k.transpose(-1, -2), dim=-1) @ v
        torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_scale_strides_and_lse(backend):
    """Custom scale; q/k/v as (B, N, H, D) views transposed to (B, H, N, D) (what attention layers produce); lse."""
    x = torch.randn(2, 19, 3, 3, 64)  # (B, N, {q,k,v}, H, D)
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    assert q.stride(-1) == 1 and not q.is_contiguous()
    out, lse = dlkernels.attention(q, k, v, scale=0.3, return_lse=True, backend=backend)
    torch.testing.assert_close(out, math_attention(q.double(), k.double(), v.double(), scale=0.3).float(),
                               rtol=1e-5, atol=1e-5)
    expected_lse = torch.logsumexp(0.3 * q.double() @ k.double().transpose(-1, -2), dim=-1)
    assert lse.shape == (2, 3, 19) and lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), expected_lse, rtol=1e-5, atol=1e-5)
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, scale=0.3, backend=backend), q, k, v, scale=0.3)


@pytest.mark.parametrize("backend,dtype", dtype_params())
def test_masks(backend, dtype):
    """Boolean (True = attend) and additive masks broadcast over batch / heads, incl. rows that see no key."""
    q, k, v = make_qkv(2, 2, 2, 11, 13, 32, dtype)
    allowed = torch.rand(2, 1, 11, 13) > 0.3
    allowed[0, 0, 3] = False  # a query that may see nothing: output 0, gradients 0
    bias = torch.where(allowed, 0.0, -math.inf).to(dtype)
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, attn_mask=allowed, backend=backend), q, k, v,
                       bias=bias)
    out = dlkernels.attention(q, k, v, attn_mask=allowed, backend=backend)
    assert out[0, :, 3].abs().max() == 0
    additive = torch.randn(11, 13).to(dtype)  # broadcast over batch and heads
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, attn_mask=additive, causal=True,
                                                           backend=backend), q, k, v, bias=additive, causal=True)


@pytest.mark.parametrize("backend,dtype", dtype_params())
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_matches_each_sequence(backend, dtype, causal):
    """Packed (total, heads, head_dim) batches with cu_seqlens equal attention over each sequence alone."""
    lengths_q, lengths_k = [5, 1, 17], [9, 3, 17]
    heads_q, heads_kv, head_dim = 4, 2, 32
    q = torch.randn(sum(lengths_q), heads_q, head_dim).to(dtype).requires_grad_(True)
    k = torch.randn(sum(lengths_k), heads_kv, head_dim).to(dtype).requires_grad_(True)
    v = torch.randn(sum(lengths_k), heads_kv, head_dim).to(dtype).requires_grad_(True)
    cu_q = torch.tensor([0, *np.cumsum(lengths_q)], dtype=torch.int32)
    cu_k = torch.tensor([0, *np.cumsum(lengths_k)], dtype=torch.int32)
    out = dlkernels.attention(q, k, v, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, backend=backend)
    grad = torch.randn(out.shape).to(dtype)
    out.backward(grad)
    pieces = []
    for b in range(3):
        sq, sk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        qb, kb, vb = (t.detach()[s].transpose(0, 1)[None] for t, s in ((q, sq), (k, sk), (v, sk)))
        pieces.append((qb, kb, vb, sq, sk))
    for qb, kb, vb, sq, sk in pieces:
        low = [t.clone().requires_grad_(True) for t in (qb, kb, vb)]
        exact = [t.double().requires_grad_(True) for t in (qb, kb, vb)]
        torch_low, reference = math_attention(*low, causal=causal), math_attention(*exact, causal=causal)
        assert_accurate(out[sq].transpose(0, 1)[None], torch_low, reference)
        g = grad[sq].transpose(0, 1)[None]
        torch_low.backward(g)
        reference.backward(g.double())
        assert_accurate(q.grad[sq].transpose(0, 1)[None], low[0].grad, exact[0].grad, what="grad_q")
        # k / v of a sequence get gradient only from that sequence's queries
        assert_accurate(k.grad[sk].transpose(0, 1)[None], low[1].grad, exact[1].grad, what="grad_k")
        assert_accurate(v.grad[sk].transpose(0, 1)[None], low[2].grad, exact[2].grad, what="grad_v")


@pytest.mark.parametrize("backend,dtype", dtype_params())
def test_dropout_drops_the_philox_elements(backend, dtype):
    """Dropout keeps exactly the elements the Philox rule keeps (so every backend drops the same ones and the
    backward recomputes them), reproducibly under torch.manual_seed."""
    p = 0.25
    q, k, v = make_qkv(2, 2, 1, 13, 21, 32, dtype)
    torch.manual_seed(7)
    seed = drawn_seed()
    keep = keep_mask(seed, p, 2, 2, 13, 21)
    torch.manual_seed(7)
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, dropout_p=p, causal=True, backend=backend),
                       q, k, v, keep=keep, dropout_p=p, causal=True)
    torch.manual_seed(3)
    first = dlkernels.attention(q, k, v, dropout_p=p, backend=backend)
    torch.manual_seed(3)
    assert torch.equal(first, dlkernels.attention(q, k, v, dropout_p=p, backend=backend))


def test_dropout_keep_rate():
    keep = keep_mask(12345, 0.1, 4, 4, 64, 64)
    assert abs(keep.float().mean().item() - 0.9) < 0.01
    assert keep_mask(1, 0.0, 1, 1, 8, 8).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_varlen_dropout_counter(backend):
    """Packed batches number dropout elements by global query token (dlk/attention.h's dropout_counter)."""
    p, lengths = 0.3, [6, 10]
    q = torch.randn(16, 2, 32, dtype=torch.float64 if backend == "reference" else torch.float32)
    k, v = torch.randn(2, 16, 2, 32, dtype=q.dtype)
    cu = torch.tensor([0, 6, 16], dtype=torch.int32)
    torch.manual_seed(5)
    seed = drawn_seed()
    torch.manual_seed(5)
    out = dlkernels.attention(q, k, v, dropout_p=p, cu_seqlens_q=cu, cu_seqlens_k=cu, backend=backend)
    for b, start in enumerate((0, 6)):
        n = lengths[b]
        keep = keep_mask(seed, p, 1, 2, n, n, first_tokens=[start], total_q=16, max_seqlen_k=max(lengths))
        s = slice(start, start + n)
        qb, kb, vb = (t[s].transpose(0, 1)[None].double() for t in (q, k, v))
        expected = math_attention(qb, kb, vb, keep=keep, dropout_p=p)
        torch.testing.assert_close(out[s].transpose(0, 1)[None].double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(HAS_CUDA, reason="interpreter check; on a GPU the cuda-marked tests run the chosen path")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_triton_tensor_descriptor_loads_match_pointer_loads(monkeypatch, causal):
    """The Triton forward reads Q/K/V through TMA tensor descriptors on Hopper (triton_kernels/attention.py
    _use_tma); forced on in the interpreter it must give bitwise the pointer path's results."""
    triton_attention = pytest.importorskip("dlkernels.triton_kernels.attention")
    q, k, v = make_qkv(2, 4, 2, 45, 71, 64, torch.float16)
    bias = torch.randn(45, 71).to(torch.float16)
    monkeypatch.setattr(triton_attention, "FORCE_TMA", False)
    expected = dlkernels.attention(q, k, v, causal=causal, attn_mask=bias, return_lse=True, backend="triton")
    monkeypatch.setattr(triton_attention, "FORCE_TMA", True)
    choices = []
    choose = triton_attention._use_tma
    monkeypatch.setattr(triton_attention, "_use_tma", lambda *args: choices.append(choose(*args)) or choices[-1])
    out = dlkernels.attention(q, k, v, causal=causal, attn_mask=bias, return_lse=True, backend="triton")
    assert choices == [True]
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


# ----------------------------------------------------------------------------- SDPA and MultiheadAttention
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sdpa_drop_in(backend):
    """Same signature and semantics as F.scaled_dot_product_attention: is_causal top-left, bool masks, 3-D and
    5-D inputs, enable_gqa."""
    q, k, v = (torch.randn(2, 2, n, 32) for n in (7, 12, 12))
    for kwargs in ({}, {"is_causal": True}, {"scale": 0.2}, {"attn_mask": torch.rand(7, 12) > 0.2},
                   {"attn_mask": torch.randn(2, 1, 7, 12)}):
        expected = F.scaled_dot_product_attention(q, k, v, **kwargs)
        torch.testing.assert_close(dlkernels.scaled_dot_product_attention(q, k, v, **kwargs, backend=backend),
                                   expected, rtol=1e-5, atol=1e-5)
    q3, k3, v3 = (t[:, 0] for t in (q, k, v))
    torch.testing.assert_close(dlkernels.scaled_dot_product_attention(q3, k3, v3, is_causal=True, backend=backend),
                               F.scaled_dot_product_attention(q3, k3, v3, is_causal=True), rtol=1e-5, atol=1e-5)
    q5, k5, v5 = (t[None].expand(3, *t.shape) for t in (q, k, v))
    torch.testing.assert_close(dlkernels.scaled_dot_product_attention(q5, k5, v5, backend=backend),
                               F.scaled_dot_product_attention(q5, k5, v5), rtol=1e-5, atol=1e-5)
    kg, vg = k[:, :1], v[:, :1]
    torch.testing.assert_close(dlkernels.scaled_dot_product_attention(q, kg, vg, enable_gqa=True, backend=backend),
                               F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shapes", [((2, 4, 8, 32), (1, 4, 8, 32)), ((2, 3, 2, 5, 32), (2, 1, 2, 5, 32)),
                                    ((2, 8, 32), (1, 8, 32))], ids=str)
def test_sdpa_broadcasts_batch_dimensions(backend, shapes):
    """As SDPA: key/value batch dimensions of size 1 broadcast against the query's (and gradients sum back)."""
    q_shape, kv_shape = shapes
    q = torch.randn(q_shape, requires_grad=True)
    k, v = (torch.randn(kv_shape, requires_grad=True) for _ in range(2))
    out = dlkernels.scaled_dot_product_attention(q, k, v, backend=backend)
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for ours, theirs in zip(grads, torch.autograd.grad(expected.sum(), (q, k, v))):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_is_a_drop_in(backend, batch_first):
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(64, 2, batch_first=batch_first)
    ours = dlkernels.nn.MultiheadAttention(64, 2, batch_first=batch_first, backend=backend)
    ours.load_state_dict(reference.state_dict())
    assert ours.state_dict().keys() == reference.state_dict().keys()
    shape = (3, 10, 64) if batch_first else (10, 3, 64)
    x = torch.randn(shape, requires_grad=True)
    memory = torch.randn((3, 6, 64) if batch_first else (6, 3, 64))
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(10)
    calls = [((x, x, x), {"need_weights": False}),
             ((x, x, x), {"need_weights": False, "attn_mask": causal, "is_causal": True}),
             ((x, memory, memory), {"need_weights": False, "key_padding_mask": padding}),
             ((x, memory, memory), {"need_weights": False, "attn_mask": torch.rand(10, 6) > 0.8}),
             ((x, x, x), {"need_weights": True})]
    for args, kwargs in calls:
        expected, expected_weights = reference(*args, **kwargs)
        out, weights = ours(*args, **kwargs)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert (weights is None) == (expected_weights is None)
    out, _ = ours(x, x, x, need_weights=False)
    grad_ours = torch.autograd.grad(out.sum(), [x, *ours.parameters()])
    expected, _ = reference(x, x, x, need_weights=False)
    grad_ref = torch.autograd.grad(expected.sum(), [x, *reference.parameters()])
    for a, b in zip(grad_ours, grad_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_multihead_attention_with_kdim_vdim_and_unbatched_input(backend):
    reference = torch.nn.MultiheadAttention(64, 2, kdim=32, vdim=48)
    ours = dlkernels.convert(reference)
    ours.backend = backend
    assert isinstance(ours, dlkernels.nn.MultiheadAttention)
    reference = torch.nn.MultiheadAttention(64, 2, kdim=32, vdim=48)
    reference.load_state_dict(ours.state_dict())
    query, key, value = torch.randn(5, 64), torch.randn(7, 32), torch.randn(7, 48)
    torch.testing.assert_close(ours(query, key, value, need_weights=False)[0],
                               reference(query, key, value, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def test_multihead_attention_with_a_head_dim_the_kernels_lack_runs_torch():
    # TransformerEncoderLayer(d_model 64, nhead 4): head dim 16. convert() leaves torch's module in place, and
    # our module constructed directly falls back to torch's implementation instead of raising.
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=32, dropout=0.0, batch_first=True)
    x = torch.randn(2, 5, 64)
    expected = layer(x)
    converted = dlkernels.convert(layer)
    assert type(converted.self_attn) is torch.nn.MultiheadAttention
    torch.testing.assert_close(converted(x), expected)
    reference = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    ours = dlkernels.nn.MultiheadAttention(64, 4, batch_first=True, backend="reference")
    ours.load_state_dict(reference.state_dict())
    torch.testing.assert_close(ours(x, x, x, need_weights=False)[0], reference(x, x, x, need_weights=False)[0])


# ----------------------------------------------------------------------------- torch.library and compile
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend):
    q, k, v = make_qkv(1, 2, 1, 5, 6, 32, torch.float32, requires_grad=True)
    args = (q, k, v, None, None, None, 5, 6, 0.2, True, True, 0.0, None, False, backend)
    torch.library.opcheck(torch.ops.dlk.attention.default, args)
    out, lse = attention_ops._attention(*args)
    torch.library.opcheck(torch.ops.dlk.attention_backward.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, None, None,
                           None, 5, 6, 0.2, True, True, 0.0, None, False, backend))


def test_torch_compile_matches_eager():
    layer = dlkernels.nn.MultiheadAttention(64, 2, batch_first=True, backend="reference")
    x = torch.randn(2, 9, 64)

    def model(x):
        out, _ = layer(x, x, x, need_weights=False)
        return dlkernels.attention(out.unflatten(-1, (2, 32)).transpose(1, 2), *(
            t.unflatten(-1, (2, 32)).transpose(1, 2) for t in (x, x)), causal=True, backend="reference")

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    xc = x.clone().requires_grad_(True)
    xe = x.clone().requires_grad_(True)
    out, expected = compiled(xc), model(xe)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)


def test_dropout_under_torch_compile_traces_the_seed_draw():
    """The seed is a tensor from torch.randint inside the op's Python, so torch.compile traces the draw into the
    graph (no graph break, no host read): the same torch seed gives eager's mask, and the backward recomputes the
    forward's mask from the saved seed tensor (out is linear in v: <grad_out, out> = <grad_v, v>)."""
    q, k, v = (torch.randn(1, 2, 16, 32, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def model(q, k, v):
        return dlkernels.attention(q, k, v, dropout_p=0.3, causal=True, backend="reference")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.manual_seed(3)
    out = compiled(q, k, v)
    torch.manual_seed(3)
    torch.testing.assert_close(out, model(q, k, v), rtol=0, atol=0)
    grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    torch.testing.assert_close((out * grad_out).sum(), (v.grad * v).sum(), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- bad inputs
def _qkv(shape_q=(1, 2, 4, 32), shape_k=(1, 2, 4, 32), dtype=torch.float32):
    return torch.randn(shape_q, dtype=dtype), torch.randn(shape_k, dtype=dtype), torch.randn(shape_k, dtype=dtype)


# Bad inputs pin the reference backend: they test OUR validation (auto on CPU runs torch, errors included).
attention_reference = functools.partial(dlkernels.attention, backend="reference")
sdpa_reference = functools.partial(dlkernels.scaled_dot_product_attention, backend="reference")

BAD_CALLS = {
    "head-dim-mismatch": (lambda: attention_reference(torch.randn(1, 2, 4, 32), torch.randn(1, 2, 4, 64),
                                                      torch.randn(1, 2, 4, 64)), ValueError, "share the head dim"),
    "unsupported-head-dim": (lambda: attention_reference(*_qkv((1, 2, 4, 48), (1, 2, 4, 48))), ValueError,
                             "head_dim 48 is not supported"),
    "heads-not-divisible": (lambda: attention_reference(*_qkv((1, 3, 4, 32), (1, 2, 4, 32))), ValueError,
                            "multiple of the number of key/value heads"),
    "batch-mismatch": (lambda: attention_reference(*_qkv((2, 2, 4, 32), (1, 2, 4, 32))), ValueError, "batch size"),
    "wrong-rank": (lambda: attention_reference(*_qkv((2, 4, 32), (2, 4, 32))), ValueError, "must be 4-D"),
    "dtype-mismatch": (lambda: attention_reference(torch.randn(1, 2, 4, 32), *_qkv(dtype=torch.float16)[1:]),
                       TypeError, "does not match q's"),
    "int-dtype": (lambda: attention_reference(*(torch.ones(1, 2, 4, 32, dtype=torch.int32),) * 3), TypeError,
                  "unsupported dtype"),
    "empty": (lambda: attention_reference(*_qkv((1, 2, 0, 32), (1, 2, 4, 32))), ValueError, "must not be empty"),
    "mask-shape": (lambda: attention_reference(*_qkv(), attn_mask=torch.ones(3, 4, dtype=torch.bool)), ValueError,
                   "does not broadcast"),
    "mask-dtype": (lambda: attention_reference(*_qkv(), attn_mask=torch.ones(4, 4, dtype=torch.int64)), TypeError,
                   "bool or floating point"),
    "dropout-range": (lambda: attention_reference(*_qkv(), dropout_p=1.0), ValueError, "dropout_p must be in"),
    "cu-seqlens-start": (lambda: attention_reference(*_qkv((8, 2, 32), (8, 2, 32)),
                                                     cu_seqlens_q=torch.tensor([1, 8], dtype=torch.int32),
                                                     cu_seqlens_k=torch.tensor([0, 8], dtype=torch.int32)),
                         ValueError, "must start at 0"),
    "cu-seqlens-decreasing": (lambda: attention_reference(*_qkv((8, 2, 32), (8, 2, 32)),
                                                          cu_seqlens_q=torch.tensor([0, 5, 3, 8], dtype=torch.int32),
                                                          cu_seqlens_k=torch.tensor([0, 2, 4, 8], dtype=torch.int32)),
                              ValueError, "never decrease"),
    "cu-seqlens-dtype": (lambda: attention_reference(*_qkv((8, 2, 32), (8, 2, 32)), cu_seqlens_q=torch.tensor([0, 8]),
                                                     cu_seqlens_k=torch.tensor([0, 8])), ValueError, "int32"),
    "cu-seqlens-count": (lambda: attention_reference(*_qkv((8, 2, 32), (8, 2, 32)),
                                                     cu_seqlens_q=torch.tensor([0, 4, 8], dtype=torch.int32),
                                                     cu_seqlens_k=torch.tensor([0, 8], dtype=torch.int32)),
                         ValueError, "same length"),
    "cu-seqlens-one-side": (lambda: attention_reference(*_qkv((8, 2, 32), (8, 2, 32)),
                                                        cu_seqlens_q=torch.tensor([0, 8], dtype=torch.int32)),
                            ValueError, "give both"),
    "max-seqlen-too-small": (lambda: attention_reference(*_qkv((8, 2, 32), (8, 2, 32)), max_seqlen_q=4,
                                                         cu_seqlens_q=torch.tensor([0, 8], dtype=torch.int32),
                                                         cu_seqlens_k=torch.tensor([0, 8], dtype=torch.int32)),
                             ValueError, "smaller than the longest"),
    "sdpa-mask-and-causal": (lambda: sdpa_reference(
        *_qkv(), attn_mask=torch.ones(4, 4, dtype=torch.bool), is_causal=True), ValueError, "cannot both be set"),
    "sdpa-gqa-not-enabled": (lambda: sdpa_reference(*_qkv((1, 4, 4, 32), (1, 2, 4, 32))),
                             ValueError, "enable_gqa=True"),
    "sdpa-batch-not-broadcastable": (lambda: sdpa_reference(*_qkv((2, 4, 4, 32),
                                                                                          (3, 4, 4, 32))),
                                     ValueError, "do not broadcast"),
    "mask-requires-grad": (lambda: attention_reference(*_qkv(), attn_mask=torch.zeros(4, 4, requires_grad=True)),
                           NotImplementedError, "attn_mask are not supported"),
    "backend": (lambda: dlkernels.attention(*_qkv(), backend="cudnn"), ValueError, "backend must be one of"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_inputs_raise_clear_errors(case):
    call, error, message = BAD_CALLS[case]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.skipif(HAS_CUDA, reason="the interpreter runs only without a GPU")
def test_float64_is_for_the_cpu_reference_only():
    pytest.importorskip("triton")
    with pytest.raises(TypeError, match="float64 is supported by the reference backend only"):
        dlkernels.attention(*_qkv(dtype=torch.float64), backend="triton")


# ----------------------------------------------------------------------------- GPU: against SDPA
GPU_CASES = {  # (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim)
    "bert": (4, 12, 12, 512, 512, 64),
    "llama-gqa": (2, 32, 8, 1024, 1024, 128),
    "ragged": (3, 4, 4, 333, 517, 96),
    "decode-like": (8, 16, 16, 1, 700, 128),
    "dim256": (2, 4, 4, 300, 300, 256),
    "dim32": (2, 8, 8, 129, 257, 32),
}


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", list(GPU_CASES))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gpu_matches_math(backend, dtype, case, causal):
    batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim = GPU_CASES[case]
    q, k, v = (t.cuda() for t in make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype))
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, causal=causal, backend=backend), q, k, v,
                       causal=causal)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_gpu_matches_sdpa_backends(backend, dtype):
    """Against every SDPA backend available (flash, efficient, cuDNN): our error vs fp64 <= 2x theirs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (t.cuda() for t in make_qkv(2, 8, 8, 1000, 1000, 128, dtype))
    reference = math_attention(q.double(), k.double(), v.double(), causal=True)
    ours = dlkernels.attention(q, k, v, causal=True, backend=backend)
    for sdpa_backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(sdpa_backend):
                theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        except RuntimeError:  # this backend is not available for the device or shape
            continue
        assert_accurate(ours, theirs, reference, what=f"output vs {sdpa_backend.name}")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_varlen_masks_and_dropout(backend):
    dtype = torch.bfloat16
    lengths = [300, 1, 1000, 77]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device="cuda")
    q = torch.randn(sum(lengths), 8, 128, dtype=dtype, device="cuda")
    k, v = torch.randn(2, sum(lengths), 2, 128, dtype=dtype, device="cuda")
    out = dlkernels.attention(q, k, v, causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu, backend=backend)
    for b in range(len(lengths)):
        s = slice(cu[b], cu[b + 1])
        qb, kb, vb = (t[s].transpose(0, 1)[None] for t in (q, k, v))
        assert_accurate(out[s].transpose(0, 1)[None], math_attention(qb, kb, vb, causal=True),
                        math_attention(qb.double(), kb.double(), vb.double(), causal=True))
    qd, kd, vd = (t.cuda() for t in make_qkv(2, 4, 4, 200, 300, 64, dtype))
    mask = torch.rand(2, 1, 200, 300, device="cuda") > 0.5
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, attn_mask=mask, backend=backend), qd, kd, vd,
                       bias=torch.where(mask, 0.0, -math.inf).to(dtype))
    torch.manual_seed(11)
    seed = drawn_seed("cuda")
    keep = keep_mask(seed, 0.2, 2, 4, 200, 300).cuda()
    assert abs(keep.float().mean().item() - 0.8) < 0.01
    torch.manual_seed(11)
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, dropout_p=0.2, backend=backend), qd, kd, vd,
                       keep=keep, dropout_p=0.2)


# ----------------------------------------------------------------------------- GPU: the Hopper (wgmma) forward
# csrc/cuda/attention_fwd_sm90_kernel.cuh, opt-in through DLK_ATTENTION_WGMMA=1 (read at every launch). On a
# device or build without it the same calls run the mma.sync kernel, so these tests hold everywhere.
WGMMA_CASES = {  # (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim): lengths not multiples of 128, GQA
    "d64": (2, 4, 2, 333, 517, 64),
    "d128": (2, 8, 2, 1000, 1000, 128),
    "d128-fewer-queries": (1, 4, 1, 77, 300, 128),
    "d128-more-queries": (1, 2, 2, 300, 129, 128),
    "d256": (2, 4, 2, 300, 199, 256),
}


def math_lse(q, k, v_unused=None, *, causal=False, bottom_right=True):
    """fp64 log-sum-exp of each row's visible scaled scores (-inf for rows that see no key), on (B, H, N, D)."""
    heads_q, heads_kv = q.shape[1], k.shape[1]
    k = k.double().repeat_interleave(heads_q // heads_kv, dim=1)
    scale = float(np.float32(1.0 / math.sqrt(q.shape[-1])))
    scores = (q.double() @ k.transpose(-1, -2)) * scale
    if causal:
        n_q, n_k = q.shape[2], k.shape[2]
        shift = n_k - n_q if bottom_right else 0
        visible = torch.arange(n_k, device=q.device)[None, :] <= torch.arange(n_q, device=q.device)[:, None] + shift
        scores = scores.masked_fill(~visible, -math.inf)
    return torch.logsumexp(scores, dim=-1)


def expect_wgmma_path():
    """Where the Hopper kernel can run (a 9.0 device, an sm_90a build), the launcher must choose it, so
    that these tests measure it rather than passing on the mma.sync fallback."""
    from dlkernels._native.attention import attention_wgmma_available
    from dlkernels._backends import build_info

    archs = build_info()["cuda_archs"]
    if torch.cuda.get_device_capability() == (9, 0) and "90a" in archs and "90" not in archs:
        assert attention_wgmma_available(), "DLK_ATTENTION_WGMMA=1 on an sm_90a build and a 9.0 device"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", list(WGMMA_CASES))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gpu_wgmma_forward_matches_math(monkeypatch, dtype, case, causal):
    monkeypatch.setenv("DLK_ATTENTION_WGMMA", "1")
    expect_wgmma_path()
    batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim = WGMMA_CASES[case]
    q, k, v = (t.cuda() for t in make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype))
    out, lse = dlkernels.attention(q, k, v, causal=causal, return_lse=True, backend="cuda")
    reference = math_attention(q.double(), k.double(), v.double(), causal=causal)
    assert_accurate(out, math_attention(q, k, v, causal=causal), reference)
    expected_lse = math_lse(q, k, causal=causal)
    assert lse.shape == expected_lse.shape and lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), expected_lse, rtol=1e-4, atol=1e-3)  # -inf rows match exactly


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_gpu_wgmma_forward_varlen(monkeypatch, dtype):
    monkeypatch.setenv("DLK_ATTENTION_WGMMA", "1")
    expect_wgmma_path()
    lengths_q, lengths_k = [300, 1, 1000, 77], [250, 5, 1000, 130]
    cu_q = torch.tensor([0, *np.cumsum(lengths_q)], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, *np.cumsum(lengths_k)], dtype=torch.int32, device="cuda")
    q = torch.randn(sum(lengths_q), 8, 128, dtype=dtype, device="cuda")
    k, v = torch.randn(2, sum(lengths_k), 2, 128, dtype=dtype, device="cuda")
    for causal in (False, True):
        out, lse = dlkernels.attention(q, k, v, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                       return_lse=True, backend="cuda")
        for b in range(len(lengths_q)):
            sq, sk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
            qb = q[sq].transpose(0, 1)[None]
            kb, vb = (t[sk].transpose(0, 1)[None] for t in (k, v))
            assert_accurate(out[sq].transpose(0, 1)[None], math_attention(qb, kb, vb, causal=causal),
                            math_attention(qb.double(), kb.double(), vb.double(), causal=causal))
            torch.testing.assert_close(lse[:, sq].double(), math_lse(qb, kb, causal=causal)[0], rtol=1e-4, atol=1e-3)


@pytest.mark.cuda
def test_gpu_wgmma_requested_with_bias_or_dropout_falls_back(monkeypatch):
    """The wgmma kernel has neither bias nor dropout: with the path requested these still run (mma.sync) right."""
    monkeypatch.setenv("DLK_ATTENTION_WGMMA", "1")
    dtype = torch.bfloat16
    q, k, v = (t.cuda() for t in make_qkv(2, 4, 2, 200, 300, 128, dtype))
    mask = torch.rand(2, 1, 200, 300, device="cuda") > 0.5
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, attn_mask=mask, backend="cuda"), q, k, v,
                       bias=torch.where(mask, 0.0, -math.inf).to(dtype))
    torch.manual_seed(11)
    seed = drawn_seed("cuda")
    keep = keep_mask(seed, 0.2, 2, 4, 200, 300).cuda()
    torch.manual_seed(11)
    check_against_math(lambda q, k, v: dlkernels.attention(q, k, v, dropout_p=0.2, backend="cuda"), q, k, v,
                       keep=keep, dropout_p=0.2)


# ------------------------------------------------------------- auto, torch and OpInfo
SDPA_OPINFO = "nn.functional.scaled_dot_product_attention"


def _dropout_p(args, kwargs) -> float:
    return kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)


def _sdpa_adapter(*args, backend, **kwargs):
    """Runs a dropout sample as torch's OpInfo runs it (wrapper_set_seed: seed 42, RNG state restored), so
    torch's masks agree; ours draw a Philox mask instead, which cannot match torch's values."""
    if _dropout_p(args, kwargs) == 0:
        return dlkernels.scaled_dot_product_attention(*args, backend=backend, **kwargs)
    if backend not in ("auto", "torch"):
        raise ValueError("dropout: ours draw a Philox mask, not torch's, so values cannot match torch's")
    from torch.testing._internal.common_methods_invocations import wrapper_set_seed  # loaded by the OpInfo already
    return wrapper_set_seed(dlkernels.scaled_dot_product_attention, *args, backend=backend, **kwargs)


@pytest.mark.parametrize("backend", ["auto", "torch", "reference"])
def test_sdpa_opinfo_samples_give_torchs_result_or_error(backend, monkeypatch):
    # SDPA's OpInfo ships no error inputs (error_inputs_func None), which check_against_torch cannot skip yet
    monkeypatch.setattr(opinfo(SDPA_OPINFO, ""), "error_inputs_func", lambda *args, **kwargs: iter(()))
    counts = check_against_torch(SDPA_OPINFO, _sdpa_adapter, backend)
    if backend == "reference":  # torch's samples have head_dim 8: ours must refuse them by name, never differ
        assert counts["unsupported"] > 0, counts
    else:  # auto and torch cover every sample torch does
        assert counts["same"] > 0 and counts["unsupported"] == 0, counts


def test_sdpa_auto_runs_torch_where_ours_refuse():
    # head_dim 8 and q/k/v of different ranks: ours refuse by name, auto gives torch's answer
    q8 = torch.randn(2, 3, 5, 8)
    with pytest.raises(ValueError, match="head_dim 8 is not supported"):
        dlkernels.scaled_dot_product_attention(q8, q8, q8, backend="reference")
    torch.testing.assert_close(dlkernels.scaled_dot_product_attention(q8, q8, q8),
                               F.scaled_dot_product_attention(q8, q8, q8), rtol=0, atol=0)
    q, k = torch.randn(2, 3, 5, 32), torch.randn(3, 5, 32)
    with pytest.raises(ValueError, match="same rank"):
        dlkernels.scaled_dot_product_attention(q, k, k, backend="reference")
    torch.testing.assert_close(dlkernels.scaled_dot_product_attention(q, k, k),
                               F.scaled_dot_product_attention(q, k, k), rtol=0, atol=0)
    # and torch's error where torch refuses
    bad = torch.randn(2, 3, 5, 32), torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    with pytest.raises(RuntimeError) as from_torch:
        F.scaled_dot_product_attention(*bad)
    with pytest.raises(RuntimeError) as from_auto:
        dlkernels.scaled_dot_product_attention(*bad)
    assert str(from_auto.value) == str(from_torch.value)


def test_auto_runs_torch_on_cpu_and_explain_names_the_backend():
    q = torch.randn(1, 2, 4, 32)
    explanation = dlkernels.explain(lambda: dlkernels.scaled_dot_product_attention(q, q, q)
                                    + dlkernels.attention(q, q, q))
    assert [(d.op, d.backend) for d in explanation] == [("scaled_dot_product_attention", "torch"),
                                                        ("attention", "torch")]
    assert "cpu tensors run torch" in explanation[0].reason
    assert [d.backend for d in dlkernels.explain(dlkernels.attention, q, q, q, backend="reference")] == ["reference"]


@pytest.mark.parametrize("causal", [False, True])
def test_attention_torch_backend_matches_ours(causal):
    """backend="torch" composes torch ops with attention's conventions: GQA, bottom-right causal, masks with
    fully masked rows giving 0, lse, packed varlen batches; gradients too."""
    q, k, v = make_qkv(2, 4, 2, 5, 7, 32, torch.float64, requires_grad=True)
    allowed = torch.rand(5, 7) > 0.3
    allowed[1] = False  # a row that sees no key
    mask = None if causal else allowed
    ours = dlkernels.attention(q, k, v, causal=causal, attn_mask=mask, return_lse=True, backend="reference")
    theirs = dlkernels.attention(q, k, v, causal=causal, attn_mask=mask, return_lse=True, backend="torch")
    torch.testing.assert_close(theirs[0], ours[0])
    finite = torch.isfinite(ours[1])
    torch.testing.assert_close(theirs[1][finite], ours[1][finite].to(theirs[1].dtype))
    grads_ours = torch.autograd.grad(ours[0].sum(), (q, k, v))
    grads_torch = torch.autograd.grad(theirs[0].sum(), (q, k, v))
    torch.testing.assert_close(grads_torch, grads_ours)

    packed = torch.randn(9, 4, 32, dtype=torch.float64), torch.randn(11, 2, 32, dtype=torch.float64)
    cu_q, cu_k = torch.tensor([0, 3, 9], dtype=torch.int32), torch.tensor([0, 6, 11], dtype=torch.int32)
    varlen = {"causal": causal, "cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k, "return_lse": True}
    ours = dlkernels.attention(packed[0], packed[1], packed[1], **varlen, backend="reference")
    theirs = dlkernels.attention(packed[0], packed[1], packed[1], **varlen, backend="torch")
    torch.testing.assert_close(theirs[0], ours[0])
    torch.testing.assert_close(theirs[1], ours[1].to(theirs[1].dtype))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_torch_backend_without_lse_is_one_sdpa_call(monkeypatch, causal):
    """Without return_lse, backend="torch" is a single SDPA call where SDPA means the same thing, and keeps the
    composed path for GQA (enable_gqa needs torch >= 2.5) and for bottom-right causal with Nq != Nk, where SDPA's
    top-left alignment differs."""
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(kw) or sdpa(*a, **kw))
    q, k, v = make_qkv(2, 4, 4, 6, 6, 32, torch.float64, requires_grad=True)
    theirs = dlkernels.attention(q, k, v, causal=causal, backend="torch")
    ours = dlkernels.attention(q, k, v, causal=causal, backend="reference")
    assert len(calls) == 1
    torch.testing.assert_close(theirs, ours)
    torch.testing.assert_close(torch.autograd.grad(theirs.sum(), (q, k, v)), torch.autograd.grad(ours.sum(), (q, k, v)))

    q, k, v = make_qkv(1, 2, 2, 3, 7, 32, torch.float64)
    theirs = dlkernels.attention(q, k, v, causal=causal, backend="torch")
    assert len(calls) == 1 + (not causal)
    torch.testing.assert_close(theirs, dlkernels.attention(q, k, v, causal=causal, backend="reference"))

    q, k, v = make_qkv(1, 4, 2, 5, 5, 32, torch.float64)  # GQA: composed
    theirs = dlkernels.attention(q, k, v, causal=causal, backend="torch")
    assert len(calls) == 1 + (not causal)
    torch.testing.assert_close(theirs, dlkernels.attention(q, k, v, causal=causal, backend="reference"))
