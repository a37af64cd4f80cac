"""Recurrent cases: the issue's LSTM and GRU shapes, plus the fused cell.

(seq, batch, input, hidden, layers, bidirectional): (100, 64, 512, 512, 1), (100, 64, 512, 512, 2, bidirectional),
(512, 10, 128, 256, 6) (KernelBench's LSTM), (28, 64, 28, 128, 2) (the MNIST-rows classifier) and (50, 1, 256, 256, 1)
(small-batch inference); fp32 and fp16; forward and forward + backward (the gradient of the input sequence).

Reference ("torch"): torch.nn.LSTM / GRU, i.e. cuDNN's persistent and per-step RNN kernels. Further baseline
"eager_cells": the same layers run step by step from PyTorch ops (x W_ih^T once, then per step one GEMM and the
pointwise gate math as separate kernels), what a model that loops over nn.LSTMCell-style code executes. The fused
cell case ("lstm_cell", "gru_cell": one step at batch 64, hidden 512) compares our one-launch step with torch's
nn.LSTMCell / GRUCell ("torch") and with that eager composition.
FLOPs count the GEMMs only: 2 * T * B * (input + hidden) * G * hidden per layer and direction (G = 4 LSTM, 3 GRU),
x3 for forward + backward.
"""
from __future__ import annotations

import copy

import torch

import dlkernels
from dlkernels.bench import REFERENCE, Case

FAMILY = "rnn"
DIRECTIONS = ("fwd", "fwd+bwd")
EXTRA_BASELINES = ("eager_cells",)
PRECISION_FLAGS = {"torch.backends.cudnn.allow_tf32": False, "torch.backends.cuda.matmul.allow_tf32": False}
GATES = {"lstm": 4, "gru": 3, "lstm_cell": 4, "gru_cell": 3}

# (workload, seq, batch, input, hidden, layers, bidirectional)
LAYERS = [("issue: 1 layer", 100, 64, 512, 512, 1, False), ("issue: 2 layers bidirectional", 100, 64, 512, 512, 2, True),
          ("KernelBench LSTM", 512, 10, 128, 256, 6, False), ("MNIST rows", 28, 64, 28, 128, 2, False),
          ("small-batch inference", 50, 1, 256, 256, 1, False)]
CELL = ("one step", 1, 64, 512, 512, 1, False)


def _case(op: str, layer, dtype: str) -> Case:
    workload, seq, batch, input_size, hidden, layers, bidirectional = layer
    params = (("bidirectional", bidirectional), ("hidden", hidden), ("layers", layers))
    return Case(op, workload, (seq, batch, input_size), params, dtype, "seq_first")


CASES = ([_case(op, layer, dtype) for op in ("lstm", "gru") for layer in LAYERS for dtype in ("float32", "float16")]
         + [_case(op, CELL, dtype) for op in ("lstm_cell", "gru_cell") for dtype in ("float32", "float16")])
SMALL_CASES = [_case(op, layer, dtype) for op in ("lstm", "gru", "lstm_cell", "gru_cell")
               for layer in (("small", 5, 3, 8, 16, 1, False), ("small bidirectional", 4, 2, 8, 16, 2, True))
               if not (op.endswith("cell") and layer[5] > 1)
               for dtype in ("float16", "bfloat16", "float32")]

BYTES_COUNTED = "weights, the input sequence and every layer's output sequence read or written once"


def _layer_inputs(case: Case) -> list[int]:
    kw = case.kwargs
    directions = 2 if kw["bidirectional"] else 1
    return [case.shape[2]] + [directions * kw["hidden"]] * (kw["layers"] - 1)


def flops(case: Case, direction: str) -> float:
    seq, batch, _ = case.shape
    kw = case.kwargs
    directions = 2 if kw["bidirectional"] else 1
    gemm = sum(2.0 * seq * batch * (size + kw["hidden"]) * GATES[case.op] * kw["hidden"] * directions
               for size in _layer_inputs(case))
    return gemm * (3.0 if direction == "fwd+bwd" else 1.0)


def ideal_bytes(case: Case, direction: str) -> int:
    seq, batch, _ = case.shape
    kw = case.kwargs
    elem = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    directions = 2 if kw["bidirectional"] else 1
    weights = sum(GATES[case.op] * kw["hidden"] * (size + kw["hidden"]) * directions for size in _layer_inputs(case))
    activations = seq * batch * (case.shape[2] + kw["layers"] * directions * kw["hidden"])
    return elem * (weights + activations) * (2 if direction == "fwd+bwd" else 1)


def summary_group(case: Case, direction: str) -> str:
    return f"{case.op} {direction} {case.dtype}"


def _torch_module(case: Case, device) -> torch.nn.Module:
    kw = case.kwargs
    dtype = getattr(torch, case.dtype)
    if case.op.endswith("_cell"):
        cls = torch.nn.LSTMCell if case.op == "lstm_cell" else torch.nn.GRUCell
        return cls(case.shape[2], kw["hidden"], device=device, dtype=dtype)
    cls = torch.nn.LSTM if case.op == "lstm" else torch.nn.GRU
    return cls(case.shape[2], kw["hidden"], kw["layers"], bidirectional=kw["bidirectional"], device=device,
               dtype=dtype)


def _eager_step(cell: str, x_proj, h, c, w_hh, b_hh):
    """One step from separate PyTorch ops: the composition a fused cell replaces."""
    gh = h @ w_hh.t() + (b_hh if b_hh is not None else 0)
    if cell == "lstm":
        i, f, g, o = (x_proj + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    r_x, z_x, n_x = x_proj.chunk(3, dim=-1)
    r_h, z_h, n_h = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
    n = torch.tanh(n_x + r * n_h)
    return (1 - z) * n + z * h, c


def _eager_cells(module: torch.nn.Module, cell: str, x: torch.Tensor) -> torch.Tensor:
    """The module's forward, step by step from PyTorch ops (no cuDNN RNN kernels)."""
    if isinstance(module, (torch.nn.LSTMCell, torch.nn.GRUCell)):
        zeros = x.new_zeros(x.shape[0], module.hidden_size)
        return _eager_step(cell, x @ module.weight_ih.t() + module.bias_ih, zeros, zeros, module.weight_hh,
                           module.bias_hh)[0]
    layer_input = x
    for layer in range(module.num_layers):
        outputs = []
        for suffix in ([f"_l{layer}", f"_l{layer}_reverse"] if module.bidirectional else [f"_l{layer}"]):
            w_ih, w_hh = getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix)
            b_ih, b_hh = getattr(module, "bias_ih" + suffix), getattr(module, "bias_hh" + suffix)
            x_proj = layer_input @ w_ih.t() + b_ih
            if cell == "lstm":  # LSTM's hidden bias folds into the projection; GRU's n gate needs it apart
                x_proj, b_hh = x_proj + b_hh, None
            h = c = x.new_zeros(x.shape[1], module.hidden_size)
            steps = range(x.shape[0] - 1, -1, -1) if suffix.endswith("reverse") else range(x.shape[0])
            hs = [None] * x.shape[0]
            for t in steps:
                h, c = _eager_step(cell, x_proj[t], h, c, w_hh, b_hh)
                hs[t] = h
            outputs.append(torch.stack(hs))
        layer_input = torch.cat(outputs, dim=-1)
    return layer_input


def _output_shape(case: Case) -> tuple[int, ...]:
    seq, batch, _ = case.shape
    kw = case.kwargs
    if case.op.endswith("_cell"):
        return batch, kw["hidden"]
    return seq, batch, (2 if kw["bidirectional"] else 1) * kw["hidden"]


def build(case: Case, backend: str, direction: str, device, compute_dtype: str | None = None):
    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cell = case.op.removesuffix("_cell")
    dtype = getattr(torch, case.dtype)
    module = _torch_module(case, device)
    seq, batch, input_size = case.shape
    shape = (batch, input_size) if case.op.endswith("_cell") else (seq, batch, input_size)
    x = torch.randn(shape, dtype=torch.float16, device=device).to(dtype)
    grad_out = torch.randn(_output_shape(case), dtype=torch.float16, device=device).to(dtype)
    if compute_dtype is not None:
        # The correctness matrix's float64 reference: this very module and these inputs, copied and cast. A module
        # made in float64 would be another network: torch's initialisation draws other values in each dtype.
        module = copy.deepcopy(module).to(getattr(torch, compute_dtype))
        x, grad_out = x.to(getattr(torch, compute_dtype)), grad_out.to(getattr(torch, compute_dtype))
    if backend == REFERENCE:
        def run(x):
            out = module(x)
            return out if case.op.endswith("_cell") and cell == "gru" else out[0]
    elif backend == "eager_cells":
        def run(x):
            return _eager_cells(module, cell, x)
    else:
        ours = dlkernels.convert(module, backend=backend)

        def run(x):
            out = ours(x)
            return out if case.op.endswith("_cell") and cell == "gru" else out[0]
    if direction == "fwd":
        def forward():
            with torch.no_grad():
                return run(x)
        return forward
    x.requires_grad_()
    return lambda: torch.autograd.grad(run(x), x, grad_out)[0]
