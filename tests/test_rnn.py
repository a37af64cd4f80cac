"""LSTM / GRU layers and cells against torch.nn.LSTM, GRU, LSTMCell and GRUCell: outputs, final
states, and gradients w.r.t. the input, h0, c0 and every weight and bias.

Reference: torch's module in float64 on the same inputs and weights (made in float64, rounded to
the run's dtype). fp64 must match it to rounding (FP64_TOL). Lower precisions follow
FlashAttention's rule: our max error against the fp64 result is at most 2x torch's own max error at
that dtype, plus a floor of a few units in the last place of the result's scale (ERROR_FLOOR) for
results torch happens to get exact.
"""
import copy

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import dlkernels
from dlkernels.nn.rnn import GRU, LSTM, GRUCell, LSTMCell
from dlkernels.ops import rnn as rnn_ops
from dlkernels.ops.rnn import gru, gru_cell, lstm, lstm_cell
from helpers import CPU_BACKENDS, GPU_BACKENDS

FP64_TOL = dict(rtol=1e-10, atol=1e-10)
# Relative to max(1, largest reference magnitude): 4 roundings of fp16 / bf16; 32 of fp32, whose
# weight gradients sum T*B products in a different order than torch.
ERROR_FLOOR = {torch.float32: 32 * 2.0**-24, torch.float16: 4 * 2.0**-11, torch.bfloat16: 4 * 2.0**-8}
LOW_PRECISION = [torch.float32, torch.float16, torch.bfloat16]

MODULES = {"lstm": (LSTM, torch.nn.LSTM), "gru": (GRU, torch.nn.GRU)}
CELL_MODULES = {"lstm": (LSTMCell, torch.nn.LSTMCell), "gru": (GRUCell, torch.nn.GRUCell)}


def _assert_accurate(ours, theirs, reference, dtype, what):
    """ours, and torch at `dtype` (theirs), against the float64 reference."""
    reference = reference.double()
    assert ours.shape == reference.shape, what
    if dtype == torch.float64:
        torch.testing.assert_close(ours, reference, **FP64_TOL, msg=lambda m: f"{what}: {m}")
        return
    scale = max(1.0, reference.abs().max().item())
    our_error = (ours.double() - reference).abs().max().item()
    torch_error = (theirs.double() - reference).abs().max().item()
    bound = 2 * torch_error + ERROR_FLOOR[dtype] * scale
    assert our_error <= bound, f"{what}: max error {our_error:.3g} > {bound:.3g} (torch's own: {torch_error:.3g})"


# Inputs are a list of float64 CPU tensors (or tuples of them, or ("packed", padded, lengths,
# enforce_sorted) for a PackedSequence), converted for each run.
def _convert(item, dtype, device):
    if item is None:
        return None
    if isinstance(item, tuple) and item[0] == "packed":
        _, padded, lengths, enforce_sorted = item
        return ("packed", _convert(padded, dtype, device), lengths, enforce_sorted)
    if isinstance(item, tuple):
        return tuple(_convert(t, dtype, device) for t in item)
    return item.detach().to(device=device, dtype=dtype).requires_grad_(item.requires_grad)


def _as_arguments(inputs):
    return [pack_padded_sequence(t[1], t[2], enforce_sorted=t[3]) if isinstance(t, tuple) and t[0] == "packed" else t
            for t in inputs]


def _leaves(inputs):
    flat = []
    for t in inputs:
        if isinstance(t, tuple):
            flat.extend(t[1:2] if t[0] == "packed" else t)
        elif t is not None:
            flat.append(t)
    return [t for t in flat if t.requires_grad]


def _flatten_result(result):
    if isinstance(result, torch.Tensor):  # GRUCell
        return [result]
    first, second = result
    if isinstance(first, PackedSequence):
        first = first.data
    if isinstance(second, tuple):  # LSTM: (output, (h_n, c_n))
        return [first, *second]
    return [first, second]  # GRU (output, h_n) or LSTMCell (h', c')


def _run(module, inputs, dtype, device):
    """Outputs and gradients (w.r.t. the inputs that require grad, then every parameter) of one run."""
    arguments = [_convert(t, dtype, device) for t in inputs]
    result = module(*_as_arguments(arguments))
    outputs = _flatten_result(result)
    seeds = [torch.randn(t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i)).to(t)
             for i, t in enumerate(outputs)]
    grads = torch.autograd.grad(outputs, _leaves(arguments) + list(module.parameters()), seeds)
    return result, outputs, grads


def _compare(ours, reference, inputs, dtype, device="cpu"):
    """Runs ours and torch at `dtype` and torch at float64 on the same inputs and output gradients."""
    ours = ours.to(device=device, dtype=dtype)
    low = copy.deepcopy(reference).to(device=device, dtype=dtype)
    exact = copy.deepcopy(reference).to(device=device, dtype=torch.float64)
    ours.load_state_dict(reference.state_dict())  # torch's state_dict loads unchanged
    runs = [_run(module, inputs, run_dtype, device)
            for module, run_dtype in ((ours, dtype), (low, dtype), (exact, torch.float64))]
    (result, outputs, grads), (_, torch_outputs, torch_grads), (_, exact_outputs, exact_grads) = runs
    for name, mine, theirs, ref in zip(("output", "h_n", "c_n"), outputs, torch_outputs, exact_outputs):
        assert mine.dtype == dtype, name
        _assert_accurate(mine, theirs, ref, dtype, name)
    names = [f"grad of input {i}" for i in range(len(grads) - len(list(ours.parameters())))]
    names += [f"grad of {name}" for name, _ in ours.named_parameters()]
    for name, mine, theirs, ref in zip(names, grads, torch_grads, exact_grads):
        assert mine.dtype == dtype, name
        _assert_accurate(mine, theirs, ref, dtype, name)
    return result, runs[1][0]


def _randn(*shape, grad=True):
    return torch.randn(*shape, dtype=torch.float64).requires_grad_(grad)


# ----------------------------------------------------------------------------- full layers
# id: (num_layers, bidirectional, batch_first, T, B, input_size, hidden, bias, initial state given)
LAYER_CASES = {
    "T1": (1, False, False, 1, 3, 5, 8, True, True),
    "T37": (1, False, False, 37, 2, 4, 6, True, True),
    "2layers-bidir": (2, True, False, 5, 3, 4, 5, True, True),
    "2layers-batch_first-nobias-zero_state": (2, False, True, 6, 2, 3, 4, False, False),
    "bidir-batch_first-T37": (1, True, True, 37, 2, 3, 4, True, True),
}
# The Triton interpreter runs a few launches per step: its cases stay short.
TRITON_LAYER_CASES = ("T1", "2layers-bidir", "2layers-batch_first-nobias-zero_state")


def _layer_case(cell, case):
    num_layers, bidirectional, batch_first, steps, batch, input_size, hidden, bias, initial_state = case
    ours_cls, torch_cls = MODULES[cell]
    options = dict(bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    reference = torch_cls(input_size, hidden, num_layers, **options).double()
    inputs = [_randn(*((batch, steps) if batch_first else (steps, batch)), input_size)]
    if initial_state:
        states = tuple(_randn(num_layers * (2 if bidirectional else 1), batch, hidden)
                       for _ in range(2 if cell == "lstm" else 1))
        inputs.append(states if cell == "lstm" else states[0])
    return ours_cls, (input_size, hidden, num_layers), options, reference, inputs


def _check_layers(backend, cell, case, dtype, device="cpu"):
    ours_cls, sizes, options, reference, inputs = _layer_case(cell, case)
    _compare(ours_cls(*sizes, **options, backend=backend), reference, inputs, dtype, device)


@pytest.mark.parametrize("dtype", [torch.float64, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize("case", list(LAYER_CASES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_layers_match_torch(backend, cell, case, dtype):
    if backend == "triton" and (case not in TRITON_LAYER_CASES or dtype == torch.float64):
        pytest.skip("Triton interpreter: short cases only; float64 runs on the C++ reference only")
    _check_layers(backend, cell, LAYER_CASES[case], dtype)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_packed_sequences_match_torch(backend, cell, enforce_sorted, bidirectional):
    lengths = [7, 5, 5, 2] if enforce_sorted else [3, 7, 1, 5]
    ours_cls, torch_cls = MODULES[cell]
    reference = torch_cls(3, 4, 2, bidirectional=bidirectional).double()
    padded = _randn(max(lengths), len(lengths), 3)
    states = tuple(_randn(2 * (2 if bidirectional else 1), len(lengths), 4) for _ in range(2 if cell == "lstm" else 1))
    inputs = [("packed", padded, torch.tensor(lengths), enforce_sorted), states if cell == "lstm" else states[0]]
    dtype = torch.float64 if backend == "reference" else torch.float32
    (output, _), (torch_output, _) = _compare(ours_cls(3, 4, 2, bidirectional=bidirectional, backend=backend),
                                              reference, inputs, dtype)
    assert isinstance(output, PackedSequence)
    torch.testing.assert_close(output.batch_sizes, torch_output.batch_sizes)
    for mine, theirs in ((output.sorted_indices, torch_output.sorted_indices),
                         (output.unsorted_indices, torch_output.unsorted_indices)):
        assert (mine is None and theirs is None) or torch.equal(mine, theirs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_lengths_match_per_sequence_runs(backend, cell):
    """The functional lengths path: each sequence's outputs and final state equal a run on it alone."""
    module = MODULES[cell][0](3, 4, 1, bidirectional=True, backend=backend)
    lengths = torch.tensor([2, 5, 1])
    x = torch.randn(5, 3, 3)
    fn = lstm if cell == "lstm" else gru
    out, state = fn(x, None, module._flat_weights, 1, True, lengths=lengths, backend=backend)
    states = state if cell == "lstm" else (state,)
    for b, length in enumerate(lengths.tolist()):
        alone, alone_state = fn(x[:length, b:b + 1], None, module._flat_weights, 1, True, backend=backend)
        torch.testing.assert_close(out[:length, b:b + 1], alone, rtol=1e-5, atol=1e-6)
        assert torch.all(out[length:, b] == 0)
        for mine, theirs in zip(states, alone_state if cell == "lstm" else (alone_state,)):
            torch.testing.assert_close(mine[:, b:b + 1], theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unbatched_input_matches_torch(backend, cell, batch_first):
    ours_cls, torch_cls = MODULES[cell]
    reference = torch_cls(3, 4, 2, batch_first=batch_first).double()
    states = tuple(_randn(2, 4) for _ in range(2 if cell == "lstm" else 1))
    inputs = [_randn(6, 3), states if cell == "lstm" else states[0]]
    (output, _), _ = _compare(ours_cls(3, 4, 2, batch_first=batch_first, backend=backend), reference, inputs,
                              torch.float64 if backend == "reference" else torch.float32)
    assert output.shape == (6, 4)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_inference_without_grad_matches_training_forward(backend, cell):
    """Without autograd the kernels skip the saved gate activations; the results must not change."""
    module = MODULES[cell][0](3, 4, 2, bidirectional=True, backend=backend)
    lengths = torch.tensor([4, 2])
    x = torch.randn(4, 2, 3)
    fn = lstm if cell == "lstm" else gru
    with torch.no_grad():
        inference = fn(x, None, module._flat_weights, 2, True, lengths=lengths, backend=backend)
    training = fn(x, None, module._flat_weights, 2, True, lengths=lengths, backend=backend)
    assert training[0].requires_grad and not inference[0].requires_grad
    torch.testing.assert_close(inference, training, rtol=0, atol=0)


# ----------------------------------------------------------------------------- cells
@pytest.mark.parametrize("dtype", [torch.float64, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize("shape", ["batched", "unbatched", "no_state", "no_bias"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cells_match_torch(backend, cell, shape, dtype):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("float64 runs on the C++ reference only")
    ours_cls, torch_cls = CELL_MODULES[cell]
    bias = shape != "no_bias"
    reference = torch_cls(5, 7, bias=bias).double()
    batch = () if shape == "unbatched" else (3,)
    states = tuple(_randn(*batch, 7) for _ in range(2 if cell == "lstm" else 1))
    inputs = [_randn(*batch, 5)]
    if shape != "no_state":
        inputs.append(states if cell == "lstm" else states[0])
    _compare(ours_cls(5, 7, bias=bias, backend=backend), reference, inputs, dtype)


def test_functional_cells_match_modules():
    torch.manual_seed(0)
    lstm_module, gru_module = torch.nn.LSTMCell(4, 6), torch.nn.GRUCell(4, 6)
    x, h, c = torch.randn(2, 4), torch.randn(2, 6), torch.randn(2, 6)
    for mine, theirs in zip(lstm_cell(x, h, c, *lstm_module.parameters(), backend="reference"), lstm_module(x, (h, c))):
        torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(gru_cell(x, h, *gru_module.parameters(), backend="reference"), gru_module(x, h))


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dropout_matches_torch_with_the_same_seed(cell):
    """torch's CPU LSTM and GRU apply at::dropout to each layer's output but the last, as we do with
    F.dropout: with the same seed the masks, and so the results, are the same."""
    ours_cls, torch_cls = MODULES[cell]
    reference = torch_cls(3, 5, 3, dropout=0.4, bidirectional=True).double().train()
    ours = ours_cls(3, 5, 3, dropout=0.4, bidirectional=True, backend="reference").double().train()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for module in (ours, reference):
        torch.manual_seed(7)
        out, _ = module(x)
        results.append((out, torch.autograd.grad(out.sum(), [x, *module.parameters()])))
    (out, grads), (expected, expected_grads) = results
    torch.testing.assert_close(out, expected, **FP64_TOL)
    for mine, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(mine, theirs, **FP64_TOL)
    # Eval mode and dropout in the last layer only: no dropout at all.
    ours.eval(), reference.eval()
    torch.testing.assert_close(ours(x)[0], reference(x)[0], **FP64_TOL)


def test_dropout_statistics():
    """Dropout between layers zeroes about p of the next layer's inputs: with p=1 the second layer sees
    zeros, so its output depends on its biases alone."""
    module = LSTM(3, 4, 2, dropout=1.0, backend="reference").train()
    x = torch.randn(5, 2, 3)
    out, _ = module(x)
    again, _ = module(torch.randn(5, 2, 3))
    torch.testing.assert_close(out, again)  # the input never reaches the second layer


# ----------------------------------------------------------------------------- torch.library
def _layer_op_args(cell, backend, lengths, reverse, steps=3, batch=2, hidden=4, dtype=torch.float32):
    gates = rnn_ops.GATES[cell]
    x_proj = torch.randn(steps, batch, gates * hidden, dtype=dtype, requires_grad=True)
    w_hh = (0.5 * torch.randn(gates * hidden, hidden, dtype=dtype)).requires_grad_()
    b_hh = torch.randn(gates * hidden, dtype=dtype, requires_grad=True) if cell == "gru" else None
    h0 = torch.randn(batch, hidden, dtype=dtype, requires_grad=True)
    c0 = torch.randn(batch, hidden, dtype=dtype, requires_grad=True) if cell == "lstm" else None
    lengths = torch.tensor(lengths, dtype=torch.int32) if lengths else None
    return (cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, True, backend)


OPCHECK_CASES = {  # (steps, lengths, reverse): T=1 is the cell, the others the layer's paths
    "cell": (1, None, False),
    "layer": (3, None, False),
    "layer-reverse-lengths": (3, [3, 1], True),
    "layer-lengths": (3, [2, 3], False),
}


@pytest.mark.parametrize("case", list(OPCHECK_CASES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend, cell, case):
    steps, lengths, reverse = OPCHECK_CASES[case]
    args = _layer_op_args(cell, backend, lengths, reverse, steps=steps)
    torch.library.opcheck(torch.ops.dlk.rnn_layer.default, args)
    h_all, c_all, h_n, c_n, saved = (t.detach() for t in torch.ops.dlk.rnn_layer(*args))
    _, _, w_hh, _, h0, c0, lengths, reverse, _, _ = args
    grads = (torch.randn_like(h_all), torch.randn_like(h_n), torch.randn_like(c_n) if cell == "lstm" else None)
    detach = lambda t: None if t is None else t.detach()
    torch.library.opcheck(torch.ops.dlk.rnn_layer_backward.default,
                          (cell, *grads, w_hh.detach(), h0.detach(), detach(c0), h_all, c_all, saved, lengths,
                           reverse, backend))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_op_gradcheck(cell, reverse):
    """The layer op's autograd formula against finite differences (float64, C++ reference)."""
    args = list(_layer_op_args(cell, "reference", [3, 1], reverse, dtype=torch.float64))

    def run(x_proj, w_hh, b_hh, h0, c0):
        h_all, _, h_n, c_n, _ = rnn_ops._rnn_layer(cell, x_proj, w_hh, b_hh, h0, c0, *args[6:])
        return (h_all, h_n, c_n) if cell == "lstm" else (h_all, h_n)

    inputs = [t for t in args[1:6]]
    torch.autograd.gradcheck(lambda *ts: run(*ts), inputs)


class _CellModel(torch.nn.Module):
    """An LSTMCell and a GRUCell unrolled over a short sequence, then a linear head."""

    def __init__(self):
        super().__init__()
        self.lstm, self.gru = LSTMCell(3, 5, backend="reference"), GRUCell(5, 4, backend="reference")
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = c = g = None
        for step in x.unbind(0):
            h, c = self.lstm(step, None if h is None else (h, c))
            g = self.gru(h, g)
        return self.head(g)


def test_torch_compile_cell_model_matches_eager():
    torch.manual_seed(0)
    model = _CellModel()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(4, 2, 3)
    out, expected = compiled(x), model(x)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    for mine, theirs in zip(grads, expected_grads):
        torch.testing.assert_close(mine, theirs)


def test_torch_compile_functional_layers_match_eager():
    """lstm()/gru() trace whole (without lengths, whose range check reads values). Dynamo refuses to
    trace nn.RNNBase subclasses unless torch._dynamo.config.allow_rnn is set, so this compiles the
    functional form."""
    module = LSTM(3, 4, 2, bidirectional=True, backend="reference")
    weights = [w.detach() for w in module._flat_weights]
    compiled = torch.compile(lambda x: lstm(x, None, weights, 2, True, backend="reference"), fullgraph=True,
                             backend="aot_eager")
    x = torch.randn(5, 2, 3)
    out, (h_n, c_n) = compiled(x)
    expected, (expected_h, expected_c) = lstm(x, None, weights, 2, True, backend="reference")
    for mine, theirs in ((out, expected), (h_n, expected_h), (c_n, expected_c)):
        torch.testing.assert_close(mine, theirs)


# ----------------------------------------------------------------------------- bad input
def _lstm_call(**overrides):
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, 1)
    args = dict(input=torch.randn(5, 2, 3), hx=(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)),
                params=module._flat_weights, num_layers=1)
    keywords = {k: overrides.pop(k) for k in ("lengths", "backend") if k in overrides}
    keywords.setdefault("backend", "reference")  # bad-input tests test OUR validation, not torch's
    args.update(overrides)
    return lambda: lstm(**args, **keywords)


def _gru_cell_call(**overrides):
    args = dict(x=torch.randn(2, 3), h=torch.zeros(2, 4), w_ih=torch.randn(12, 3), w_hh=torch.randn(12, 4),
                b_ih=torch.randn(12), b_hh=torch.randn(12))
    backend = overrides.pop("backend", "reference")
    args.update(overrides)
    return lambda: gru_cell(**args, backend=backend)


BAD_INPUTS = {
    "input size": (_lstm_call(input=torch.randn(5, 2, 6)), ValueError, "input size mismatch.*Expected 3.*got 6"),
    "h0 shape": (_lstm_call(hx=(torch.zeros(2, 2, 4), torch.zeros(1, 2, 4))), ValueError,
                 r"h0 must have shape \(1, 2, 4\), got \(2, 2, 4\)"),
    "c0 shape": (_lstm_call(hx=(torch.zeros(1, 2, 4), torch.zeros(1, 3, 4))), ValueError, "c0 must have shape"),
    "hx arity": (_lstm_call(hx=(torch.zeros(1, 2, 4),)), ValueError, r"hx must be a pair \(h0, c0\)"),
    "h0 dtype": (_lstm_call(hx=(torch.zeros(1, 2, 4, dtype=torch.float64), torch.zeros(1, 2, 4))), TypeError,
                 "h0 dtype torch.float64 does not match the input's torch.float32"),
    "input dtype": (_lstm_call(input=torch.randn(5, 2, 3, dtype=torch.float64)), TypeError, "w_ih.*dtype"),
    "int input": (_lstm_call(input=torch.ones(5, 2, 3, dtype=torch.int64)), TypeError, "unsupported dtype"),
    "device": (_lstm_call(hx=(torch.zeros(1, 2, 4, device="meta"), torch.zeros(1, 2, 4))), ValueError,
               "h0 is on meta but the input is on cpu"),
    "empty": (_lstm_call(input=torch.randn(0, 2, 3)), ValueError, "input must not be empty"),
    "rank": (_lstm_call(input=torch.randn(5)), ValueError, "input must be 2-D or 3-D"),
    "lengths zero": (_lstm_call(lengths=torch.tensor([0, 5])), ValueError, r"lengths must lie in \[1, 5\]"),
    "lengths long": (_lstm_call(lengths=torch.tensor([6, 5])), ValueError, r"lengths must lie in \[1, 5\]"),
    "lengths shape": (_lstm_call(lengths=torch.tensor([5])), ValueError, r"lengths must have shape \(2,\)"),
    "lengths dtype": (_lstm_call(lengths=torch.tensor([5.0, 5.0])), TypeError, "lengths must be an integer tensor"),
    "params count": (_lstm_call(params=[torch.randn(16, 3)]), ValueError, "params must hold"),
    "num_layers": (_lstm_call(num_layers=0), ValueError, "num_layers must be a positive int"),
    "backend": (_lstm_call(backend="cudnn"), ValueError, "backend must be one of"),
    "cuda backend": (_lstm_call(backend="cuda"), RuntimeError, "need a CUDA tensor"),
    "cell input size": (_gru_cell_call(x=torch.randn(2, 5)), ValueError, "input size mismatch"),
    "cell h shape": (_gru_cell_call(h=torch.zeros(3, 4)), ValueError, r"h must have shape \(2, 4\)"),
    "cell w_hh shape": (_gru_cell_call(w_hh=torch.randn(12, 5)), ValueError, "w_hh must have shape"),
    "cell bias shape": (_gru_cell_call(b_hh=torch.randn(4)), ValueError, r"b_hh must have shape \(12,\)"),
    "cell one bias": (_gru_cell_call(b_hh=None), ValueError, "both be given or both be None"),
    "cell rank": (_gru_cell_call(x=torch.randn(1, 2, 3)), ValueError, "input must be 1-D or 2-D"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_clear_errors(case):
    call, error, message = BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        call()


def test_proj_size_is_not_supported():
    with pytest.raises(NotImplementedError, match="proj_size > 0"):
        LSTM(3, 4, proj_size=2)


def test_module_repr_and_state_dict_keys():
    ours, reference = LSTM(3, 4, 2, bidirectional=True, backend="reference"), torch.nn.LSTM(3, 4, 2, bidirectional=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert "backend='reference'" in repr(ours) and "backend='reference'" in repr(GRUCell(3, 4, backend="reference"))


# ----------------------------------------------------------------------------- GPU
GPU_LAYER_CASES = {  # issue #6's benchmark shapes, shortened where the sequence is long
    "100x64x512x512": (1, False, False, 100, 64, 512, 512, True, True),
    "bidir-2layers": (2, True, False, 20, 64, 256, 256, True, True),
    "mnist-rows": (2, False, True, 28, 64, 28, 128, True, True),
    "batch1": (1, False, False, 50, 1, 256, 256, True, True),
}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(GPU_LAYER_CASES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_layers_match_cudnn(backend, cell, case, dtype):
    """Against cuDNN at the dtype (and cuDNN in float64 as the reference: torch's GPU fp64 RNN)."""
    _check_layers(backend, cell, GPU_LAYER_CASES[case], dtype, device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_packed_sequences_match_cudnn(backend, cell, enforce_sorted):
    lengths = [9, 6, 6, 2] if enforce_sorted else [3, 9, 1, 6]
    ours_cls, torch_cls = MODULES[cell]
    reference = torch_cls(8, 16, 2, bidirectional=True).double()
    padded = _randn(max(lengths), len(lengths), 8)
    inputs = [("packed", padded, torch.tensor(lengths), enforce_sorted)]
    _compare(ours_cls(8, 16, 2, bidirectional=True, backend=backend), reference, inputs, torch.float32, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_cells_match_torch_on_gpu(backend, cell, dtype):
    ours_cls, torch_cls = CELL_MODULES[cell]
    reference = torch_cls(64, 128).double()
    states = tuple(_randn(32, 128) for _ in range(2 if cell == "lstm" else 1))
    inputs = [_randn(32, 64), states if cell == "lstm" else states[0]]
    _compare(ours_cls(64, 128, backend=backend), reference, inputs, dtype, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["step", "persistent"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_both_cuda_paths_match_cudnn(monkeypatch, cell, path):
    """The CUDA launcher picks a per-step or a persistent (grid-barrier) kernel; DLK_RNN_CUDA_PATH forces one
    (persistent falls back to per-step where it cannot be co-resident), so both are checked at the small-batch
    shapes the persistent path is meant for."""
    monkeypatch.setenv("DLK_RNN_CUDA_PATH", path)
    for dtype in (torch.float32, torch.float16):
        _check_layers("cuda", cell, GPU_LAYER_CASES["batch1"], dtype, device="cuda")


def test_convert_swaps_recurrent_modules():
    model = torch.nn.ModuleDict({"lstm": torch.nn.LSTM(8, 16, 2, bidirectional=True), "gru": torch.nn.GRU(8, 16),
                                 "cell": torch.nn.LSTMCell(8, 16), "projected": torch.nn.LSTM(8, 16, proj_size=4)})
    x = torch.randn(5, 3, 8)
    expected = model["lstm"](x)[0], model["gru"](x)[0], model["cell"](x[0])[0]
    converted = dlkernels.convert(model)
    assert isinstance(converted["lstm"], dlkernels.nn.LSTM) and isinstance(converted["gru"], dlkernels.nn.GRU)
    assert isinstance(converted["cell"], dlkernels.nn.LSTMCell)
    assert type(converted["projected"]) is torch.nn.LSTM  # projections have no drop-in: left alone
    outputs = converted["lstm"](x)[0], converted["gru"](x)[0], converted["cell"](x[0])[0]
    for ours, theirs in zip(outputs, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- auto and torch backends
def _module_case(cell, layers, bidirectional, batch_first, shape, dtype):
    torch.manual_seed(0)
    module = getattr(torch.nn, cell.upper())(3, 4, layers, bidirectional=bidirectional, batch_first=batch_first)
    return module.to(dtype), torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers, bidirectional, batch_first, shape, dtype", [
    (2, True, False, (5, 2, 3), torch.float32),
    (1, False, True, (2, 5, 3), torch.float64),
    (1, True, False, (5, 3), torch.float32),  # unbatched
])
def test_auto_and_torch_give_torch_nn_results(backend, cell, layers, bidirectional, batch_first, shape, dtype):
    module, x = _module_case(cell, layers, bidirectional, batch_first, shape, dtype)
    ours = (lstm if cell == "lstm" else gru)(x, None, module._flat_weights, layers, bidirectional, batch_first,
                                              backend=backend)
    torch.testing.assert_close(ours, module(x), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_auto_and_torch_lengths_give_packed_torch_nn_results(backend, cell):
    module, x = _module_case(cell, 2, True, True, (3, 5, 3), torch.float32)
    lengths = torch.tensor([2, 5, 4])
    h0 = torch.randn(4, 3, 4)
    hx = (h0, torch.randn(4, 3, 4)) if cell == "lstm" else h0
    packed_output, expected_state = module(pack_padded_sequence(x, lengths, True, enforce_sorted=False), hx)
    expected = torch.nn.utils.rnn.pad_packed_sequence(packed_output, True, total_length=5)[0]
    output, state = (lstm if cell == "lstm" else gru)(x, hx, module._flat_weights, 2, True, True, lengths=lengths,
                                                       backend=backend)
    torch.testing.assert_close((output, state), (expected, expected_state), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("batched", [True, False])
def test_auto_and_torch_cells_give_torch_nn_results(backend, batched):
    torch.manual_seed(0)
    lstm_module, gru_module = torch.nn.LSTMCell(3, 4), torch.nn.GRUCell(3, 4)
    x = torch.randn(2, 3) if batched else torch.randn(3)
    h = torch.randn(2, 4) if batched else torch.randn(4)
    torch.testing.assert_close(lstm_cell(x, None, None, *lstm_module.parameters(), backend=backend), lstm_module(x))
    torch.testing.assert_close(lstm_cell(x, h, h, *lstm_module.parameters(), backend=backend), lstm_module(x, (h, h)))
    torch.testing.assert_close(gru_cell(x, None, *gru_module.parameters(), backend=backend), gru_module(x))
    torch.testing.assert_close(gru_cell(x, h, *gru_module.parameters(), backend=backend), gru_module(x, h))


def _error_of(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 -- the test compares whatever torch raises
        return type(error)
    return None


@pytest.mark.parametrize("case", ["input size", "h0 shape", "int input", "lengths long", "cell input size",
                                  "cell h shape"])
def test_auto_gives_torchs_error_where_ours_would_refuse(case):
    """Calls the reference refuses: auto (on CPU) raises what torch raises, not our error."""
    call = BAD_INPUTS[case][0]
    ours = _error_of(call)
    closure = dict(zip(call.__code__.co_freevars, (c.cell_contents for c in call.__closure__)))
    if "keywords" in closure:
        closure["keywords"]["backend"] = "auto"
        auto = _error_of(call)
        closure["keywords"]["backend"] = "torch"
        torch_error = _error_of(call)
        closure["keywords"]["backend"] = "reference"
    else:
        args = closure["args"]
        auto = _error_of(lambda: gru_cell(**args, backend="auto"))
        torch_error = _error_of(lambda: gru_cell(**args, backend="torch"))
    # torch.lstm does not check h0's layer count (nn.LSTM does, in Python): auto then raises nothing
    # either, as torch. The input size it does not check either, but the torch backend does (see below).
    assert ours is not None and (torch_error is not None or case == "h0 shape")
    assert auto is torch_error


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers, bidirectional, width, message", [
    (1, False, 6, "Expected 3, got 6"),  # wider than w_ih: torch.lstm alone reads past its end
    (1, True, 2, "Expected 3, got 2"),
    (2, True, 3, None),                  # layer 1 gets 2 x hidden = 8 features: valid
])
def test_torch_backend_refuses_an_input_wider_or_narrower_than_w_ih(cell, layers, bidirectional, width, message):
    torch.manual_seed(0)
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(3, 4, layers, bidirectional=bidirectional)
    x = torch.randn(5, 2, width)
    run = lstm if cell == "lstm" else gru
    if message is None:
        output = run(x, None, module._flat_weights, layers, bidirectional=bidirectional, backend="torch")[0]
        torch.testing.assert_close(output, module(x)[0], rtol=1e-5, atol=1e-6)
        return
    with pytest.raises(RuntimeError, match=message):
        module(x)  # nn.LSTM's own check, whose message the torch backend repeats
    with pytest.raises(RuntimeError, match=f"input.size\\(-1\\) must be equal to input_size. {message}"):
        run(x, None, module._flat_weights, layers, bidirectional=bidirectional, backend="torch")


def test_torch_backend_checks_the_input_size_of_every_layer():
    module = torch.nn.LSTM(3, 4, 2)
    params = list(module._flat_weights)
    params[4] = torch.randn(16, 5)  # layer 1's w_ih expects 5 features, layer 0 gives 4
    with pytest.raises(RuntimeError, match=r"input_size \(layer 1\). Expected 5, got 4"):
        lstm(torch.randn(5, 2, 3), None, params, 2, backend="torch")


def test_explain_names_the_backend():
    module, x = _module_case("lstm", 1, False, False, (5, 2, 3), torch.float32)
    for backend, expected in (("auto", "torch"), ("torch", "torch"), ("reference", "reference")):
        explanation = dlkernels.explain(lambda: lstm(x, None, module._flat_weights, 1, backend=backend))
        assert [decision.backend for decision in explanation] == [expected]
    cells = dlkernels.explain(lambda: gru_cell(torch.randn(2, 3), None, torch.randn(12, 3), torch.randn(12, 4),
                                               backend="reference"))
    assert [decision.backend for decision in cells] == ["reference"]
