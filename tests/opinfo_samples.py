"""PyTorch's own OpInfo samples, run through our ops (issue #12: "every OpInfo sample PyTorch ships for
these ops gives torch's result or torch's error through auto").

check_against_torch(name, ours, backend) runs every sample and error input of torch's OpInfo `name`
through `ours(*args, backend=backend, **kwargs)`:
  - backend "auto": torch's result (values, dtype, shape, gradients) or torch's error type;
  - one of our backends by name: torch's result, or a clear TypeError/ValueError saying what that
    backend does not cover; never a different answer.
"""
from __future__ import annotations

import functools

import torch

UNSUPPORTED = (TypeError, ValueError)


@functools.cache
def opinfo(name: str, variant: str = ""):
    # (PyTorch's test utilities freeze torch.backends flags on import: tests/conftest.py thaws them per test.)
    from torch.testing._internal.common_methods_invocations import op_db  # slow import (~8 s): once

    return next(op for op in op_db if op.name == name and op.variant_test_name == variant)


def _outcome(fn, sample, **extra):
    try:
        return fn(sample.input, *sample.args, **sample.kwargs, **extra), None
    except Exception as error:  # noqa: BLE001 - the error type is what gets compared
        return None, error


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _leaves(sample):
    return [t for t in _tensors([sample.input, *sample.args, *sample.kwargs.values()]) if t.requires_grad]


def _gradients(output, sample):
    leaves = _leaves(sample)
    outputs = [o for o in _tensors(output) if o.requires_grad]
    if not leaves or not outputs:
        return []
    grads = [torch.ones_like(o) for o in outputs]  # deterministic, so both sides see the same seed
    return torch.autograd.grad(outputs, leaves, grads, allow_unused=True)


def check_against_torch(name: str, ours, backend: str = "auto", *, device: str = "cpu",
                        dtypes=(torch.float32, torch.float64), variant: str = "", grad: bool = True,
                        rtol: float | None = None, atol: float | None = None, every: int = 1) -> dict:
    """`every` > 1 checks every n-th sample only (max_pool2d ships 1440). Returns counts {"same": n, "unsupported": n, "same_error": n} so callers can assert coverage."""
    info = opinfo(name, variant)
    counts = {"same": 0, "unsupported": 0, "same_error": 0}
    for dtype in dtypes:
        if dtype not in info.supported_dtypes(device):
            continue
        samples = info.sample_inputs(device, dtype, requires_grad=grad and info.supports_autograd)
        for index, sample in enumerate(samples):
            if index % every:
                continue
            expected, expected_error = _outcome(info.op, sample)
            actual, actual_error = _outcome(ours, sample, backend=backend)
            context = f"{name} {dtype} sample {sample.summary() if hasattr(sample, 'summary') else sample}"
            if expected_error is not None:
                assert actual_error is not None, f"torch raised {expected_error!r} but ours returned: {context}"
                if backend == "auto":
                    assert type(actual_error) is type(expected_error), f"{actual_error!r} != {expected_error!r}"
                counts["same_error"] += 1
                continue
            if actual_error is not None:
                assert backend != "auto" and isinstance(actual_error, UNSUPPORTED), \
                    f"ours raised {actual_error!r} where torch returned a result: {context}"
                counts["unsupported"] += 1
                continue
            torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{m}\n{context}")
            torch.testing.assert_close(_gradients(actual, sample), _gradients(expected, sample), rtol=rtol,
                                       atol=atol, msg=lambda m: f"gradients: {m}\n{context}")
            counts["same"] += 1
    error_inputs = info.error_inputs(device) if info.error_inputs_func is not None else []
    for error_input in error_inputs:
        sample = error_input.sample_input
        _, actual_error = _outcome(ours, sample, backend=backend)
        assert actual_error is not None, f"{name}: torch raises {error_input.error_type.__name__} on {sample}, ours not"
        if backend == "auto":
            assert isinstance(actual_error, error_input.error_type), f"{actual_error!r} vs {error_input.error_type}"
        else:
            assert isinstance(actual_error, (error_input.error_type, *UNSUPPORTED)), repr(actual_error)
        counts["same_error"] += 1
    return counts
