"""Attention cases: FlashAttention's published setup. 16k tokens per batch (batch = 16384 / seq) at seq 512 ... 16k,
hidden 2048 (heads = 2048 / head_dim), head dim 64 / 128 / 256, causal and not, fp16 and bf16; forward, backward
and forward + backward.

Reference ("torch"): F.scaled_dot_product_attention with PyTorch's own backend choice, and each SDPA backend
pinned (flash, memory-efficient, cuDNN) as further baselines in the same run; a baseline that cannot run a
shape records its error. Inputs are (batch, heads, seq, head_dim) contiguous for everyone.
TFLOP/s count 4 * B * H * N^2 * D per forward (x0.5 causal), x2.5 for the backward (FlashAttention's
convention), x3.5 for forward + backward.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

import dlkernels
from dlkernels.bench import REFERENCE, Case

FAMILY = "attention"
DIRECTIONS = ("fwd", "bwd", "fwd+bwd")
DTYPES = ("float16", "bfloat16", "float32")  # what the CUDA kernels take (benchmarks/sanitize.py)
SDPA_BASELINES = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
                  "sdpa_cudnn": "CUDNN_ATTENTION"}
EXTRA_BASELINES = tuple(SDPA_BASELINES)
PRECISION_FLAGS = {"torch.backends.cuda.matmul.allow_tf32": False}

# The CUDA backend's Hopper (wgmma) forward is opt-in (DLK_ATTENTION_WGMMA=1, read at every launch): "cuda" rows
# run with it off, "cuda_wgmma" rows with it on, so one run compares the two kernels (the backward is the same).
WGMMA_VARIANT, WGMMA_ENV = "cuda_wgmma", "DLK_ATTENTION_WGMMA"


def gpu_variants() -> tuple[str, ...]:
    """"cuda_wgmma" where the Hopper kernel can run (sm_90a build, compute capability 9.0)."""
    if "cuda" not in dlkernels.available_backends("cuda"):
        return ()
    from dlkernels._native.attention import attention_wgmma_available

    saved = os.environ.get(WGMMA_ENV)
    os.environ[WGMMA_ENV] = "1"
    try:
        return (WGMMA_VARIANT,) if attention_wgmma_available() else ()
    finally:
        if saved is None:
            del os.environ[WGMMA_ENV]
        else:
            os.environ[WGMMA_ENV] = saved


TOKENS, HIDDEN = 16384, 2048
SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
HEAD_DIMS = (64, 128, 256)


def _case(batch: int, heads: int, seqlen: int, head_dim: int, causal: bool, dtype: str, workload: str) -> Case:
    params = (("causal", causal), ("head_dim", head_dim), ("heads", heads))
    return Case("attention", workload, (batch, heads, seqlen, head_dim), params, dtype, "bhsd")


CASES = [_case(TOKENS // seqlen, HIDDEN // head_dim, seqlen, head_dim, causal, dtype, "FlashAttention 16k tokens")
         for dtype in ("bfloat16", "float16") for head_dim in HEAD_DIMS for causal in (False, True)
         for seqlen in SEQLENS]
SMALL_CASES = [_case(2, 2, seqlen, head_dim, causal, dtype, "small")
               for dtype in ("float16", "bfloat16", "float32") for head_dim in (32, 64)
               for causal in (False, True) for seqlen in (33, 64)]

BYTES_COUNTED = "q, k, v, out (and dout, dq, dk, dv for the backward) read or written once; lse ignored"


def flops(case: Case, direction: str) -> float:
    batch, heads, seqlen, head_dim = case.shape
    forward = 4.0 * batch * heads * seqlen * seqlen * head_dim * (0.5 if case.kwargs["causal"] else 1.0)
    return forward * {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[direction]


def ideal_bytes(case: Case, direction: str) -> int:
    elem = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    tensor = elem * case.shape[0] * case.shape[1] * case.shape[2] * case.shape[3]
    return tensor * {"fwd": 4, "bwd": 8, "fwd+bwd": 9}[direction]


def summary_group(case: Case, direction: str) -> str:
    """The issue's target: bf16, head dim 128, seq >= 4k, forward and backward, causal and not."""
    length = "seq >= 4k" if case.shape[2] >= 4096 else "seq < 4k"
    return f"{direction} {case.dtype} d{case.kwargs['head_dim']} {length}"


def _sdpa_context(backend: str):
    if backend not in SDPA_BASELINES:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(getattr(SDPBackend, SDPA_BASELINES[backend]))


def build(case: Case, backend: str, direction: str, device, compute_dtype: str | None = None):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype = getattr(torch, case.dtype)
    causal = case.kwargs["causal"]
    # q, k, v and the output gradient, drawn before anything runs; compute_dtype (the correctness matrix's
    # "float64") casts these very tensors.
    q, k, v, grad_out = (torch.randn(case.shape, dtype=torch.float16, device=device).to(dtype) for _ in range(4))
    if compute_dtype is not None:
        q, k, v, grad_out = (t.to(getattr(torch, compute_dtype)) for t in (q, k, v, grad_out))
    if backend == REFERENCE or backend in SDPA_BASELINES:
        def op(q, k, v):
            with _sdpa_context(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    else:
        if backend in ("cuda", WGMMA_VARIANT):  # the setting holds until the next build(): this row's timing
            os.environ[WGMMA_ENV] = "1" if backend == WGMMA_VARIANT else "0"
            backend = "cuda"

        def op(q, k, v):
            return dlkernels.attention(q, k, v, causal=causal, backend=backend)
    if direction == "fwd":
        return lambda: op(q, k, v)
    for t in (q, k, v):
        t.requires_grad_()
    if direction == "bwd":
        out = op(q, k, v)
        return lambda: torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True)[0]
    return lambda: torch.autograd.grad(op(q, k, v), (q, k, v), grad_out)[0]
