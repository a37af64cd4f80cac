"""Cases of the attention family: dlkernels.attention (dense and packed varlen) and
dlkernels.scaled_dot_product_attention, for the op tests, the differential fuzz and the mutation routine
(contract: tests/cases/__init__.py).

What the cases cover, each axis on its own:
- sequence lengths below, at and above every tile of the C++ reference (kBlockM / kBlockN, parsed from
  csrc/cpu/attention.cpp) and of the first config of each Triton kernel (the one the interpreter runs),
  on the query and the key axis separately, with q longer than k and k longer than q, and keys past two
  reference tiles so the online-softmax rescale runs;
- causal bottom-right (attention) and top-left (SDPA) with Nq != Nk; GQA and MQA head ratios; head dims
  32 / 64 / 96 (a masked 128-wide tile in Triton) / 128 / 256; scale off its default;
- varlen batches whose longest query and key sequences differ, an empty key sequence, max_seqlen given
  above the longest (dropout counters use it);
- bool and additive masks that broadcast, with a row that sees no key; dropout checked element by element
  against the Philox rule of csrc/include/dlk/attention.h; return_lse;
- layouts: contiguous, (B, N, H, D) views, a head dim padded inside a wider row, a non-unit stride on D,
  packed qkv rows, and a non-contiguous grad_out; float32 / float64 (reference) / float16 / bfloat16;
- invalid calls (too-small max_seqlen, masks with varlen, float64 on Triton, ...) that must raise.

Accuracy rule (FlashAttention's, as in tests/test_attention.py): against float64 torch our max error is at
most twice torch's own error in the input dtype plus a few rounding units of the largest reference value.
"""
from __future__ import annotations

import builtins
import math
import re
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import dlkernels
from . import Case, around, case, rng

FAMILY = "attention"
REFERENCE_SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "cpu" / "attention.cpp"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}
# Rounding units of the reference's largest value the error may exceed 2x torch's by (a reference that is
# exact by luck must not fail a correct kernel); fp32's online softmax rescales once per key block.
FLOOR_UNITS = {torch.float64: 64, torch.float32: 8}


# ----------------------------------------------------------------------------- tile sizes (sources of truth)
@lru_cache(maxsize=None)
def reference_tiles() -> dict[str, int]:
    """kBlockM (query rows) and kBlockN (keys) of the C++ reference, read from its source."""
    text = REFERENCE_SOURCE.read_text()
    tiles = {name: int(value) for name, value in re.findall(r"constexpr int (kBlock[MN]) = (\d+);", text)}
    if set(tiles) != {"kBlockM", "kBlockN"}:
        raise RuntimeError(f"{REFERENCE_SOURCE}: expected 'constexpr int kBlockM/kBlockN = <n>;', found {tiles}")
    return tiles


@lru_cache(maxsize=None)
def triton_tiles() -> dict[str, dict[str, int]]:
    """BLOCK_M / BLOCK_N of the first config of each Triton attention kernel (what the interpreter runs), and
    the delta kernel's fixed tile; empty without Triton."""
    try:
        from dlkernels.triton_kernels import attention as kernels
    except ImportError:
        return {}
    tiles = {name: dict(configs[0].kwargs) for name, configs in
             (("forward", kernels._FWD_CONFIGS), ("dkdv", kernels._DKDV_CONFIGS), ("dq", kernels._DQ_CONFIGS))}
    tiles["delta"] = {"BLOCK_M": kernels._DELTA_BLOCK_M}
    return tiles


def query_tiles() -> list[int]:
    sizes = {reference_tiles()["kBlockM"]}
    sizes |= {tile["BLOCK_M"] for tile in triton_tiles().values()}
    return sorted(sizes)


def key_tiles() -> list[int]:
    sizes = {reference_tiles()["kBlockN"]}
    sizes |= {tile["BLOCK_N"] for tile in triton_tiles().values() if "BLOCK_N" in tile}
    return sorted(sizes)


def query_sizes() -> list[int]:
    return sorted({n for tile in query_tiles() for n in around(tile)})


def key_sizes() -> list[int]:
    """Around every key tile, plus 2 * kBlockN + 1 keys: three reference tiles, the last one short, so the
    running max moves across tiles in most rows and a skipped rescale shows."""
    return sorted({n for tile in key_tiles() for n in around(tile)} | {2 * reference_tiles()["kBlockN"] + 1})


# ----------------------------------------------------------------------------- case constructors
def attention_case(why: str, *, tags=(), grad=True, **args) -> Case:
    defaults = dict(batch=1, heads_q=1, heads_kv=1, seqlen_q=8, seqlen_k=8, head_dim=32, dtype="float32",
                    causal=False, scale=None, dropout_p=0.0, mask="none", layout="contiguous",
                    grad_layout="contiguous", return_lse=False)
    return case(FAMILY, "attention", why, grad, tags, **{**defaults, **args})


def varlen_case(why: str, *, tags=(), grad=True, **args) -> Case:
    defaults = dict(lengths_q=(5, 9), lengths_k=(7, 3), heads_q=1, heads_kv=1, head_dim=32, dtype="float32",
                    causal=False, scale=None, dropout_p=0.0, max_seqlen_q=None, max_seqlen_k=None,
                    layout="contiguous", return_lse=False, compile=False)
    return case(FAMILY, "attention_varlen", why, grad, ("varlen", *tags), **{**defaults, **args})


def sdpa_case(why: str, *, tags=(), grad=True, **args) -> Case:
    defaults = dict(shape_q=(1, 2, 8, 32), shape_kv=(1, 2, 8, 32), dtype="float32", is_causal=False, scale=None,
                    dropout_p=0.0, mask="none", enable_gqa=False)
    return case(FAMILY, "scaled_dot_product_attention", why, grad, tags, **{**defaults, **args})


def error_case(base: Case, error: str, match: str, why: str) -> Case:
    """`base` called with invalid arguments: every backend must raise `error` matching `match`."""
    return Case(base.family, base.op, base.args + (("expect_error", (error, match)),), why, False,
                base.tags | {"error"})


# ----------------------------------------------------------------------------- boundary cases
def boundary_cases() -> list[Case]:
    cases: list[Case] = []
    q_sizes, k_sizes = query_sizes(), key_sizes()
    # Pair every query size with a key size so each size appears on each axis, both orders of Nq vs Nk occur,
    # and the causal diagonal (shift Nk - Nq) sits at many offsets inside the blocks.
    heads = [(1, 1), (2, 1), (4, 2), (3, 3), (2, 2)]
    head_dims = [32, 64, 96, 32, 128]
    layouts = ["contiguous", "bnhd", "padded", "dlast"]
    k_cycle = k_sizes[len(k_sizes) // 2:] + k_sizes[:len(k_sizes) // 2]
    for index, seqlen_q in enumerate(q_sizes):
        seqlen_k = k_cycle[index % len(k_cycle)]
        heads_q, heads_kv = heads[index % len(heads)]
        cases.append(attention_case(
            f"tiles: {seqlen_q} queries x {seqlen_k} keys", tags=("tiles",), seqlen_q=seqlen_q, seqlen_k=seqlen_k,
            heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dims[index % len(head_dims)], causal=index % 2 == 1,
            layout=layouts[index % len(layouts)], batch=1 + index % 2))
    for seqlen_k in k_sizes:  # every key size on the query axis too would cost more than it finds
        if seqlen_k not in {k_cycle[i % len(k_cycle)] for i in range(len(q_sizes))}:
            cases.append(attention_case(f"tiles: {seqlen_k} keys", tags=("tiles",), seqlen_q=9, seqlen_k=seqlen_k,
                                        causal=True, heads_q=2, heads_kv=1))
    rescale_keys = 2 * reference_tiles()["kBlockN"] + 1
    cases += [
        # A peaked softmax (large scale) with many keys: a skipped or wrong online rescale is far off.
        attention_case("online-softmax rescale: peaked scores over three reference key tiles", tags=("tiles",),
                       seqlen_q=5, seqlen_k=rescale_keys, scale=0.5, return_lse=True),
        attention_case("bottom-right causal, queries longer than keys: leading rows see nothing",
                       seqlen_q=33, seqlen_k=17, causal=True, return_lse=True, heads_q=2, heads_kv=2),
        attention_case("float64 with a scale that is no float", dtype="float64", seqlen_q=17, seqlen_k=65,
                       causal=True, scale=0.3, heads_q=2, heads_kv=1, return_lse=True),
        attention_case("float16, GQA, causal, tile tails", dtype="float16", seqlen_q=33, seqlen_k=31, causal=True,
                       heads_q=4, heads_kv=2),
        attention_case("bfloat16, MQA, padded rows", dtype="bfloat16", seqlen_q=17, seqlen_k=33, heads_q=3,
                       heads_kv=1, layout="padded"),
        attention_case("head dim 256", seqlen_q=17, seqlen_k=16, head_dim=256, causal=True),
        attention_case("bool mask broadcast over heads, a row that sees nothing", seqlen_q=17, seqlen_k=33,
                       mask="bool", batch=2, heads_q=2, heads_kv=2),
        attention_case("additive mask broadcast over batch and heads, with causal", seqlen_q=31, seqlen_k=17,
                       mask="additive", causal=True, heads_q=2, heads_kv=1),
        attention_case("key-only bool mask (broadcast rows, expanded by the op)", seqlen_q=16, seqlen_k=17,
                       mask="keys"),
        attention_case("dropout: the Philox elements, GQA, causal, non-contiguous grad", seqlen_q=17, seqlen_k=33,
                       dropout_p=0.25, causal=True, heads_q=2, heads_kv=1, batch=2, grad_layout="transposed"),
        attention_case("non-contiguous grad_out", seqlen_q=15, seqlen_k=16, grad_layout="transposed",
                       layout="bnhd"),
        attention_case("one query, one key", seqlen_q=1, seqlen_k=1, return_lse=True),
    ]
    varlen = [
        varlen_case("varlen: longest query (33) above the longest key (17)", lengths_q=(33, 2, 17),
                    lengths_k=(9, 17, 16), heads_q=2, heads_kv=1, return_lse=True),
        varlen_case("varlen: longest key (65) above the longest query (16), causal",
                    lengths_q=(16, 1, 9), lengths_k=(3, 65, 9), causal=True),
        varlen_case("varlen: causal, queries longer than keys per sequence", lengths_q=(65, 4), lengths_k=(17, 31),
                    causal=True, heads_q=4, heads_kv=2, layout="packed", return_lse=True),
        varlen_case("varlen: an empty key sequence gives 0 and -inf lse", lengths_q=(3, 5), lengths_k=(0, 7),
                    return_lse=True),
        varlen_case("varlen: max_seqlen above the longest, dropout counters use it", lengths_q=(6, 17),
                    lengths_k=(10, 4), max_seqlen_q=40, max_seqlen_k=50, dropout_p=0.3, heads_q=2, heads_kv=2),
        varlen_case("varlen: float16, padded rows", lengths_q=(17, 31), lengths_k=(33, 8), dtype="float16",
                    layout="padded", scale=0.2),
        varlen_case("varlen: float64", lengths_q=(9, 33), lengths_k=(17, 5), dtype="float64", causal=True),
        varlen_case("varlen under torch.compile: the kernels' own length checks accept valid maxima",
                    lengths_q=(17, 3), lengths_k=(5, 16), max_seqlen_q=17, max_seqlen_k=20, compile=True,
                    causal=True, heads_q=2, heads_kv=1),
    ]
    cases += varlen
    cases += [
        sdpa_case("SDPA is_causal is top-left: more keys than queries", shape_q=(2, 2, 17, 32),
                  shape_kv=(2, 2, 33, 32), is_causal=True),
        sdpa_case("SDPA is_causal top-left: more queries than keys (trailing rows see every key)",
                  shape_q=(1, 4, 33, 64), shape_kv=(1, 2, 16, 64), is_causal=True, enable_gqa=True, scale=0.4),
        sdpa_case("SDPA 3-D input with a (B, L, S) bool mask", shape_q=(2, 15, 32), shape_kv=(2, 17, 32),
                  mask="bool"),
        sdpa_case("SDPA 5-D input, additive mask", shape_q=(2, 1, 2, 9, 32), shape_kv=(2, 1, 2, 16, 32),
                  mask="additive"),
        sdpa_case("SDPA dropout: the Philox elements", shape_q=(1, 2, 16, 32), shape_kv=(1, 2, 17, 32),
                  dropout_p=0.2, is_causal=True),
    ]
    cases += error_cases()
    return cases


def error_cases() -> list[Case]:
    small = varlen_case("", lengths_q=(8, 3), lengths_k=(5, 8))
    return [
        error_case(varlen_case("", lengths_q=(8, 3), lengths_k=(5, 8), max_seqlen_q=5, max_seqlen_k=8),
                   "ValueError", "max_seqlen_q=5 is smaller than the longest", "max_seqlen_q below a sequence"),
        error_case(varlen_case("", lengths_q=(8, 3), lengths_k=(5, 8), max_seqlen_q=8, max_seqlen_k=5),
                   "ValueError", "max_seqlen_k=5 is smaller than the longest", "max_seqlen_k below a sequence"),
        # Under torch.compile the op cannot read cu_seqlens while tracing: the kernels' launchers must refuse.
        error_case(varlen_case("", lengths_q=(8, 3), lengths_k=(5, 8), max_seqlen_q=5, max_seqlen_k=8,
                               compile=True),
                   "RuntimeError|ValueError", "max_seqlen", "max_seqlen_q below a sequence under torch.compile"),
        error_case(varlen_case("", lengths_q=(3, 8), lengths_k=(33, 2), max_seqlen_q=8, max_seqlen_k=17,
                               compile=True),
                   "RuntimeError|ValueError", "max_seqlen", "max_seqlen_k below a sequence under torch.compile"),
        error_case(Case(small.family, small.op, small.args + (("mask", "bool"),), "", False, small.tags),
                   "ValueError", "not supported with variable-length", "attn_mask with cu_seqlens"),
        error_case(attention_case("", head_dim=48), "ValueError", "head_dim 48 is not supported",
                   "a head dim the kernels lack"),
        error_case(attention_case("", heads_q=3, heads_kv=2), "ValueError", "multiple of the number of key/value",
                   "query heads not a multiple of the kv heads"),
        error_case(attention_case("", dropout_p=1.0), "ValueError", "dropout_p must be in", "dropout_p = 1"),
        error_case(sdpa_case("", mask="bool", is_causal=True), "ValueError", "cannot both be set",
                   "SDPA attn_mask with is_causal"),
        error_case(sdpa_case("", shape_q=(1, 4, 8, 32), shape_kv=(1, 2, 8, 32)), "ValueError", "enable_gqa=True",
                   "SDPA head counts differ without enable_gqa"),
    ]


# ----------------------------------------------------------------------------- random cases
def random_cases(seed: int, count: int) -> list[Case]:
    """Seeded draws over the same axes; sizes mostly from the tile boundaries, some anywhere up to 80."""
    draw = rng(seed)
    q_pool = query_sizes() + [1, 2, 7]
    k_pool = key_sizes() + [1, 3, 9]

    def length(pool):
        return draw.choice(pool) if draw.random() < 0.7 else draw.randint(1, 80)

    def heads():
        heads_kv = draw.choice([1, 1, 2, 3])
        return heads_kv * draw.choice([1, 1, 2, 3]), heads_kv

    cases = []
    for index in range(count):
        dtype = draw.choices(["float32", "float64", "float16", "bfloat16"], weights=[5, 2, 2, 2])[0]
        head_dim = draw.choices([32, 64, 96, 128, 256], weights=[6, 3, 3, 1, 1])[0]
        scale = draw.choice([None, None, 0.1, 0.3])  # larger ones leave fp32 P-from-lse beyond the rule
        dropout_p = draw.choice([0.0, 0.0, 0.0, 0.2])
        heads_q, heads_kv = heads()
        kind = draw.choices(["dense", "varlen", "sdpa"], weights=[5, 3, 2])[0]
        why = f"random draw {index} of seed {seed}"
        if kind == "dense":
            cases.append(attention_case(
                why, batch=draw.randint(1, 2), heads_q=heads_q, heads_kv=heads_kv, seqlen_q=length(q_pool),
                seqlen_k=length(k_pool), head_dim=head_dim, dtype=dtype, causal=draw.random() < 0.5, scale=scale,
                dropout_p=dropout_p, mask=draw.choice(["none", "none", "bool", "additive", "keys"]),
                layout=draw.choice(["contiguous", "bnhd", "padded", "dlast"]),
                grad_layout=draw.choice(["contiguous", "transposed"]), return_lse=draw.random() < 0.5))
        elif kind == "varlen":
            batch = draw.randint(1, 3)
            lengths_q = tuple(length(q_pool) for _ in range(batch))
            lengths_k = tuple(length(k_pool) if draw.random() < 0.9 else 0 for _ in range(batch))
            over = draw.random() < 0.3
            cases.append(varlen_case(
                why, lengths_q=lengths_q, lengths_k=lengths_k, heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dim,
                dtype=dtype, causal=draw.random() < 0.5, scale=scale, dropout_p=dropout_p,
                max_seqlen_q=max(lengths_q) + 3 if over else None, max_seqlen_k=max(lengths_k) + 5 if over else None,
                layout=draw.choice(["contiguous", "padded", "packed"]), return_lse=draw.random() < 0.5))
        else:
            batch_dims = draw.choice([(), (2,), (1, 2)])
            seqlen_q, seqlen_k = length(q_pool), length(k_pool)
            sdpa_heads = () if not batch_dims else (heads_q,)
            sdpa_kv_heads = () if not batch_dims else (heads_kv,)
            cases.append(sdpa_case(
                why, shape_q=(*batch_dims, *sdpa_heads, seqlen_q, head_dim),
                shape_kv=(*batch_dims, *sdpa_kv_heads, seqlen_k, head_dim), dtype=dtype,
                is_causal=draw.random() < 0.5, scale=scale, dropout_p=dropout_p,
                mask=draw.choice(["none", "none", "bool", "additive"]), enable_gqa=heads_q != heads_kv))
    # A causal SDPA call cannot take a mask as well: such draws keep the causal flag only.
    return [_drop_mask_if_causal(c) for c in cases]


def _drop_mask_if_causal(c: Case) -> Case:
    if c.op == "scaled_dot_product_attention" and c.get("is_causal") and c.get("mask") != "none":
        return Case(c.family, c.op, tuple((k, "none" if k == "mask" else v) for k, v in c.args), c.why, c.grad,
                    c.tags)
    return c


# ----------------------------------------------------------------------------- inputs
def _generator(c: Case) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(c.id.encode()))


def _randn(gen: torch.Generator, shape) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64)


def _dense_tensor(gen, batch, heads, seqlen, head_dim, dtype, layout) -> torch.Tensor:
    """A (B, H, N, D) tensor of `dtype` in `layout`, as a leaf that keeps its strides."""
    if layout == "bnhd":  # what attention layers make: (B, N, H, D) transposed
        t = _randn(gen, (batch, seqlen, heads, head_dim)).to(dtype).transpose(1, 2)
    elif layout == "padded":  # the head dim inside a wider row: row stride > D
        t = _randn(gen, (batch, heads, seqlen, head_dim + 16)).to(dtype)[..., :head_dim]
    elif layout == "dlast":  # a non-unit stride on D (the op copies it)
        t = _randn(gen, (batch, heads, head_dim, seqlen)).to(dtype).transpose(2, 3)
    else:
        t = _randn(gen, (batch, heads, seqlen, head_dim)).to(dtype)
    return t.detach().requires_grad_(True)


def _packed_tensor(gen, total, heads, head_dim, dtype, layout) -> torch.Tensor:
    """A (total, H, D) tensor in `layout`: padded rows, or one of three interleaved (q, k, v) rows."""
    if layout == "padded":
        t = _randn(gen, (total, heads, head_dim + 16)).to(dtype)[..., :head_dim]
    elif layout == "packed":
        t = _randn(gen, (total, 3, heads, head_dim)).to(dtype)[:, 1]
    else:
        t = _randn(gen, (total, heads, head_dim)).to(dtype)
    return t.detach().requires_grad_(True)


def _mask(gen, kind, batch, heads, seqlen_q, seqlen_k, dtype):
    if kind == "bool":  # (B, 1, Nq, Nk), one query row of batch 0 sees no key
        allowed = torch.rand(batch, 1, seqlen_q, seqlen_k, generator=gen) > 0.3
        allowed[0, 0, seqlen_q // 2] = False
        return allowed
    if kind == "additive":  # (Nq, Nk), broadcast over batch and heads
        return _randn(gen, (seqlen_q, seqlen_k)).to(dtype)
    if kind == "keys":  # (Nk,) bool: the op broadcasts it over rows
        allowed = torch.rand(seqlen_k, generator=gen) > 0.4
        allowed[0] = True
        return allowed
    return None


def _bias(mask, dtype):
    """The additive float64 bias a mask means (bool: 0 / -inf)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, -math.inf)
    return mask.to(dtype)


# ----------------------------------------------------------------------------- dropout (Philox rule)
def _philox_first_word(seed: int, counters: np.ndarray) -> np.ndarray:
    """Philox-4x32-10's first word per 64-bit counter (dlk/attention.h philox_first_word = tl.randint)."""
    mask32 = np.uint64(0xFFFFFFFF)
    c0, c1 = counters & mask32, counters >> np.uint64(32)
    c2, c3 = np.zeros_like(c0), np.zeros_like(c0)
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        old_c0, old_c2 = c0, c2
        c0 = ((np.uint64(0xCD9E8D57) * old_c2) >> np.uint64(32)) ^ c1 ^ k0
        c2 = ((np.uint64(0xD2511F53) * old_c0) >> np.uint64(32)) ^ c3 ^ k1
        c1 = (np.uint64(0xCD9E8D57) * old_c2) & mask32
        c3 = (np.uint64(0xD2511F53) * old_c0) & mask32
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & mask32, (k1 + np.uint64(0xBB67AE85)) & mask32
    return c0


def keep_mask(seed, dropout_p, heads, first_tokens, seqlen_q, seqlen_k, total_q, counter_seqlen_k):
    """(len(first_tokens), heads, seqlen_q, seqlen_k) bool: the elements the kernels keep (dlk::dropout_counter:
    (h * total_q + query token) * counter_seqlen_k + key)."""
    h = np.arange(heads, dtype=np.uint64)[None, :, None, None]
    token = (np.asarray(first_tokens, dtype=np.uint64)[:, None, None, None]
             + np.arange(seqlen_q, dtype=np.uint64)[None, None, :, None])
    j = np.arange(seqlen_k, dtype=np.uint64)[None, None, None, :]
    counters = (h * np.uint64(total_q) + token) * np.uint64(counter_seqlen_k) + j
    threshold = min(math.floor(dropout_p * 2.0**32), 2**32 - 1)
    return torch.from_numpy(_philox_first_word(seed, counters) >= np.uint64(threshold))


def _draw_seed(torch_seed: int) -> int:
    """The Philox seed the op draws after torch.manual_seed(torch_seed) (dlkernels/ops/attention.py)."""
    torch.manual_seed(torch_seed)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    torch.manual_seed(torch_seed)
    return seed


# ----------------------------------------------------------------------------- torch reference
def math_attention(q, k, v, *, causal=False, bottom_right=True, scale=None, bias=None, keep=None, dropout_p=0.0,
                   kernel_dtype=None):
    """softmax(scale q k^T + bias, masked) v on (B, H, N, D) in q's dtype; rows that see no key give 0. The scale
    is rounded to float32 as the kernels take it for inputs of kernel_dtype (float64 keeps it exact).
    Returns (out, lse)."""
    heads_q, heads_kv = q.shape[1], k.shape[1]
    if heads_q != heads_kv:
        k, v = k.repeat_interleave(heads_q // heads_kv, dim=1), v.repeat_interleave(heads_q // heads_kv, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if (kernel_dtype or q.dtype) != torch.float64:
        scale = float(np.float32(scale))
    scores = (q @ k.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    n_q, n_k = q.shape[2], k.shape[2]
    if causal:
        shift = n_k - n_q if bottom_right else 0
        visible = torch.arange(n_k)[None, :] <= torch.arange(n_q)[:, None] + shift
        scores = scores.masked_fill(~visible, -math.inf)
    dead = (scores == -math.inf).all(dim=-1, keepdim=True)
    lse = torch.logsumexp(scores.detach().double(), dim=-1)
    probs = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    if keep is not None:
        probs = probs * keep.to(probs.dtype) / (1.0 - dropout_p)
    return probs @ v, lse


def _max_error(actual, reference) -> float:
    if actual.numel() == 0:
        return 0.0
    return (actual.double() - reference.double()).abs().max().item()


def assert_accurate(c: Case, what: str, ours, torch_same_dtype, reference, magnitude: float = 1.0) -> None:
    """Our max error <= 2 x torch's (same dtype) + a floor of a few rounding units of max(the reference's
    largest value, magnitude, 1)."""
    assert ours.shape == reference.shape, f"{c.id}: {what} shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    assert torch.isfinite(ours).all(), f"{c.id}: {what} has non-finite values"
    ours_error, torch_error = _max_error(ours, reference), _max_error(torch_same_dtype, reference)
    largest = reference.double().abs().max().item() if reference.numel() else 0.0
    floor = FLOOR_UNITS.get(ours.dtype, 2) * UNIT_ROUNDOFF[ours.dtype] * max(largest, magnitude, 1.0)
    assert ours_error <= 2.0 * torch_error + floor, (
        f"{c.id} [{c.why}]: {what} max error {ours_error:.3e} > 2 x torch's {torch_error:.3e} + {floor:.3e}")


def cancellation_magnitude(scale, out, grad_out, leaves) -> float:
    """What the backward's rounding error is relative to. FlashAttention's dS = P * (dP - D) with
    D_i = rowsum(dO_i * O_i) cancels terms of size |dO_i| |O_i| (exactly, for a row that sees one key: its true
    dS is 0, which torch's softmax backward gets exactly), then dQ and dK multiply dS by scale * k and q."""
    rows = (grad_out.double() * out.double()).abs().sum(-1).max().item() if out.numel() else 0.0
    return scale * rows * max(t.detach().abs().max().item() for t in leaves)


def _assert_lse(c: Case, lse, reference_lse) -> None:
    tolerance = 1e-12 if lse.dtype == torch.float64 else 2e-5
    try:
        torch.testing.assert_close(lse.double(), reference_lse.double(), rtol=tolerance, atol=tolerance)
    except AssertionError as error:
        raise AssertionError(f"{c.id} [{c.why}]: lse: {error}") from None


# ----------------------------------------------------------------------------- check
def _expect_error(c: Case, backend: str, call) -> None:
    error, match = c.get("expect_error")
    names = error.split("|")
    try:
        call()
    except Exception as raised:  # noqa: BLE001 - the type is checked below
        kinds = tuple(getattr(builtins, name) for name in names)
        assert isinstance(raised, kinds), f"{c.id} [{c.why}]: raised {type(raised).__name__}: {raised}, not {error}"
        assert re.search(match, str(raised)), f"{c.id} [{c.why}]: error {str(raised)!r} does not match {match!r}"
        return
    raise AssertionError(f"{c.id} [{c.why}]: backend {backend!r} returned instead of raising {error} ({match})")


def check(c: Case, backend: str) -> None:
    """Runs case `c` through the public op with backend=`backend` and compares values, lse and gradients with
    float64 torch (the accuracy rule of this module); error cases must raise their error. float64 is the C++
    reference's alone: every other backend must refuse it with a TypeError."""
    if c.get("dtype") == "float64" and backend != "reference" and "expect_error" not in dict(c.args):
        c = error_case(c, "TypeError", "float64 is supported by the reference backend only", c.why)
    if c.op == "attention":
        _check_dense(c, backend)
    elif c.op == "attention_varlen":
        _check_varlen(c, backend)
    elif c.op == "scaled_dot_product_attention":
        _check_sdpa(c, backend)
    else:
        raise ValueError(f"unknown attention case op {c.op!r}")


def _grad_output(gen, out, layout):
    grad = _randn(gen, out.shape).to(out.dtype)
    if layout == "transposed" and out.dim() == 4:  # same values, (B, N, H, D) memory order
        grad = grad.transpose(1, 2).contiguous().transpose(1, 2)
    return grad


def _compare(c, names, ours_out, ours_leaves, low_leaves, exact_leaves, low_out, exact_out, grad) -> None:
    assert ours_out.dtype == low_leaves[0].dtype, f"{c.id}: output dtype {ours_out.dtype}"
    assert_accurate(c, "output", ours_out.detach(), low_out.detach(), exact_out.detach())
    if not c.grad:
        return
    scale = c.get("scale") or 1.0 / math.sqrt(exact_leaves[0].shape[-1])
    magnitude = cancellation_magnitude(scale, exact_out.detach(), grad, exact_leaves)
    ours_out.backward(grad)
    low_out.backward(grad)
    exact_out.backward(grad.double())
    for name, ours, low, exact in zip(names, ours_leaves, low_leaves, exact_leaves):
        assert ours.grad is not None, f"{c.id}: no gradient for {name}"
        assert_accurate(c, f"grad_{name}", ours.grad, low.grad, exact.grad, magnitude)


def _copies(leaves):
    low = [t.detach().clone().requires_grad_(True) for t in leaves]
    exact = [t.detach().double().requires_grad_(True) for t in leaves]
    return low, exact


def _check_dense(c: Case, backend: str) -> None:
    a = dict(c.args)
    dtype = DTYPES[a["dtype"]]
    gen = _generator(c)
    batch, seqlen_q, seqlen_k, head_dim = a["batch"], a["seqlen_q"], a["seqlen_k"], a["head_dim"]
    q = _dense_tensor(gen, batch, a["heads_q"], seqlen_q, head_dim, dtype, a["layout"])
    k = _dense_tensor(gen, batch, a["heads_kv"], seqlen_k, head_dim, dtype, a["layout"])
    v = _dense_tensor(gen, batch, a["heads_kv"], seqlen_k, head_dim, dtype, a["layout"])
    mask = _mask(gen, a["mask"], batch, a["heads_q"], seqlen_q, seqlen_k, dtype)
    kwargs = dict(causal=a["causal"], scale=a["scale"], dropout_p=a["dropout_p"], attn_mask=mask,
                  return_lse=a["return_lse"], backend=backend)
    if "expect_error" in a:
        return _expect_error(c, backend, lambda: dlkernels.attention(q, k, v, **kwargs))
    keep = None
    torch_seed = zlib.crc32(c.id.encode()) % 2**31
    if a["dropout_p"] > 0:
        keep = keep_mask(_draw_seed(torch_seed), a["dropout_p"], a["heads_q"], np.arange(batch) * seqlen_q,
                         seqlen_q, seqlen_k, batch * seqlen_q, seqlen_k)
    torch.manual_seed(torch_seed)
    result = dlkernels.attention(q, k, v, **kwargs)
    out, lse = result if a["return_lse"] else (result, None)
    low, exact = _copies((q, k, v))
    math_args = dict(causal=a["causal"], scale=a["scale"], keep=keep, dropout_p=a["dropout_p"])
    low_out, _ = math_attention(*low, bias=_bias(mask, dtype), **math_args)
    exact_out, exact_lse = math_attention(*exact, bias=_bias(mask, torch.float64), kernel_dtype=dtype, **math_args)
    if lse is not None:
        assert lse.shape == (batch, a["heads_q"], seqlen_q), f"{c.id}: lse shape {tuple(lse.shape)}"
        _assert_lse(c, lse, exact_lse)
    _compare(c, "qkv", out, (q, k, v), low, exact, low_out, exact_out, _grad_output(gen, out, a["grad_layout"]))


def _packed_reference(leaves, lengths_q, lengths_k, keeps=None, **math_args):
    """Packed (total, H, D) attention, one dense call per sequence: (out, lse of shape (H, total_q))."""
    q, k, v = leaves
    outs, lses = [], []
    start_q = start_k = 0
    for index, (len_q, len_k) in enumerate(zip(lengths_q, lengths_k)):
        pieces = [t[s:s + n].transpose(0, 1)[None] for t, s, n in ((q, start_q, len_q), (k, start_k, len_k),
                                                                    (v, start_k, len_k))]
        out, lse = math_attention(*pieces, keep=None if keeps is None else keeps[index], **math_args)
        outs.append(out[0].transpose(0, 1))
        lses.append(lse[0])
        start_q, start_k = start_q + len_q, start_k + len_k
    return torch.cat(outs), torch.cat(lses, dim=-1)


def _check_varlen(c: Case, backend: str) -> None:
    a = dict(c.args)
    dtype = DTYPES[a["dtype"]]
    gen = _generator(c)
    lengths_q, lengths_k = a["lengths_q"], a["lengths_k"]
    total_q, total_k = sum(lengths_q), sum(lengths_k)
    q = _packed_tensor(gen, total_q, a["heads_q"], a["head_dim"], dtype, a["layout"])
    k = _packed_tensor(gen, total_k, a["heads_kv"], a["head_dim"], dtype, a["layout"])
    v = _packed_tensor(gen, total_k, a["heads_kv"], a["head_dim"], dtype, a["layout"])
    cu_q = torch.tensor([0, *np.cumsum(lengths_q)], dtype=torch.int32)
    cu_k = torch.tensor([0, *np.cumsum(lengths_k)], dtype=torch.int32)
    kwargs = dict(causal=a["causal"], scale=a["scale"], dropout_p=a["dropout_p"], cu_seqlens_q=cu_q,
                  cu_seqlens_k=cu_k, max_seqlen_q=a["max_seqlen_q"], max_seqlen_k=a["max_seqlen_k"],
                  return_lse=a["return_lse"], backend=backend)
    if a.get("mask", "none") != "none":
        kwargs["attn_mask"] = torch.ones(max(lengths_q), max(lengths_k), dtype=torch.bool)

    def call(q, k, v):
        if not a["compile"]:
            return dlkernels.attention(q, k, v, **kwargs)
        torch._dynamo.reset()  # a fresh trace: the eager checks of dlkernels/ops/attention.py are skipped
        compiled = torch.compile(lambda q, k, v: dlkernels.attention(q, k, v, **kwargs), fullgraph=True,
                                 backend="aot_eager")
        return compiled(q, k, v)

    if "expect_error" in a:
        return _expect_error(c, backend, lambda: call(q, k, v))
    torch_seed = zlib.crc32(c.id.encode()) % 2**31
    math_args = dict(causal=a["causal"], scale=a["scale"], dropout_p=a["dropout_p"], keeps=None)
    if a["dropout_p"] > 0:  # counters number query tokens globally, keys by the max_seqlen_k the op passes
        seed = _draw_seed(torch_seed)
        counter_seqlen_k = a["max_seqlen_k"] or max(lengths_k)
        starts = np.cumsum([0, *lengths_q[:-1]])
        math_args["keeps"] = [keep_mask(seed, a["dropout_p"], a["heads_q"], [start], n_q, n_k, total_q,
                                        counter_seqlen_k) for start, n_q, n_k in zip(starts, lengths_q, lengths_k)]
    torch.manual_seed(torch_seed)
    result = call(q, k, v)
    out, lse = result if a["return_lse"] else (result, None)
    low, exact = _copies((q, k, v))
    low_out, _ = _packed_reference(low, lengths_q, lengths_k, **math_args)
    exact_out, exact_lse = _packed_reference(exact, lengths_q, lengths_k, kernel_dtype=dtype, **math_args)
    if lse is not None:
        assert lse.shape == (a["heads_q"], total_q), f"{c.id}: lse shape {tuple(lse.shape)}"
        _assert_lse(c, lse, exact_lse)
    _compare(c, "qkv", out, (q, k, v), low, exact, low_out, exact_out, _randn(gen, out.shape).to(dtype))


def _sdpa_mask(gen, kind, shape_q, shape_kv, dtype):
    seqlen_q, seqlen_k = shape_q[-2], shape_kv[-2]
    if kind == "bool":  # q's batch dimensions (heads broadcast), one row sees no key
        batch_dims = (*shape_q[:-3], 1) if len(shape_q) >= 4 else shape_q[:-2]
        allowed = torch.rand(*batch_dims, seqlen_q, seqlen_k, generator=gen) > 0.3
        allowed.view(-1, seqlen_q, seqlen_k)[0, seqlen_q // 2] = False
        return allowed
    if kind == "additive":
        return _randn(gen, (seqlen_q, seqlen_k)).to(dtype)
    return None


def _check_sdpa(c: Case, backend: str) -> None:
    a = dict(c.args)
    dtype = DTYPES[a["dtype"]]
    gen = _generator(c)
    shape_q, shape_kv = a["shape_q"], a["shape_kv"]
    q = _randn(gen, shape_q).to(dtype).requires_grad_(True)
    k = _randn(gen, shape_kv).to(dtype).requires_grad_(True)
    v = _randn(gen, shape_kv).to(dtype).requires_grad_(True)
    mask = _sdpa_mask(gen, a["mask"], shape_q, shape_kv, dtype)
    kwargs = dict(attn_mask=mask, dropout_p=a["dropout_p"], is_causal=a["is_causal"], scale=a["scale"],
                  enable_gqa=a["enable_gqa"])
    if "expect_error" in a:
        return _expect_error(c, backend, lambda: dlkernels.scaled_dot_product_attention(q, k, v, **kwargs,
                                                                                        backend=backend))
    # SDPA's (..., L, E) as (B, H, L, E): leading dimensions flatten into the batch (heads 1 for 2-/3-D).
    def as_4d(t):
        return t.reshape(-1, *t.shape[-3:]) if t.dim() >= 4 else t.reshape(-1, 1, *t.shape[-2:])

    heads_q = shape_q[-3] if len(shape_q) >= 4 else 1
    seqlen_q, seqlen_k = shape_q[-2], shape_kv[-2]
    batch = math.prod(shape_q[:-3]) if len(shape_q) >= 4 else math.prod(shape_q[:-2])
    torch_seed = zlib.crc32(c.id.encode()) % 2**31
    keep = None
    if a["dropout_p"] > 0:
        keep = keep_mask(_draw_seed(torch_seed), a["dropout_p"], heads_q, np.arange(batch) * seqlen_q, seqlen_q,
                         seqlen_k, batch * seqlen_q, seqlen_k)
    torch.manual_seed(torch_seed)
    out = dlkernels.scaled_dot_product_attention(q, k, v, **kwargs, backend=backend)

    def reference(leaves, bias_dtype, kernel_dtype=None):
        bias = _bias(mask, bias_dtype)
        if bias is not None:
            bias = bias.reshape(-1, 1, seqlen_q, seqlen_k) if bias.dim() >= 3 else bias
        result, _ = math_attention(*(as_4d(t) for t in leaves), causal=a["is_causal"], bottom_right=False,
                                   scale=a["scale"], bias=bias, keep=keep, dropout_p=a["dropout_p"],
                                   kernel_dtype=kernel_dtype)
        return result.reshape(*shape_q[:-1], result.shape[-1])

    low, exact = _copies((q, k, v))
    low_out, exact_out = reference(low, dtype), reference(exact, torch.float64, kernel_dtype=dtype)
    _compare(c, "qkv", out, (q, k, v), low, exact, low_out, exact_out, _randn(gen, out.shape).to(dtype))
