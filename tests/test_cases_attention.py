"""The attention case generators (tests/cases/attention.py) against float64 torch on the CPU backends: the
deterministic boundary sample and the seeded differential fuzz (DLK_FUZZ_CASES=500 for the long mode,
DLK_FUZZ_SEED to rerun a draw)."""
import numpy as np
import pytest
import torch

from cases import attention as cases
from cases import around, fuzz_count, fuzz_seed
from helpers import CPU_BACKENDS, HAS_CUDA

BOUNDARY = cases.boundary_cases()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", BOUNDARY, ids=[c.id for c in BOUNDARY])
def test_boundary_cases(case, backend):
    cases.check(case, backend)


def test_boundary_cases_straddle_every_tile():
    """Sizes below, at and above every query and key tile (C++ reference and Triton first configs, read from
    their sources) occur on their own axis, for the dense and the packed layout alike."""
    assert cases.reference_tiles()["kBlockN"] in cases.key_tiles()
    dense_q = {c.get("seqlen_q") for c in BOUNDARY if c.op == "attention"}
    dense_k = {c.get("seqlen_k") for c in BOUNDARY if c.op == "attention"}
    packed_q = {n for c in BOUNDARY if c.op == "attention_varlen" for n in c.get("lengths_q")}
    packed_k = {n for c in BOUNDARY if c.op == "attention_varlen" for n in c.get("lengths_k")}
    for tile in cases.query_tiles():
        assert set(around(tile)) <= dense_q, f"query tile {tile}: {sorted(dense_q)}"
    for tile in cases.key_tiles():
        assert set(around(tile)) <= dense_k, f"key tile {tile}: {sorted(dense_k)}"
    assert {max(c.get("lengths_q")) > max(c.get("lengths_k")) for c in BOUNDARY if c.op == "attention_varlen"} \
        == {True, False}, "varlen cases need both a longer query side and a longer key side"
    assert packed_q and packed_k


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_random_cases(backend):
    for case in cases.random_cases(fuzz_seed(), fuzz_count()):
        cases.check(case, backend)


@pytest.mark.skipif(HAS_CUDA, reason="the interpreter runs only without a GPU")
@pytest.mark.parametrize("short_side", ["q", "k"])
def test_triton_kernels_fill_sequences_longer_than_max_seqlen_with_nan(monkeypatch, short_side):
    """On a GPU the Triton launcher cannot read cu_seqlens without a sync, so its kernels guard themselves: a
    packed sequence longer than max_seqlen_q / max_seqlen_k gets NaN in every row of out, lse and the
    gradients (rows past the grid included), never stale memory; the other sequences are exact."""
    kernels = pytest.importorskip("dlkernels.triton_kernels.attention")
    monkeypatch.setattr(kernels, "_check_lengths", lambda problem: None)  # the host check is the CPU path
    lengths_q, lengths_k = (40, 5), (7, 37)
    max_seqlen_q, max_seqlen_k = (33, 37) if short_side == "q" else (40, 17)
    bad_q, bad_k = (slice(0, 40), slice(0, 7)) if short_side == "q" else (slice(40, 45), slice(7, 44))
    good_q, good_k = (slice(40, 45), slice(7, 44)) if short_side == "q" else (slice(0, 40), slice(0, 7))
    q = torch.randn(sum(lengths_q), 2, 32)
    k, v = torch.randn(2, sum(lengths_k), 1, 32)
    cu_q, cu_k = (torch.tensor([0, *np.cumsum(n)], dtype=torch.int32) for n in (lengths_q, lengths_k))
    args = (None, cu_q, cu_k, max_seqlen_q, max_seqlen_k, 0.2, True, True, 0.0, None, False)
    out, lse = kernels.attention_forward(q, k, v, *args)
    assert out[bad_q].isnan().all() and lse[:, bad_q].isnan().all()
    good = [t[s].transpose(0, 1)[None].double() for t, s in ((q, good_q), (k, good_k), (v, good_k))]
    expected, expected_lse = cases.math_attention(*good, causal=True, scale=0.2, kernel_dtype=torch.float32)
    torch.testing.assert_close(out[good_q].double(), expected[0].transpose(0, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse[:, good_q].double(), expected_lse[0], rtol=1e-5, atol=1e-5)
    grad_q, grad_k, grad_v = kernels.attention_backward(torch.randn_like(out), q, k, v, out, lse, *args)
    assert grad_q[bad_q].isnan().all() and grad_k[bad_k].isnan().all() and grad_v[bad_k].isnan().all()
    assert not any(g[s].isnan().any() for g, s in ((grad_q, good_q), (grad_k, good_k), (grad_v, good_k)))
