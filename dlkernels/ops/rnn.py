"""LSTM and GRU: fused cells and full multi-layer, (bi)directional layers, forward and backward.

Each layer and direction splits into (contract: csrc/include/dlk/rnn.h):
- the input projection for all timesteps, x_proj = x W_ih^T + biases: one large torch GEMM, whose
  autograd gives grad_x, grad_W_ih and the bias gradients as GEMMs / sums over all timesteps;
- the recurrence, our custom op dlk::rnn_layer: per step h_{t-1} W_hh^T fused with the gates and the
  state update. Its backward (dlk::rnn_layer_backward, backpropagation through time) returns the
  pre-activation gate gradients; grad_W_hh and GRU's grad_b_hh are then torch GEMMs / sums over all
  timesteps.
A cell is a layer of one step. Every backend implements rnn_layer_forward / rnn_layer_backward
(csrc/bindings/rnn.cpp, triton_kernels/rnn.py) under the same names and arguments.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from dlkernels._backends import capturing, dispatch, implementation
from dlkernels._library import define
from dlkernels._validation import FLOAT_DTYPES

GATES = {"lstm": 4, "gru": 3}


def _impl(backend: str):
    return implementation("rnn", backend)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- custom ops
def _rnn_layer_impl(cell: str, x_proj: Tensor, w_hh: Tensor, b_hh: Tensor | None, h0: Tensor, c0: Tensor | None,
                    lengths: Tensor | None, reverse: bool, training: bool,
                    backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(h_all, c_all, h_n, c_n, saved); c_all and saved are for the backward only."""
    return tuple(_impl(backend).rnn_layer_forward(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, training))


def _rnn_layer_fake(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, training, backend):
    steps, batch, hidden = x_proj.shape[0], x_proj.shape[1], w_hh.shape[1]
    acc = _acc_dtype(x_proj.dtype)
    lstm = cell == "lstm"
    c_all = x_proj.new_empty((steps, batch, hidden), dtype=acc) if lstm else x_proj.new_empty(0)
    c_n = x_proj.new_empty((batch, hidden)) if lstm else x_proj.new_empty(0)
    saved = x_proj.new_empty((steps, batch, 4 * hidden) if training else (0,), dtype=acc)
    return x_proj.new_empty((steps, batch, hidden)), c_all, x_proj.new_empty((batch, hidden)), c_n, saved


def _rnn_layer_backward_impl(cell: str, grad_h_all: Tensor | None, grad_h_n: Tensor | None, grad_c_n: Tensor | None,
                             w_hh: Tensor, h0: Tensor, c0: Tensor | None, h_all: Tensor, c_all: Tensor,
                             saved: Tensor, lengths: Tensor | None, reverse: bool,
                             backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(grad_x_proj, grad_gh, grad_h0, grad_c0): gate gradients in the accumulation dtype."""
    return tuple(_impl(backend).rnn_layer_backward(cell, grad_h_all, grad_h_n, grad_c_n, w_hh, h0, c0, h_all, c_all,
                                                   saved, lengths, reverse))


def _rnn_layer_backward_fake(cell, grad_h_all, grad_h_n, grad_c_n, w_hh, h0, c0, h_all, c_all, saved, lengths,
                             reverse, backend):
    lstm = cell == "lstm"
    grad_x_proj = h_all.new_empty((*h_all.shape[:2], GATES[cell] * h_all.shape[2]), dtype=_acc_dtype(h_all.dtype))
    grad_gh = grad_x_proj.new_empty(0) if lstm else torch.empty_like(grad_x_proj)
    grad_c0 = torch.empty_like(h0) if lstm else h0.new_empty(0)
    return grad_x_proj, grad_gh, torch.empty_like(h0), grad_c0


_rnn_layer_backward = define(
    "rnn_layer_backward(str cell, Tensor? grad_h_all, Tensor? grad_h_n, Tensor? grad_c_n, Tensor w_hh, Tensor h0, "
    "Tensor? c0, Tensor h_all, Tensor c_all, Tensor saved, Tensor? lengths, bool reverse, str backend) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
    _rnn_layer_backward_impl, _rnn_layer_backward_fake)


def _previous_states(h_all: Tensor, h0: Tensor, lengths: Tensor | None, reverse: bool) -> Tensor:
    """h_{t-1}: the state each step t started from, (T, B, H). Padded steps have zero gate gradients,
    so what they hold does not matter."""
    if not reverse:
        return torch.cat([h0.unsqueeze(0), h_all[:-1]])
    following = torch.cat([h_all[1:], h0.unsqueeze(0)])  # reverse: step t follows step t + 1 ...
    if lengths is None:
        return following
    # ... except at each sequence's last valid step, where the reverse direction starts from h0.
    steps = torch.arange(h_all.shape[0], device=h_all.device).unsqueeze(1)
    starts = (steps + 1 >= lengths.unsqueeze(0)).unsqueeze(2)
    return torch.where(starts, h0.unsqueeze(0), following)


def _setup_context(ctx, inputs, output):
    cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, training, backend = inputs
    h_all, c_all, h_n, c_n, saved = output
    ctx.mark_non_differentiable(c_all, saved)  # internal state for the backward, never returned to users
    ctx.set_materialize_grads(False)  # unused outputs (often h_all or h_n) cost no zero tensors
    ctx.save_for_backward(w_hh, h0, c0, h_all, c_all, saved, lengths)
    ctx.options = (cell, reverse, backend)


def _contiguous_or_none(grad: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if grad is None else grad.to(dtype).contiguous()


def _backward(ctx, grad_h_all, grad_c_all, grad_h_n, grad_c_n, grad_saved):
    w_hh, h0, c0, h_all, c_all, saved, lengths = ctx.saved_tensors
    cell, reverse, backend = ctx.options
    dtype = h_all.dtype
    grad_x_proj, grad_gh, grad_h0, grad_c0 = _rnn_layer_backward(
        cell, _contiguous_or_none(grad_h_all, dtype), _contiguous_or_none(grad_h_n, dtype),
        _contiguous_or_none(grad_c_n, dtype) if cell == "lstm" else None, w_hh, h0, c0, h_all, c_all, saved, lengths,
        reverse, backend)
    if cell == "lstm":  # LSTM's recurrent and input pre-activations are the same sum
        grad_gh = grad_x_proj
    _, need_x_proj, need_w_hh, need_b_hh, need_h0, need_c0 = ctx.needs_input_grad[:6]
    grad_w_hh = grad_b_hh = None
    if need_w_hh:
        # sum over all timesteps of grad_gh_t^T h_{t-1}: one GEMM in the input dtype (fp32 accumulation
        # on tensor cores), as cuDNN forms its weight gradients.
        h_prev = _previous_states(h_all, h0, lengths, reverse)
        grad_w_hh = grad_gh.flatten(0, 1).to(dtype).t().mm(h_prev.flatten(0, 1))
    if need_b_hh:
        grad_b_hh = grad_gh.sum((0, 1)).to(dtype)
    return (None, grad_x_proj.to(dtype) if need_x_proj else None, grad_w_hh, grad_b_hh,
            grad_h0 if need_h0 else None, grad_c0 if need_c0 and cell == "lstm" else None, None, None, None, None)


_rnn_layer = define(
    "rnn_layer(str cell, Tensor x_proj, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor? c0, Tensor? lengths, "
    "bool reverse, bool training, str backend) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _rnn_layer_impl, _rnn_layer_fake, setup_context=_setup_context, backward=_backward)


def _run_layer(cell: str, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
               h0: Tensor, c0: Tensor | None, lengths: Tensor | None, reverse: bool,
               backend: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """One layer, one direction over x (T, B, I): (h_all, h_n, c_n)."""
    if cell == "lstm":  # both biases add to the same pre-activation: fold them into the GEMM
        x_proj = F.linear(x, w_ih, None if b_ih is None else b_ih + b_hh)
        recurrent_bias = None
    else:  # GRU's n gate needs r * (h W_hn^T + b_hn): b_hh stays with the recurrence
        x_proj = F.linear(x, w_ih, b_ih)
        recurrent_bias = b_hh
    tensors = (x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    contiguous = lambda t: None if t is None else t.contiguous()
    h_all, _, h_n, c_n, _ = _rnn_layer(cell, x_proj.contiguous(), w_hh.contiguous(), contiguous(recurrent_bias),
                                       h0.contiguous(), contiguous(c0), lengths, reverse, needs_grad, backend)
    return h_all, h_n, c_n if cell == "lstm" else None


# ----------------------------------------------------------------------------- validation
def _describe(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')} on {t.device}"


def _check_like(op: str, name: str, value, input: Tensor, shape: tuple | None = None) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != input.dtype:
        raise TypeError(f"{op}: {name} dtype {value.dtype} does not match the input's {input.dtype}")
    if value.device != input.device:
        raise ValueError(f"{op}: {name} is on {value.device} but the input is on {input.device}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(value.shape)}")


def _check_input(op: str, input, ranks: tuple[int, ...], backend: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() not in ranks:
        raise ValueError(f"{op}: input must be {' or '.join(f'{r}-D' for r in ranks)}, got shape {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: input has unsupported dtype {input.dtype}; supported: float16, bfloat16, float32, "
                        "float64")
    if input.numel() == 0:
        raise ValueError(f"{op}: input must not be empty, got shape {tuple(input.shape)}")
    if input.dtype == torch.float64 and backend != "reference":
        raise TypeError(f"{op}: float64 runs only on the C++ reference (backend='reference'), not on {backend!r}")


def _check_weights(op: str, cell: str, input: Tensor, w_ih, w_hh, b_ih, b_hh, input_size: int,
                   suffix: str = "") -> int:
    """Checks one layer-direction's parameters; returns the hidden size."""
    gates = GATES[cell]
    _check_like(op, f"w_ih{suffix}", w_ih, input)
    _check_like(op, f"w_hh{suffix}", w_hh, input)
    if w_hh.dim() != 2 or w_hh.shape[0] != gates * w_hh.shape[1] or w_hh.numel() == 0:
        raise ValueError(f"{op}: w_hh{suffix} must have shape ({gates}*hidden_size, hidden_size), got "
                         f"{tuple(w_hh.shape)}")
    hidden = w_hh.shape[1]
    if w_ih.dim() != 2 or w_ih.shape[0] != gates * hidden:
        raise ValueError(f"{op}: w_ih{suffix} must have shape ({gates * hidden}, input_size), got {tuple(w_ih.shape)}")
    if w_ih.shape[1] != input_size:
        raise ValueError(f"{op}: input size mismatch: input.size(-1) must be equal to input_size. Expected "
                         f"{w_ih.shape[1]} (from w_ih{suffix}), got {input_size}")
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{op}: b_ih{suffix} and b_hh{suffix} must both be given or both be None")
    for name, bias in ((f"b_ih{suffix}", b_ih), (f"b_hh{suffix}", b_hh)):
        if bias is not None:
            _check_like(op, name, bias, input, (gates * hidden,))
    return hidden


def _check_lengths(op: str, lengths, batch: int, steps: int, device: torch.device) -> Tensor | None:
    """lengths as the kernels take them: int32 on the input's device, each in [1, T]."""
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"{op}: lengths must be an integer tensor, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"{op}: lengths must have shape ({batch},) (one per sequence), got {tuple(lengths.shape)}")
    if capturing():  # the range check reads lengths on the host, and a host copy to the GPU cannot be captured
        raise ValueError(f"{op}: lengths cannot be checked while a CUDA graph is captured; pad the sequences "
                         "(lengths=None) or run eagerly")
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > steps:
        raise ValueError(f"{op}: lengths must lie in [1, {steps}] (the padded sequence length), got values in "
                         f"[{low}, {high}]")
    return lengths.to(device=device, dtype=torch.int32).contiguous()


# ----------------------------------------------------------------------------- cells
def _prepare_cell(op: str, cell: str, input: Tensor, h: Tensor | None, c: Tensor | None, w_ih: Tensor,
                  w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, backend: str):
    """Validates a cell call for our `backend`; returns the thunk that runs it."""
    _check_input(op, input, (1, 2), backend)
    hidden = _check_weights(op, cell, input, w_ih, w_hh, b_ih, b_hh, input.shape[-1])
    batched = input.dim() == 2
    state_shape = (input.shape[0], hidden) if batched else (hidden,)
    states = [h, c] if cell == "lstm" else [h]
    for index, (name, state) in enumerate(zip(("h", "c"), states)):
        if state is None:
            states[index] = input.new_zeros(state_shape)
        else:
            _check_like(op, name, state, input, state_shape)
    if not batched:  # one sample: a batch of one
        input, states = input.unsqueeze(0), [s.unsqueeze(0) for s in states]
    h0, c0 = states[0], states[1] if cell == "lstm" else None

    def run():
        _, h_n, c_n = _run_layer(cell, input.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, h0, c0, None, False, backend)
        if not batched:
            h_n, c_n = h_n.squeeze(0), None if c_n is None else c_n.squeeze(0)
        return (h_n, c_n) if cell == "lstm" else h_n
    return run


def _torch_cell(cell: str, input, h, c, w_ih, w_hh, b_ih, b_hh):
    """torch's own cell kernel, called as torch.nn.LSTMCell / GRUCell call it (zero states, unbatched input)."""
    if not isinstance(input, Tensor) or input.dim() != 1:
        batched_input, squeeze = input, False
    else:
        batched_input, squeeze = input.unsqueeze(0), True
        h, c = (None if state is None else state.unsqueeze(0) for state in (h, c))
    if h is None or cell == "lstm" and c is None:
        hidden = w_hh.shape[1] if isinstance(w_hh, Tensor) else 0
        zeros = torch.zeros(batched_input.shape[0], hidden, dtype=batched_input.dtype, device=batched_input.device)
        h, c = zeros if h is None else h, zeros if c is None else c
    if cell == "lstm":
        h_n, c_n = torch.lstm_cell(batched_input, (h, c), w_ih, w_hh, b_ih, b_hh)
        return (h_n.squeeze(0), c_n.squeeze(0)) if squeeze else (h_n, c_n)
    h_n = torch.gru_cell(batched_input, h, w_ih, w_hh, b_ih, b_hh)
    return h_n.squeeze(0) if squeeze else h_n


def lstm_cell(x: Tensor, h: Tensor | None, c: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
              b_hh: Tensor | None = None, *, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """One LSTM step, torch.nn.LSTMCell's math (gates i, f, g, o): returns (h', c').

    x (B, input_size) or (input_size,); h, c (B, hidden) or (hidden,), None for zeros.
    backend: "auto" (torch on CPU; on GPU ours where the policy says so, torch for the rest), "cuda",
    "triton", "reference" (C++; the only one of ours taking float64) or "torch" (torch.lstm_cell).
    """
    return dispatch("lstm_cell", backend, x,
                    lambda chosen: _prepare_cell("lstm_cell", "lstm", x, h, c, w_ih, w_hh, b_ih, b_hh, chosen),
                    lambda: _torch_cell("lstm", x, h, c, w_ih, w_hh, b_ih, b_hh))


def gru_cell(x: Tensor, h: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """One GRU step, torch.nn.GRUCell's math (gates r, z, n): returns h'. Backends as `lstm_cell`
    ("torch": torch.gru_cell)."""
    return dispatch("gru_cell", backend, x,
                    lambda chosen: _prepare_cell("gru_cell", "gru", x, h, None, w_ih, w_hh, b_ih, b_hh, chosen),
                    lambda: _torch_cell("gru", x, h, None, w_ih, w_hh, b_ih, b_hh))


# ----------------------------------------------------------------------------- full layers
def _prepare_rnn(op: str, cell: str, input: Tensor, hx, params: Sequence[Tensor], num_layers: int,
                 bidirectional: bool, batch_first: bool, dropout: float, training: bool, lengths, backend: str):
    """Validates a full-layer call for our `backend`; returns the thunk that runs it."""
    _check_input(op, input, (2, 3), backend)
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"{op}: num_layers must be a positive int, got {num_layers!r}")
    if not 0.0 <= float(dropout) <= 1.0:
        raise ValueError(f"{op}: dropout must be in [0, 1], got {dropout}")
    directions = 2 if bidirectional else 1
    params = list(params)
    if len(params) not in (2 * num_layers * directions, 4 * num_layers * directions):
        raise ValueError(f"{op}: params must hold (w_ih, w_hh[, b_ih, b_hh]) per layer and direction: "
                         f"{2 * num_layers * directions} or {4 * num_layers * directions} tensors for "
                         f"num_layers={num_layers}, bidirectional={bidirectional}; got {len(params)}")
    per_layer = len(params) // (num_layers * directions)

    batched = input.dim() == 3
    if not batched:
        input = input.unsqueeze(0 if batch_first else 1)
    x = input.transpose(0, 1) if batch_first else input  # (T, B, I)
    steps, batch = x.shape[0], x.shape[1]

    layer_weights, hidden, layer_input_size = [], None, x.shape[2]
    for layer in range(num_layers):
        for direction in range(directions):
            index = layer * directions + direction
            weights = params[index * per_layer:(index + 1) * per_layer]
            w_ih, w_hh, b_ih, b_hh = (*weights, None, None) if per_layer == 2 else weights
            suffix = f" (layer {layer}{', reverse' if direction else ''})"
            size = _check_weights(op, cell, x, w_ih, w_hh, b_ih, b_hh, layer_input_size, suffix)
            if hidden is not None and size != hidden:
                raise ValueError(f"{op}: every layer must have the same hidden size; got {hidden} and {size}")
            hidden = size
            layer_weights.append((w_ih, w_hh, b_ih, b_hh))
        layer_input_size = hidden * directions

    state_shape = (num_layers * directions, batch, hidden)
    names = ("h0", "c0") if cell == "lstm" else ("h0",)
    if hx is None:
        states = [x.new_zeros(state_shape) for _ in names]
    else:
        states = list(hx) if cell == "lstm" else [hx]
        if len(states) != len(names):
            raise ValueError(f"{op}: hx must be a pair (h0, c0), got {len(states)} tensors")
        for index, (name, state) in enumerate(zip(names, states)):
            expected = state_shape if batched else (state_shape[0], state_shape[2])
            _check_like(op, name, state, x, expected)
            states[index] = state if batched else state.unsqueeze(1)
    lengths = _check_lengths(op, lengths, batch, steps, x.device)
    return lambda: _run_rnn(cell, x, states, layer_weights, num_layers, directions, batch_first, batched, dropout,
                            training, lengths, backend)


def _run_rnn(cell: str, x: Tensor, states: list[Tensor], layer_weights: list, num_layers: int, directions: int,
             batch_first: bool, batched: bool, dropout: float, training: bool, lengths: Tensor | None, backend: str):
    h_n, c_n, layer_input = [], [], x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            h_all, h_last, c_last = _run_layer(cell, layer_input, *layer_weights[index], states[0][index],
                                               states[1][index] if cell == "lstm" else None, lengths,
                                               bool(direction), backend)
            outputs.append(h_all)
            h_n.append(h_last)
            c_n.append(c_last)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:  # between layers, as torch.nn.LSTM
            layer_input = F.dropout(layer_input, dropout, training=True)

    output = layer_input.transpose(0, 1) if batch_first else layer_input
    final = [torch.stack(h_n)] + ([torch.stack(c_n)] if cell == "lstm" else [])
    if not batched:
        output = output.squeeze(0 if batch_first else 1)
        final = [state.squeeze(1) for state in final]
    return (output, tuple(final)) if cell == "lstm" else (output, final[0])


def _check_torch_input_sizes(input, params, num_layers, directions: int) -> None:
    """torch.lstm does not check w_ih against its input (torch.nn.LSTM does, in Python) and reads past
    the end of w_ih where the input is wider: raise torch.nn.LSTM's error instead of returning garbage."""
    groups = num_layers * directions if isinstance(num_layers, int) else 0
    if not isinstance(input, Tensor) or not isinstance(params, list) or groups <= 0 or len(params) % groups:
        return
    per_layer = len(params) // groups
    expected = input.shape[-1] if input.dim() else 0
    for layer in range(num_layers):
        widths = set()
        for direction in range(directions):
            w_ih, w_hh = params[(layer * directions + direction) * per_layer:][:2]
            if not all(isinstance(w, Tensor) and w.dim() == 2 for w in (w_ih, w_hh)):
                return
            if w_ih.shape[1] != expected:
                where = "" if layer == 0 else f" (layer {layer})"
                raise RuntimeError(f"input.size(-1) must be equal to input_size{where}. Expected {w_ih.shape[1]}, "
                                   f"got {expected}")
            widths.add(w_hh.shape[1])
        if len(widths) != 1:
            return
        expected = directions * widths.pop()


def _torch_rnn(cell: str, input, hx, params, num_layers, bidirectional, batch_first, dropout, training, lengths):
    """torch's own torch.lstm / torch.gru, called as torch.nn.LSTM / GRU call them: zero initial states
    for hx=None, and `lengths` through a packed sequence (unsorted order kept, as nn.LSTM keeps it)."""
    params = list(params) if isinstance(params, (list, tuple)) else params
    directions = 2 if bidirectional else 1
    _check_torch_input_sizes(input, params, num_layers, directions)
    has_biases = isinstance(params, list) and len(params) == 4 * num_layers * directions
    run = torch.lstm if cell == "lstm" else torch.gru
    batched = not isinstance(input, Tensor) or input.dim() != 2
    if hx is None:
        hidden = params[1].shape[1] if isinstance(params, list) and len(params) > 1 else 0
        batch = input.shape[0 if batch_first else 1] if batched and isinstance(input, Tensor) else None
        shape = (num_layers * directions, *(() if batch is None else (batch,)), hidden)
        zeros = torch.zeros(shape, dtype=input.dtype, device=input.device)
        hx = (zeros, zeros) if cell == "lstm" else zeros
    states = list(hx) if cell == "lstm" else [hx]
    if lengths is None:
        if not batched:  # torch.lstm takes batched input only; nn.LSTM adds the batch dimension
            input, states = input.unsqueeze(0 if batch_first else 1), [s.unsqueeze(1) for s in states]
        output, *final = run(input, states if cell == "lstm" else states[0], params, has_biases, num_layers,
                             float(dropout), training, bidirectional, batch_first)
        if not batched:
            output, final = output.squeeze(0 if batch_first else 1), [s.squeeze(1) for s in final]
    else:
        lengths = torch.as_tensor(lengths).to("cpu", torch.int64)
        packed = pack_padded_sequence(input, lengths, batch_first, enforce_sorted=False)
        order = packed.sorted_indices
        states = [s.index_select(1, order) for s in states]
        data, *final = run(packed.data, packed.batch_sizes, states if cell == "lstm" else states[0], params,
                           has_biases, num_layers, float(dropout), training, bidirectional)
        output, _ = pad_packed_sequence(
            PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), batch_first,
            total_length=input.shape[1 if batch_first else 0])
        final = [s.index_select(1, packed.unsorted_indices) for s in final]
    return (output, tuple(final)) if cell == "lstm" else (output, final[0])


def lstm(input: Tensor, hx: tuple[Tensor, Tensor] | None, params: Sequence[Tensor], num_layers: int,
         bidirectional: bool = False, batch_first: bool = False, dropout: float = 0.0, training: bool = False, *,
         lengths: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Multi-layer (bidirectional) LSTM over a sequence, torch.nn.LSTM's math: (output, (h_n, c_n)).

    input (T, B, I), (B, T, I) with batch_first, or unbatched (T, I); hx = (h0, c0), each
    (num_layers * directions, B, H), or None for zeros. params: per layer, then per direction
    (forward, reverse), w_ih, w_hh and, with biases, b_ih, b_hh (torch.nn.LSTM's _flat_weights order).
    Dropout applies to every layer's output but the last, when training. lengths (B,) makes a padded
    batch behave as a packed one: sequence b has lengths[b] valid steps, its outputs beyond are zero
    and (h_n, c_n) hold its state after its last valid step.
    backend: "auto" (torch on CPU; on GPU ours where the policy says so, torch for the rest), "cuda",
    "triton", "reference" (C++; the only one of ours taking float64) or "torch" (torch.lstm, with
    lengths through a packed sequence).
    """
    return dispatch("lstm", backend, input,
                    lambda chosen: _prepare_rnn("lstm", "lstm", input, hx, params, num_layers, bidirectional,
                                                batch_first, dropout, training, lengths, chosen),
                    lambda: _torch_rnn("lstm", input, hx, params, num_layers, bidirectional, batch_first, dropout,
                                       training, lengths))


def gru(input: Tensor, hx: Tensor | None, params: Sequence[Tensor], num_layers: int, bidirectional: bool = False,
        batch_first: bool = False, dropout: float = 0.0, training: bool = False, *, lengths: Tensor | None = None,
        backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Multi-layer (bidirectional) GRU, torch.nn.GRU's math: (output, h_n). Arguments and backends as
    `lstm` ("torch": torch.gru)."""
    return dispatch("gru", backend, input,
                    lambda chosen: _prepare_rnn("gru", "gru", input, hx, params, num_layers, bidirectional,
                                                batch_first, dropout, training, lengths, chosen),
                    lambda: _torch_rnn("gru", input, hx, params, num_layers, bidirectional, batch_first, dropout,
                                       training, lengths))
