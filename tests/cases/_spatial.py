"""Helpers shared by the generators of the 4-D image ops (pool2d, conv2d): inputs in every layout, the
comparison with float64 torch, and the refusal check for invalid calls.

Layouts: "nchw" and "channels_last" (the kernels' two layouts), "strided" (every second element
along W of a larger buffer, offset by one: neither layout, so the op must copy it into one) and
"transposed" (H and W swapped in memory: an NCHW view with the innermost stride on H).
"""
from __future__ import annotations

import zlib

import torch

from helpers import TOLERANCES

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64, "int32": torch.int32}
LAYOUTS = ("nchw", "channels_last", "strided", "transposed")


def case_seed(case) -> int:
    """A seed that depends on the case only, so each case draws the same tensors on every run."""
    return zlib.crc32(case.id.encode())


def randn(shape, dtype: torch.dtype, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    values = torch.randn(tuple(shape), generator=generator, dtype=torch.float64) * scale
    return values.to(dtype)


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x (any strides) with the same values in `layout`; 3-D tensors only take "strided"."""
    if layout == "nchw" or (x.dim() != 4 and layout in ("channels_last", "transposed")):
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided":
        buffer = torch.zeros((*x.shape[:-1], 2 * x.shape[-1] + 1), dtype=x.dtype)
        view = buffer[..., 1::2]
        view.copy_(x)
        return view
    raise ValueError(f"unknown layout {layout!r}")


def fill(shape, dtype: torch.dtype, generator: torch.Generator, values: str = "randn") -> torch.Tensor:
    """"randn"; "ties" (integers 0..2: most windows hold equal maxima); "nan" (randn with NaNs and
    one plane of -inf); "int" (integers, for dtype-refusal cases)."""
    if values in ("ties", "int"):
        return torch.randint(0, 3, tuple(shape), generator=generator).to(dtype)
    x = randn(shape, torch.float64, generator)
    if values == "nan":
        flat = x.view(-1)
        picks = torch.randint(0, flat.numel(), (max(1, flat.numel() // 50),), generator=generator)
        flat[picks] = float("nan")
        x[(0,) * (x.dim() - 2)] = float("-inf")  # a whole plane: windows with no finite value
    elif values != "randn":
        raise ValueError(f"unknown values {values!r}")
    return x.to(dtype)


def _mismatch(case, backend, what, error) -> AssertionError:
    return AssertionError(f"{case.id} [{backend}] {what}: {error}")


def assert_matches(case, backend, what, actual, expected, dtype, exact=False):
    """actual (in dtype) against expected (float64 torch): exactly, or within tests/helpers.py TOLERANCES."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise _mismatch(case, backend, what, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    if actual.dtype != expected.dtype and actual.dtype != dtype:
        raise _mismatch(case, backend, what, f"dtype {actual.dtype} != {dtype}")
    rtol, atol = (0.0, 0.0) if exact else TOLERANCES[dtype]
    expected = expected.to(dtype) if exact and expected.is_floating_point() else expected
    try:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True,
                                   check_dtype=False)
    except AssertionError as error:
        raise _mismatch(case, backend, what, error) from None


def assert_refused(case, backend, call, torch_error: BaseException | None, call_torch):
    """An invalid call: our backend raises a clear error (a ValueError or TypeError that names the op),
    never a result; backend="auto" raises torch's exact error, or returns torch's result where torch
    accepts what ours refuse (torch_error None)."""
    try:
        call(backend)
    except (ValueError, TypeError) as error:
        if not str(error).startswith(case.op):
            raise _mismatch(case, backend, "refusal", f"the error does not name the op: {error!r}") from None
    except Exception as error:  # noqa: BLE001 - any other exception is an unclear error
        raise _mismatch(case, backend, "refusal", f"unclear error {error!r}, "
                                                  f"torch says {torch_error!r}") from None
    else:
        raise _mismatch(case, backend, "refusal", f"returned a result where torch raises {torch_error!r}"
                        if torch_error is not None else "returned a result for a call it must refuse")
    if torch_error is None:
        expected = call_torch()
        actual = call("auto")
        for a, e in zip(*(v if isinstance(v, tuple) else (v,) for v in (actual, expected))):
            if not torch.equal(a, e) and not (a.is_floating_point() and torch.allclose(a, e, equal_nan=True)):
                raise _mismatch(case, "auto", "refusal", "auto does not return torch's result")
        return
    try:
        call("auto")
    except Exception as error:  # noqa: BLE001 - compared with torch's below
        if type(error) is not type(torch_error) or str(error) != str(torch_error):
            raise _mismatch(case, "auto", "refusal", f"{error!r} is not torch's {torch_error!r}") from None
    else:
        raise _mismatch(case, "auto", "refusal", f"returned a result where torch raises {torch_error!r}")
