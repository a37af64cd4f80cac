"""The CPU correctness matrix (python -m dlkernels.bench without a GPU) must be able to fail.

Each family's float64 reference is built from the very inputs and parameters of the run it judges, so torch's own
float32 error is a few units of roundoff and the bar (2x that + a floor) is tight; planted faults fail the row:
a kernel output scaled by 1.01, and a float64 reference built with other weights and inputs (which must not widen
the bar but fail as "reference disagrees"), including the RNN reference as it used to be built (a module created
in float64 after seeding, whose initialisation draws other weights).
"""
import types
from unittest import mock

import pytest
import torch

import dlkernels
from dlkernels.bench import REFERENCE, load, selected
from dlkernels.bench.__main__ import REFERENCE_BOUND, check_row, correctness_matrix

# The C++ reference if it is built, else Triton (interpreted on CPU): the matrix's rules are what is tested here.
BACKEND = "reference" if "reference" in dlkernels.available_backends("cpu") else "triton"

# (family, terms selecting one of its SMALL_CASES, direction): a few small cases per family.
ROWS = [
    ("pool2d", "max_pool2d,11x11,float32,nchw", "bwd"),
    ("pool2d", "avg_pool2d,float16,channels_last", "fwd"),
    ("batch_norm", "training=True),2x3x5x5,float32", "fwd"),
    ("batch_norm", "residual=True, training=False),3x8x3x3,float16", "bwd"),
    ("conv2d", "algo=direct,2x16x6x6,float32", "wgrad"),
    ("conv2d", "algo=winograd_4x4,float32", "fwd"),
    ("attention", "causal=True, head_dim=32,33x32,float32", "bwd"),
    ("attention", "causal=False, head_dim=64,64x64,float16", "fwd"),
    ("rnn", "lstm(bidirectional=False,float32", "fwd"),
    ("rnn", "gru(bidirectional=True,float32", "fwd+bwd"),
    ("rnn", "lstm_cell,float32", "fwd+bwd"),
]
IDS = [f"{family}-{direction}-{terms}" for family, terms, direction in ROWS]


def _case(module, terms):
    cases = selected(module.SMALL_CASES, terms)
    assert cases, f"no small case matches {terms!r}"
    return cases[0]


def _planted(module, build):
    """A copy of a bench module whose build() is `build` (which may call the real one)."""
    planted = types.SimpleNamespace(**{name: getattr(module, name) for name in dir(module)
                                       if not name.startswith("__")})
    planted.build = build
    return planted


def _scaled_ours(module, factor=1.01):
    """Our kernels' output scaled by `factor`; torch and the float64 reference untouched."""
    def build(case, backend, direction, device, compute_dtype=None):
        fn = module.build(case, backend, direction, device, compute_dtype=compute_dtype)
        return fn if backend == REFERENCE else (lambda: fn() * factor)
    return _planted(module, build)


def _reference_with_other_weights(module):
    """The float64 reference drawn under another seed: other weights and inputs than the run it judges."""
    real_seed = torch.manual_seed

    def build(case, backend, direction, device, compute_dtype=None):
        if compute_dtype is None:
            return module.build(case, backend, direction, device)
        with mock.patch.object(torch, "manual_seed", lambda seed: real_seed(seed + 1)):
            return module.build(case, backend, direction, device, compute_dtype=compute_dtype)
    return _planted(module, build)


@pytest.mark.parametrize("family, terms, direction", ROWS, ids=IDS)
def test_honest_row_passes_with_a_tight_bar(family, terms, direction):
    module = load(family)
    case = _case(module, terms)
    row = check_row(module, case, direction, [BACKEND])
    assert row.ok, row.render()
    assert row.torch_relative <= REFERENCE_BOUND[case.dtype] / 5, row.render()
    if case.dtype == "float32":  # the same function in float32 and float64: a few units of roundoff apart
        assert row.torch_relative < 2e-6, row.render()
        bar = 64 * 2e-6 if case.kwargs.get("algo") == "winograd_4x4" else 4e-6  # relative, floor included
        assert row.tolerance < bar * max(row.scale, 1.0), row.render()


@pytest.mark.parametrize("family, terms, direction", ROWS, ids=IDS)
def test_kernel_scaled_by_1_01_fails(family, terms, direction):
    module = load(family)
    case = _case(module, terms)
    row = check_row(_scaled_ours(module), case, direction, [BACKEND])
    assert row.reference_ok, row.render()
    assert not row.cells[0].ok and not row.ok, row.render()
    assert "FAIL" in row.render()


@pytest.mark.parametrize("family, terms, direction", ROWS, ids=IDS)
def test_reference_with_other_weights_fails(family, terms, direction):
    module = load(family)
    case = _case(module, terms)
    row = check_row(_reference_with_other_weights(module), case, direction, [BACKEND])
    assert not row.reference_ok and not row.ok, row.render()
    assert row.torch_relative > 10 * REFERENCE_BOUND[case.dtype], row.render()
    assert "reference disagrees" in row.render()


@pytest.mark.parametrize("terms, direction", [("lstm(bidirectional=False,float32", "fwd"),
                                              ("gru_cell,float32", "fwd+bwd")])
def test_rnn_reference_made_in_float64_fails(terms, direction):
    """Issue 15: the reference used to be nn.LSTM(..., dtype=float64) created after seeding, another network."""
    module = load("rnn")

    def build(case, backend, direction, device, compute_dtype=None):
        if compute_dtype is None:
            return module.build(case, backend, direction, device)
        return module.build(case.with_(dtype=compute_dtype), backend, direction, device)
    row = check_row(_planted(module, build), _case(module, terms), direction, [BACKEND])
    assert not row.reference_ok and not row.ok, row.render()


def test_matrix_reports_a_planted_fault(capsys):
    """End to end: the matrix with every available backend says the row fails and returns False."""
    module = load("pool2d")
    terms = "max_pool2d,11x11,float32,nchw"
    assert correctness_matrix([module], terms)
    assert capsys.readouterr().out.rstrip().endswith("all pass")
    assert not correctness_matrix([_scaled_ours(module)], terms)
    out = capsys.readouterr().out
    assert "FAIL" in out and out.rstrip().endswith("SOME CASES FAIL")
