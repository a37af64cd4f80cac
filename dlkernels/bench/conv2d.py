"""Convolution cases: every 3x3 and 1x1 layer of ResNet-50 and VGG-16, AlexNet conv1 and a depthwise
layer, at batch 1, 32 and 128; forward, data gradient (dgrad) and weight gradient (wgrad).

Reference: F.conv2d with torch.backends.cudnn.benchmark=True (cuDNN picks its fastest algorithm per
shape) and TF32 off, so fp32 rows compare exact fp32 with exact fp32. Ours: the direct kernels, the
Winograd kernels (3x3 stride-1 layers; fwd and dgrad, its wgrad is the direct kernel), and the fused
conv+bias+ReLU epilogue against cuDNN's conv followed by PyTorch's bias add and ReLU.
TFLOP/s use the direct convolution's FLOP count (2*N*K*P*Q*C/groups*R*S per direction), so Winograd's
saved multiplications show up as speed.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import dlkernels
from dlkernels.bench import REFERENCE, Case

FAMILY = "conv2d"
DIRECTIONS = ("fwd", "dgrad", "wgrad")
PRECISION_FLAGS = {"torch.backends.cudnn.benchmark": True, "torch.backends.cudnn.allow_tf32": False,
                   "torch.backends.cuda.matmul.allow_tf32": False}


def pin_precision() -> None:
    """PRECISION_FLAGS, set before every case (the flags are process-wide and other code may change them)."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

# (workload, C, K, input H=W, kernel, stride, padding, groups)
RESNET50 = [
    ("ResNet-50 1x1", 64, 64, 56, 1, 1, 0, 1), ("ResNet-50 3x3", 64, 64, 56, 3, 1, 1, 1),
    ("ResNet-50 1x1", 64, 256, 56, 1, 1, 0, 1), ("ResNet-50 1x1", 256, 64, 56, 1, 1, 0, 1),
    ("ResNet-50 1x1", 256, 128, 56, 1, 1, 0, 1), ("ResNet-50 3x3 s2", 128, 128, 56, 3, 2, 1, 1),
    ("ResNet-50 1x1 s2", 256, 512, 56, 1, 2, 0, 1), ("ResNet-50 1x1", 128, 512, 28, 1, 1, 0, 1),
    ("ResNet-50 1x1", 512, 128, 28, 1, 1, 0, 1), ("ResNet-50 3x3", 128, 128, 28, 3, 1, 1, 1),
    ("ResNet-50 1x1", 512, 256, 28, 1, 1, 0, 1), ("ResNet-50 3x3 s2", 256, 256, 28, 3, 2, 1, 1),
    ("ResNet-50 1x1 s2", 512, 1024, 28, 1, 2, 0, 1), ("ResNet-50 1x1", 256, 1024, 14, 1, 1, 0, 1),
    ("ResNet-50 1x1", 1024, 256, 14, 1, 1, 0, 1), ("ResNet-50 3x3", 256, 256, 14, 3, 1, 1, 1),
    ("ResNet-50 1x1", 1024, 512, 14, 1, 1, 0, 1), ("ResNet-50 3x3 s2", 512, 512, 14, 3, 2, 1, 1),
    ("ResNet-50 1x1 s2", 1024, 2048, 14, 1, 2, 0, 1), ("ResNet-50 1x1", 512, 2048, 7, 1, 1, 0, 1),
    ("ResNet-50 1x1", 2048, 512, 7, 1, 1, 0, 1), ("ResNet-50 3x3", 512, 512, 7, 3, 1, 1, 1),
]
VGG16 = [("VGG-16 3x3", c, k, s, 3, 1, 1, 1) for c, k, s in
         [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56),
          (256, 512, 28), (512, 512, 28), (512, 512, 14)]]
OTHERS = [("AlexNet conv1 11x11 s4", 3, 64, 224, 11, 4, 2, 1), ("depthwise 3x3", 144, 144, 56, 3, 1, 1, 144)]
LAYERS = RESNET50 + VGG16 + OTHERS
BATCHES = (1, 32, 128)
DTYPE_LAYOUTS = [("float16", "channels_last"), ("bfloat16", "channels_last"), ("float32", "nchw")]
WINOGRAD_ALGOS = ("winograd_2x2", "winograd_4x4")


def _case(op, layer, batch, dtype, layout, **extra) -> Case:
    workload, c, k, size, kernel, stride, padding, groups = layer
    params = dict(out_channels=k, kernel_size=kernel, stride=stride, padding=padding, groups=groups, **extra)
    return Case(op, workload, (batch, c, size, size), tuple(sorted(params.items())), dtype, layout)


def _winograd_eligible(layer) -> bool:
    _, c, _, _, kernel, stride, _, groups = layer
    return kernel == 3 and stride == 1 and groups == 1 and c >= 16


def _expand(layers, batches) -> list[Case]:
    cases = []
    for layer in layers:
        for batch in batches:
            for dtype, layout in DTYPE_LAYOUTS:
                cases.append(_case("conv2d", layer, batch, dtype, layout, algo="direct"))
                if _winograd_eligible(layer):
                    cases += [_case("conv2d", layer, batch, dtype, layout, algo=a) for a in WINOGRAD_ALGOS]
                if batch >= 32:
                    cases.append(_case("conv2d+bias+relu", layer, batch, dtype, layout, algo="direct"))
    return cases


CASES = _expand(LAYERS, BATCHES)
SMALL_CASES = _expand([("small 3x3", 16, 16, 6, 3, 1, 1, 1), ("small 1x1 s2", 8, 4, 5, 1, 2, 0, 1),
                       ("small depthwise", 4, 4, 5, 3, 1, 1, 4)], (2,))

BYTES_COUNTED = "input, weight and output (or their gradients) read or written once"
MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def directions_for(case: Case) -> tuple[str, ...]:
    if case.op == "conv2d+bias+relu":
        return ("fwd",)  # the epilogue only changes the forward
    return ("fwd", "dgrad") if case.kwargs["algo"].startswith("winograd") else DIRECTIONS


def error_factor(case: Case) -> float:
    """The correctness matrix's bar: 2x torch's error, except Winograd, which loses what its transforms cost
    (bounds measured on the C++ reference, as in tests/test_conv2d.py)."""
    return {"winograd_2x2": 4.0, "winograd_4x4": 64.0}.get(case.kwargs["algo"], 2.0)


def summary_group(case: Case, direction: str) -> str:
    """Rows the table summarises with one geometric mean, as the issue states its targets: direct over all
    layers, Winograd over the 3x3 stride-1 layers, the fused epilogue; split by batch size and dtype."""
    batch = "batch >= 32" if case.shape[0] >= 32 else "batch 1"
    return f"{case.op} {case.kwargs['algo']} {direction}, {batch}, {case.dtype}"


def _output_shape(case: Case) -> tuple[int, int, int, int]:
    n, _, h, w = case.shape
    kw = case.kwargs
    out = lambda size: (size + 2 * kw["padding"] - kw["kernel_size"]) // kw["stride"] + 1
    return n, kw["out_channels"], out(h), out(w)


def flops(case: Case, direction: str) -> float:
    n, k, p, q = _output_shape(case)
    kw = case.kwargs
    return 2.0 * n * k * p * q * (case.shape[1] // kw["groups"]) * kw["kernel_size"] ** 2


def ideal_bytes(case: Case, direction: str) -> int:
    elem = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    kw = case.kwargs
    weight = kw["out_channels"] * (case.shape[1] // kw["groups"]) * kw["kernel_size"] ** 2
    return elem * (math.prod(case.shape) + weight + math.prod(_output_shape(case)))


def build(case: Case, backend: str, direction: str, device, compute_dtype: str | None = None):
    torch.manual_seed(0)
    pin_precision()
    kw = case.kwargs
    dtype, fmt = getattr(torch, case.dtype), MEMORY_FORMATS[case.layout]
    fan_in = case.shape[1] // kw["groups"] * kw["kernel_size"] ** 2
    draw = lambda shape, scale=1.0: ((torch.randn(shape, dtype=torch.float16, device=device) * scale).to(dtype)
                                     .contiguous(memory_format=fmt))
    x = draw(case.shape)
    weight = draw((kw["out_channels"], case.shape[1] // kw["groups"], kw["kernel_size"], kw["kernel_size"]),
                  fan_in**-0.5)
    fused = case.op == "conv2d+bias+relu"
    bias = torch.randn(kw["out_channels"], device=device).to(dtype) if fused else None
    grad_values = draw(_output_shape(case))  # drawn before anything runs: every backend sees the same values
    if compute_dtype is not None:  # the correctness matrix's float64 reference: these very tensors, cast
        x, weight, bias, grad_values = (None if t is None else t.to(getattr(torch, compute_dtype))
                                        for t in (x, weight, bias, grad_values))
    conv_args = dict(stride=kw["stride"], padding=kw["padding"], groups=kw["groups"])
    if backend == REFERENCE:
        def op(x, weight, bias):
            y = F.conv2d(x, weight, None, **conv_args)
            return torch.relu(y + bias.view(1, -1, 1, 1)) if fused else y
    else:
        def op(x, weight, bias):
            return dlkernels.conv2d(x, weight, bias, **conv_args, algo=kw["algo"],
                                    activation="relu" if fused else None, backend=backend)
    if direction == "fwd":
        return lambda: op(x, weight, bias)
    wanted = x if direction == "dgrad" else weight
    wanted.requires_grad_()
    out = op(x, weight, bias)
    grad_out = torch.empty_like(out).copy_(grad_values)  # keeps out's layout
    return lambda: torch.autograd.grad(out, wanted, grad_out, retain_graph=True)[0]
