"""Fused BatchNorm(+add)+ReLU cases: the BatchNorm layers of ResNet-50, train and eval.

Baselines: PyTorch eager (F.batch_norm, then + residual, then relu: cuDNN's BN on GPU) and
torch.compile of the same function.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import dlkernels
from dlkernels.bench import REFERENCE, Case

FAMILY = "batch_norm"
EXTRA_BASELINES = ("torch_compile",)

# ResNet-50's BatchNorm inputs (C, H=W): stem, then the widths of each stage's 1x1/3x3 convs.
RESNET50_BN = [(64, 112), (64, 56), (256, 56), (128, 28), (512, 28), (256, 14), (1024, 14), (512, 7), (2048, 7)]
BATCH_128 = [(64, 112), (256, 56), (1024, 14)]
MODES = {  # name: keyword arguments of batch_norm_relu
    "train": dict(training=True),
    "train+add": dict(training=True, residual=True),
    "eval+add": dict(training=False, residual=True),
}
DTYPE_LAYOUTS = [("float16", "channels_last"), ("bfloat16", "channels_last"), ("float32", "nchw")]


def _expand(shapes) -> list[Case]:
    return [Case("batch_norm_relu", f"ResNet-50 BN, {mode}", shape, tuple(sorted(kwargs.items())), dtype, layout)
            for shape in shapes for mode, kwargs in MODES.items() for dtype, layout in DTYPE_LAYOUTS]


CASES = _expand([(32, c, s, s) for c, s in RESNET50_BN] + [(128, c, s, s) for c, s in BATCH_128])
SMALL_CASES = _expand([(2, 3, 5, 5), (3, 8, 3, 3)])

BYTES_COUNTED = ("fwd: input (+ residual) read and output written once; bwd: grad_output, output (ReLU mask) and "
                 "input read, grad_input (+ grad_residual) written once. Training statistics are extra reads "
                 "an ideal kernel still needs (they count against us)")

MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _torch_bn_relu(x, running_mean, running_var, weight, bias, training, residual):
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, 0.1, 1e-5)
    return torch.relu(y if residual is None else y + residual)


def build(case: Case, backend: str, direction: str, device, compute_dtype: str | None = None):
    torch.manual_seed(0)
    kwargs = case.kwargs
    dtype, fmt = getattr(torch, case.dtype), MEMORY_FORMATS[case.layout]
    draw = lambda: (torch.randn(case.shape, dtype=torch.float16, device=device).to(dtype)
                    .contiguous(memory_format=fmt))
    x = draw()
    residual = draw() if kwargs.get("residual") else None
    grad_values = draw()  # drawn before anything runs: every backend sees the same values
    channels = case.shape[1]
    stat = torch.float64 if dtype == torch.float64 else torch.float32
    weight = (torch.rand(channels, device=device) + 0.5).to(stat)
    bias = torch.randn(channels, device=device).to(stat)
    running_mean = torch.zeros(channels, device=device, dtype=stat)
    running_var = torch.ones(channels, device=device, dtype=stat)
    if compute_dtype is not None:  # the correctness matrix's float64 reference: these very tensors, cast
        x, residual, grad_values, weight, bias, running_mean, running_var = (
            None if t is None else t.to(getattr(torch, compute_dtype))
            for t in (x, residual, grad_values, weight, bias, running_mean, running_var))
    training = kwargs["training"]
    if backend == REFERENCE:
        op = _torch_bn_relu
    elif backend == "torch_compile":
        op = torch.compile(_torch_bn_relu)
    else:
        def op(x, running_mean, running_var, weight, bias, training, residual):
            return dlkernels.batch_norm_relu(x, running_mean, running_var, weight, bias, training,
                                             residual=residual, backend=backend)
    args = (running_mean, running_var, weight, bias, training, residual)
    if direction == "fwd":
        return lambda: op(x, *args)
    x.requires_grad_()
    weight.requires_grad_()
    out = op(x, *args)
    grad_out = torch.empty_like(out).copy_(grad_values)  # keeps out's layout
    return lambda: torch.autograd.grad(out, (x, weight), grad_out, retain_graph=True)[0]


def ideal_bytes(case: Case, direction: str) -> int:
    elem = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    full = math.prod(case.shape) * elem
    has_residual = bool(case.kwargs.get("residual"))
    if direction == "fwd":
        return full * (2 + has_residual)
    return full * (4 + has_residual)
