"""Cases for dlkernels.lstm, gru, lstm_cell and gru_cell: see tests/cases/__init__.py.

Tiles. The Triton step kernels give each program BLOCK_B batch rows x BLOCK_H hidden units (all
gates) and walk the recurrent GEMM in BLOCK_K steps (over H forward, over G*H in the backward); the
grid's axis 0 counts hidden tiles and axis 1 batch tiles. The interpreter runs the first autotune
config only, read here from the kernel module. Cases put B and H below, at and above one tile, with
different tile counts along the two axes (so a swapped grid axis or a row/column mix-up leaves
tiles unwritten), and H just over BLOCK_K (a K-loop tail). The C++ reference has no tiles; its one
size threshold, kMinParallelStepWork (B * G*H * H multiply-adds per step, above which a step runs
on OpenMP threads), is parsed from csrc/cpu/rnn.cpp and straddled by reference-only cases.

Comparison (as tests/test_rnn.py): float64 torch modules (nn.LSTM, GRU, LSTMCell, GRUCell) on the
same values. float64 must match to rounding; lower precisions may err at most twice as much as
torch at the same dtype, plus a floor of a few units in the last place.
"""
from __future__ import annotations

import math
import re
import warnings
import zlib
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import dlkernels.triton_kernels.rnn as triton_rnn
from dlkernels.ops.rnn import GATES, gru, gru_cell, lstm, lstm_cell
from . import Case, around, case, rng

FAMILY = "rnn"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
FP64_TOL = dict(rtol=1e-10, atol=1e-10)
# Relative to max(1, largest reference magnitude): 4 roundings of fp16 / bf16; 32 of fp32, whose
# weight gradients sum T*B products in another order than torch.
ERROR_FLOOR = {torch.float32: 32 * 2.0**-24, torch.float16: 4 * 2.0**-11, torch.bfloat16: 4 * 2.0**-8}

# --- tile sizes, from their sources -------------------------------------------------------------
_FIRST_STEP_CONFIG = triton_rnn._STEP_CONFIGS[0].kwargs
BLOCK_B, BLOCK_H, BLOCK_K = (_FIRST_STEP_CONFIG[k] for k in ("BLOCK_B", "BLOCK_H", "BLOCK_K"))
_CPU_SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "cpu" / "rnn.cpp"


def min_parallel_step_work() -> int:
    """kMinParallelStepWork of csrc/cpu/rnn.cpp (written there as int64_t(1) << n)."""
    found = re.search(r"kMinParallelStepWork\s*=\s*int64_t\(1\)\s*<<\s*(\d+)\s*;", _CPU_SOURCE.read_text())
    assert found, f"kMinParallelStepWork not found in {_CPU_SOURCE}: update tests/cases/rnn.py"
    return 1 << int(found.group(1))


LAYER_OPS = ("lstm", "gru")
CELL_OPS = ("lstm_cell", "gru_cell")


def _cell_of(op: str) -> str:
    return op.split("_")[0]


# --- cases --------------------------------------------------------------------------------------
def _layer(why: str, op: str, *, steps: int = 2, batch: int = 3, input_size: int = 3, hidden: int = 5,
           num_layers: int = 1, bidirectional: bool = False, batch_first: bool = False, bias: bool = True,
           initial: str = "given", lengths: tuple | None = None, unbatched: bool = False, dropout: float = 0.0,
           training: bool = False, dtype: str = "float32", strided: bool = False, tags=(), **extra) -> Case:
    return case(FAMILY, op, why, tags=tags, steps=steps, batch=batch, input_size=input_size, hidden=hidden,
                num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                initial=initial, lengths=lengths, unbatched=unbatched, dropout=dropout, training=training,
                dtype=dtype, strided=strided, **extra)


def _cell(why: str, op: str, *, batch: int = 3, input_size: int = 3, hidden: int = 5, bias: bool = True,
          initial: str = "given", unbatched: bool = False, dtype: str = "float32", strided: bool = False,
          tags=(), **extra) -> Case:
    """initial: "given" (h and c), "none" (zeros), "h_only" (LSTM: c zeros)."""
    return case(FAMILY, op, why, tags=tags, batch=batch, input_size=input_size, hidden=hidden, bias=bias,
                initial=initial, unbatched=unbatched, dtype=dtype, strided=strided, **extra)


def _lengths(batch: int, steps: int) -> tuple[int, ...]:
    """Unsorted lengths covering 1 and steps (shorter sequences in the middle of the batch)."""
    return tuple(steps if b % 3 == 0 else max(1, steps - 1 - b % steps) for b in range(batch))


def boundary_cases() -> list[Case]:
    below_b, at_b, above_b = around(BLOCK_B)
    below_h, at_h, above_h = around(BLOCK_H)
    cases = [
        # Triton tiles: unequal tile counts along the grid's two axes, K-loop tails.
        _layer("B below one batch tile, H over two hidden tiles", "lstm", batch=below_b, hidden=2 * BLOCK_H + 1,
               input_size=4),
        _layer("B over two batch tiles, H below one hidden tile; reverse direction", "gru", batch=2 * BLOCK_B + 1,
               hidden=below_h, bidirectional=True, steps=2, batch_first=True),
        _layer("B and H at one tile, lengths", "gru", batch=at_b, hidden=at_h, steps=3,
               lengths=_lengths(at_b, 3)),
        _layer("B and H just over one tile (K tail), bidirectional, lengths, two layers", "lstm",
               batch=above_b, hidden=above_h, steps=2, num_layers=2, bidirectional=True,
               lengths=_lengths(above_b, 2), input_size=2),
        _cell("LSTM cell, B over one batch tile, H over two hidden tiles", "lstm_cell", batch=above_b,
              hidden=2 * BLOCK_H + 1, input_size=6),
        _cell("GRU cell, H over one tile, unbatched", "gru_cell", hidden=above_h, unbatched=True, input_size=2),
        # Arguments off their defaults.
        _layer("one step, no bias, zero states, batch_first", "lstm", steps=1, bias=False, initial="none",
               batch_first=True),
        _layer("two layers, dropout 1 in training: the second layer sees zeros", "gru", num_layers=2, dropout=1.0,
               training=True, steps=3),
        _layer("two layers, dropout outside training is a no-op", "lstm", num_layers=2, dropout=0.5, steps=3,
               training=False, batch_first=True, bidirectional=True),
        _layer("unbatched (T, I) input", "lstm", unbatched=True, steps=3, num_layers=2),
        _layer("unbatched, batch_first, zero state", "gru", unbatched=True, batch_first=True, initial="none"),
        _layer("non-contiguous input, states and weights", "lstm", strided=True, bidirectional=True, steps=3,
               lengths=(3, 1, 2)),
        _layer("float64, bidirectional, lengths", "lstm", dtype="float64", bidirectional=True, steps=3,
               lengths=(1, 3, 2), num_layers=2),
        _layer("float64 GRU, no bias", "gru", dtype="float64", bias=False, steps=3),
        _layer("float16 GRU, bidirectional", "gru", dtype="float16", bidirectional=True),
        _layer("bfloat16 LSTM, lengths", "lstm", dtype="bfloat16", lengths=(2, 1, 2)),
        _cell("LSTM cell, h given, c zeros", "lstm_cell", initial="h_only"),
        _cell("GRU cell without bias, strided", "gru_cell", bias=False, strided=True, batch=4),
        _cell("LSTM cell float64, unbatched, zero state", "lstm_cell", dtype="float64", unbatched=True,
              initial="none"),
        _cell("GRU cell float16", "gru_cell", dtype="float16", hidden=6),
    ]
    # The C++ reference's threshold for running a step on OpenMP threads: just below and at it.
    threshold, hidden = min_parallel_step_work(), 4 * BLOCK_H
    for op in LAYER_OPS:
        first_parallel = math.ceil(threshold / (GATES[op] * hidden * hidden))
        for batch in (first_parallel - 1, first_parallel):
            cases.append(_layer(f"C++ step work {'below' if batch < first_parallel else 'at or above'} "
                                f"kMinParallelStepWork", op, batch=batch, hidden=hidden, steps=2,
                                bidirectional=True, lengths=_lengths(batch, 2), dtype="float64",
                                tags=("reference_only",)))
    return cases + error_cases()


def _error(why: str, op: str, error: str, match: str, invalid: str, **args) -> Case:
    """An invalid call (`invalid` names what is wrong): every backend raises `error` matching `match`;
    auto (torch on CPU) raises what torch raises, or gives torch's result."""
    build = _cell if op in CELL_OPS else _layer
    base = build(why, op, **args)
    return Case(FAMILY, op, base.args + (("invalid", invalid), ("error", error), ("match", match)), why, False,
                frozenset({"error"}))


def error_cases() -> list[Case]:
    return [
        _error("a length above T", "lstm", "ValueError", r"lengths must lie in \[1, 2\]", "lengths_long"),
        _error("a zero length", "gru", "ValueError", r"lengths must lie in \[1, 2\]", "lengths_zero"),
        _error("dropout above 1", "lstm", "ValueError", "dropout must be in", "dropout", num_layers=2),
        _error("zero layers", "gru", "ValueError", "num_layers must be a positive int", "num_layers"),
        _error("unidirectional params for a bidirectional call", "lstm", "ValueError", "params must hold",
               "params_count", bidirectional=True),
        _error("layers of different hidden sizes", "gru", "ValueError", "same hidden size", "hidden_mismatch",
               num_layers=2),
        _error("input size not w_ih's", "lstm", "ValueError", "input size mismatch", "input_size"),
        _error("cell state of another batch", "lstm_cell", "ValueError", r"must have shape \(3, 5\)", "h_shape"),
        _error("cell with one bias", "gru_cell", "ValueError", "both be given or both be None", "one_bias"),
    ]


def random_cases(seed: int, count: int) -> list[Case]:
    draw = rng(seed)
    cases = []
    for index in range(count):
        op = draw.choice(LAYER_OPS + LAYER_OPS + CELL_OPS)
        dtype = draw.choices(list(DTYPES), weights=(1, 1, 6, 2))[0]
        batch, hidden = draw.randint(1, 2 * BLOCK_B + 2), draw.randint(1, 2 * BLOCK_H + 2)
        common = dict(batch=batch, hidden=hidden, input_size=draw.randint(1, 6), bias=draw.random() < 0.8,
                      dtype=dtype, strided=draw.random() < 0.2, unbatched=draw.random() < 0.15)
        why = f"random draw {index} of seed {seed}"
        if op in CELL_OPS:
            initial = draw.choice(("given", "none", "h_only" if op == "lstm_cell" else "given"))
            cases.append(_cell(why, op, initial=initial, **common))
            continue
        steps, num_layers = draw.randint(1, 4), draw.choice((1, 1, 2))
        lengths = None
        if not common["unbatched"] and draw.random() < 0.4:
            lengths = tuple(draw.randint(1, steps) for _ in range(batch))
        dropout, training = 0.0, False
        if num_layers > 1 and draw.random() < 0.3:
            dropout, training = draw.choice(((1.0, True), (0.5, False), (0.0, True)))
        cases.append(_layer(why, op, steps=steps, num_layers=num_layers, bidirectional=draw.random() < 0.4,
                            batch_first=draw.random() < 0.5, initial=draw.choice(("given", "none")),
                            lengths=lengths, dropout=dropout, training=training, **common))
    return cases


# --- inputs -------------------------------------------------------------------------------------
def _generator(case: Case) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(case.id.encode()))


def _values(case: Case) -> dict:
    """float64 values: x, states (list), params (list in torch.nn.LSTM's _flat_weights order)."""
    gen = _generator(case)
    randn = lambda *shape, scale=1.0: torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
    cell = _cell_of(case.op)
    gates, hidden, batch = GATES[cell], case.get("hidden"), case.get("batch")
    unbatched = case.get("unbatched")
    scale = 1.0 / math.sqrt(hidden)
    if case.op in CELL_OPS:
        x = randn(*(() if unbatched else (batch,)), case.get("input_size"))
        state_shape = (hidden,) if unbatched else (batch, hidden)
        params = [randn(gates * hidden, case.get("input_size"), scale=scale),
                  randn(gates * hidden, hidden, scale=scale)]
        if case.get("bias"):
            params += [randn(gates * hidden, scale=scale), randn(gates * hidden, scale=scale)]
        states = [randn(*state_shape, scale=0.5) for _ in range(2 if cell == "lstm" else 1)]
        return dict(x=x, states=states, params=params)
    steps, layers = case.get("steps"), case.get("num_layers")
    directions = 2 if case.get("bidirectional") else 1
    shape = (steps, case.get("input_size")) if unbatched else \
        (batch, steps, case.get("input_size")) if case.get("batch_first") else (steps, batch, case.get("input_size"))
    x = randn(*shape)
    params = []
    for layer in range(layers):
        layer_input = case.get("input_size") if layer == 0 else hidden * directions
        for _ in range(directions):
            params += [randn(gates * hidden, layer_input, scale=scale), randn(gates * hidden, hidden, scale=scale)]
            if case.get("bias"):
                params += [randn(gates * hidden, scale=scale), randn(gates * hidden, scale=scale)]
    state_shape = (layers * directions, hidden) if unbatched else (layers * directions, batch, hidden)
    states = [randn(*state_shape, scale=0.5) for _ in range(2 if cell == "lstm" else 1)]
    return dict(x=x, states=states, params=params)


def _leaf(value: torch.Tensor, dtype: torch.dtype, strided: bool) -> torch.Tensor:
    value = value.to(dtype)
    if strided and value.dim() >= 1:  # a view of every other element of a larger tensor
        big = torch.zeros(*value.shape[:-1], 2 * value.shape[-1], dtype=dtype)
        big[..., ::2] = value
        value = big[..., ::2]
    else:
        value = value.clone()
    return value.requires_grad_(dtype.is_floating_point)


def _given_states(case: Case, states: list) -> list:
    """The states the call passes (None for those left to zeros)."""
    initial = case.get("initial")
    if initial == "none":
        return [None] * len(states)
    if initial == "h_only":
        return [states[0], None]
    return list(states)


def _call_ours(case: Case, values: dict, dtype: torch.dtype, backend: str):
    """(outputs, leaves): the op's flattened outputs and the tensors gradients are taken for."""
    strided = case.get("strided")
    x = _leaf(values["x"], dtype, strided)
    params = [_leaf(p, dtype, strided) for p in values["params"]]
    states = [None if s is None else _leaf(s, dtype, strided) for s in _given_states(case, values["states"])]
    invalid = case.get("invalid")
    lengths = case.get("lengths")
    if invalid in ("lengths_long", "lengths_zero"):
        steps, batch = case.get("steps"), case.get("batch")
        lengths = (steps + 1 if invalid == "lengths_long" else 0,) + (steps,) * (batch - 1)
    if invalid == "params_count":
        params = params[:-1]
    if invalid == "hidden_mismatch":  # the last layer (with biases) one unit narrower
        gates = GATES[_cell_of(case.op)]
        w_ih, w_hh, b_ih, b_hh = params[-4:]
        params[-4:] = [w_ih[:-gates], w_hh[:-gates, :-1], b_ih[:-gates], b_hh[:-gates]]
    if invalid == "input_size":
        x = torch.cat([x, x[..., :1]], dim=-1)
    if invalid == "h_shape":
        states[0] = states[0][:-1]
    if invalid == "one_bias":
        params[-1] = None
    leaves = [t for t in [x, *states, *params] if t is not None and t.requires_grad]
    if case.op in CELL_OPS:
        if case.op == "lstm_cell":
            out = lstm_cell(x, states[0], states[1], *params, backend=backend)
        else:
            out = gru_cell(x, states[0], *params, backend=backend)
        return (list(out) if isinstance(out, tuple) else [out]), leaves
    fn = lstm if case.op == "lstm" else gru
    hx = None if states[0] is None else (tuple(states) if case.op == "lstm" else states[0])
    dropout = 1.5 if invalid == "dropout" else case.get("dropout")
    num_layers = 0 if invalid == "num_layers" else case.get("num_layers")
    output, final = fn(x, hx, params, num_layers, case.get("bidirectional"), case.get("batch_first"), dropout,
                       case.get("training"), lengths=None if lengths is None else torch.tensor(lengths),
                       backend=backend)
    return [output, *(final if case.op == "lstm" else (final,))], leaves


def _call_torch(case: Case, values: dict, dtype: torch.dtype):
    """The same computation with torch.nn modules at `dtype`: (outputs, leaves) in _call_ours's order."""
    cell = _cell_of(case.op)
    x = _leaf(values["x"], dtype, False)
    states = [None if s is None else _leaf(s, dtype, False) for s in _given_states(case, values["states"])]
    hidden, input_size, bias = case.get("hidden"), case.get("input_size"), case.get("bias")
    if case.op in CELL_OPS:
        module = (torch.nn.LSTMCell if cell == "lstm" else torch.nn.GRUCell)(input_size, hidden, bias, dtype=dtype)
        module_params = [module.weight_ih, module.weight_hh] + ([module.bias_ih, module.bias_hh] if bias else [])
    else:
        module_class = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        module = module_class(input_size, hidden, case.get("num_layers"), bias=bias,
                              batch_first=case.get("batch_first"), dropout=case.get("dropout"),
                              bidirectional=case.get("bidirectional"), dtype=dtype)
        module.train(case.get("training"))
        module_params = list(module._flat_weights)
    with torch.no_grad():
        for param, value in zip(module_params, values["params"], strict=True):
            param.copy_(value)
    leaves = [t for t in [x, *states] if t is not None] + module_params
    if case.op in CELL_OPS:
        if cell == "lstm":
            zeros = torch.zeros_like(states[0]) if states[0] is not None else None
            hx = None if states[0] is None else (states[0], states[1] if states[1] is not None else zeros)
            return list(module(x, hx)), leaves
        return [module(x, states[0])], leaves
    hx = None if states[0] is None else (tuple(states) if cell == "lstm" else states[0])
    lengths = case.get("lengths")
    if lengths is None:
        output, final = module(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), case.get("batch_first"), enforce_sorted=False)
        output, final = module(packed, hx)
        output, _ = pad_packed_sequence(output, case.get("batch_first"), total_length=case.get("steps"))
    return [output, *(final if cell == "lstm" else (final,))], leaves


def _run(call, case: Case):
    """Outputs and gradients of `call` for output gradients seeded by the case."""
    outputs, leaves = call()
    gen = _generator(case)
    seeds = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) for t in outputs]
    return outputs, torch.autograd.grad(outputs, leaves, seeds)


# --- check --------------------------------------------------------------------------------------
def _assert_accurate(ours, theirs, reference, dtype, what, case):
    reference = reference.detach().double()
    label = f"{case.id} [{case.why}] {what}"
    assert ours.shape == reference.shape, f"{label}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    assert ours.dtype == dtype, f"{label}: dtype {ours.dtype}"
    if dtype == torch.float64:
        torch.testing.assert_close(ours.detach(), reference, **FP64_TOL, msg=lambda m: f"{label}: {m}")
        return
    scale = max(1.0, reference.abs().max().item())
    our_error = (ours.detach().double() - reference).abs().max().item()
    torch_error = (theirs.detach().double() - reference).abs().max().item()
    bound = 2 * torch_error + ERROR_FLOOR[dtype] * scale
    assert our_error <= bound, f"{label}: max error {our_error:.3g} > {bound:.3g} (torch's own: {torch_error:.3g})"


def check(case: Case, backend: str) -> None:
    if "error" in case.tags:
        return _check_error(case, backend)
    dtype = DTYPES[case.get("dtype")]
    values = _values(case)
    if dtype == torch.float64 and backend != "reference":
        _expect_error(lambda: _call_ours(case, values, dtype, backend), "TypeError",
                      r"float64 runs only on the C\+\+ reference", case, backend)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: dropout with one layer, non-contiguous weights
        ours, our_grads = _run(lambda: _call_ours(case, values, dtype, backend), case)
        exact, exact_grads = _run(lambda: _call_torch(case, values, torch.float64), case)
        theirs, their_grads = (exact, exact_grads) if dtype == torch.float64 else \
            _run(lambda: _call_torch(case, values, dtype), case)
    names = ["output", "h_n", "c_n"] if case.op in LAYER_OPS else ["h", "c"]
    for name, mine, low, ref in zip(names, ours, theirs, exact, strict=False):
        _assert_accurate(mine, low, ref, dtype, name, case)
    assert len(our_grads) == len(exact_grads), f"{case.id}: {len(our_grads)} gradients, torch {len(exact_grads)}"
    for index, (mine, low, ref) in enumerate(zip(our_grads, their_grads, exact_grads)):
        _assert_accurate(mine, low, ref, dtype, f"gradient {index} (x, given states, then params)", case)


def _outcome(run):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return run(), None
    except Exception as error:  # noqa: BLE001 -- compared with what torch raises
        return None, error


def _expect_error(run, expected: str, match: str, case: Case, backend: str) -> None:
    _, error = _outcome(run)
    assert error is not None, f"{case.id} [{case.why}]: no error on backend {backend!r}"
    assert type(error).__name__ == expected and re.search(match, str(error)), \
        f"{case.id} [{case.why}]: expected {expected} matching {match!r} on {backend!r}, got {error!r}"


def _check_error(case: Case, backend: str) -> None:
    values = _values(case)
    dtype = DTYPES[case.get("dtype")]
    _expect_error(lambda: _call_ours(case, values, dtype, backend), case.get("error"), case.get("match"), case,
                  backend)
    # backend="auto" runs torch on CPU: it raises what torch raises, or gives torch's result.
    auto, auto_error = _outcome(lambda: _call_ours(case, values, dtype, "auto")[0])
    theirs, torch_error = _outcome(lambda: _call_ours(case, values, dtype, "torch")[0])
    assert type(auto_error) is type(torch_error), f"{case.id}: auto raised {auto_error!r}, torch {torch_error!r}"
    if torch_error is None:
        torch.testing.assert_close(auto, theirs, equal_nan=True)
