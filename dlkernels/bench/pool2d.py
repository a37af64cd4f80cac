"""Pooling cases for the benchmark: the layers of well-known CNNs, every dtype x layout."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

import dlkernels
from dlkernels.bench import REFERENCE, Case

FAMILY = "pool2d"

# op, workload, keyword arguments, benchmark input (N, C, H, W), small input for the CPU matrix.
# Small shapes are odd-sized where the real ones are not, so partial windows and padding get checked.
WORKLOADS = [
    ("max_pool2d", "ResNet stem", dict(kernel_size=3, stride=2, padding=1), (32, 64, 112, 112), (2, 3, 11, 11)),
    ("max_pool2d", "VGG block 1", dict(kernel_size=2, stride=2), (32, 64, 224, 224), (2, 3, 10, 9)),
    ("max_pool2d", "VGG block 4", dict(kernel_size=2, stride=2), (32, 512, 28, 28), (2, 8, 8, 8)),
    ("avg_pool2d", "GoogLeNet 3x3", dict(kernel_size=3, stride=1, padding=1), (32, 192, 28, 28), (2, 3, 9, 9)),
    ("adaptive_avg_pool2d", "ResNet-50 head", dict(output_size=1), (32, 2048, 7, 7), (2, 6, 7, 7)),
]
DTYPES = ("float16", "float32")
LAYOUTS = ("nchw", "channels_last")


def _expand(small: bool) -> list[Case]:
    return [Case(op, workload, small_shape if small else shape, tuple(sorted(kwargs.items())), dtype, layout)
            for op, workload, kwargs, shape, small_shape in WORKLOADS
            for dtype in DTYPES for layout in LAYOUTS]


CASES = _expand(small=False)
SMALL_CASES = _expand(small=True)

BYTES_COUNTED = ("input and output (fwd), or grad_output and grad_input (bwd), each once at the dtype's size, "
                 "plus max pooling's int64 indices (written by fwd, read by bwd)")

TORCH_OPS = {"max_pool2d": F.max_pool2d, "avg_pool2d": F.avg_pool2d, "adaptive_avg_pool2d": F.adaptive_avg_pool2d}
MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def build(case: Case, backend: str, direction: str, device, compute_dtype: str | None = None):
    torch.manual_seed(0)
    # Drawn in float16 and cast to the case's dtype; the gradient is drawn before anything runs, so every backend
    # sees the same values. compute_dtype (the correctness matrix's "float64") casts those very tensors.
    dtype = getattr(torch, case.dtype)
    x = (torch.randn(case.shape, dtype=torch.float16, device=device)
         .to(dtype).contiguous(memory_format=MEMORY_FORMATS[case.layout]))
    grad_values = torch.randn(_output_shape(case), dtype=torch.float16, device=device).to(dtype)
    if compute_dtype is not None:
        x, grad_values = x.to(getattr(torch, compute_dtype)), grad_values.to(getattr(torch, compute_dtype))
    op = TORCH_OPS[case.op] if backend == REFERENCE else functools.partial(getattr(dlkernels, case.op), backend=backend)
    if direction == "fwd":
        return lambda: op(x, **case.kwargs)
    x.requires_grad_()
    out = op(x, **case.kwargs)
    grad_out = torch.empty_like(out).copy_(grad_values)  # keeps out's layout
    return lambda: torch.autograd.grad(out, x, grad_out, retain_graph=True)[0]


def _output_shape(case: Case) -> torch.Size:
    return TORCH_OPS[case.op](torch.empty(case.shape, device="meta"), **case.kwargs).shape


def ideal_bytes(case: Case, direction: str) -> int:
    out_shape = _output_shape(case)
    elem = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    moved = (math.prod(case.shape) + math.prod(out_shape)) * elem
    return moved + (8 * math.prod(out_shape) if case.op == "max_pool2d" else 0)
