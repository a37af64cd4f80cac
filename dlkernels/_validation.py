"""Input checks shared by the public ops. Errors name the op, the argument and the value."""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(op: str, name: str, value, *, ranks: Sequence[int], dtypes=FLOAT_DTYPES,
                 like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor of one of `ranks`, `dtypes`, not empty; with `like`, also of its dtype and device."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() not in ranks:
        shapes = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{op}: {name} must be {shapes}, got shape {tuple(value.shape)}")
    if value.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} has unsupported dtype {value.dtype}; supported: {names}")
    if value.numel() == 0:
        raise ValueError(f"{op}: {name} must not be empty, got shape {tuple(value.shape)}")
    if like is not None and value.dtype != like.dtype:
        raise TypeError(f"{op}: {name} dtype {value.dtype} does not match the input's {like.dtype}")
    if like is not None and value.device != like.device:
        raise ValueError(f"{op}: {name} is on {value.device} but the input is on {like.device}")
    return value


def pair(op: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a 2-tuple (torch.nn.functional's convention)."""
    items = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else None
    if items is None or len(items) == 1:
        items = None if items is None else (items[0], items[0])
    if items is None or len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return items


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format a 4-D tensor is (or is closest to): channels_last or contiguous (NCHW)."""
    nchw, nhwc = x.is_contiguous(), x.is_contiguous(memory_format=torch.channels_last)
    if nchw and nhwc:  # C == 1 or 1x1 planes: the exact strides tell, as torch's suggest_memory_format
        n, c, h, w = x.shape
        return torch.channels_last if x.stride() == (c * h * w, 1, w * c, c) != (c * h * w, h * w, w, 1) \
            else torch.contiguous_format
    if nchw or nhwc:
        return torch.contiguous_format if nchw else torch.channels_last
    # Arbitrary strides: keep channels innermost if they already are, like torch's suggestion.
    return torch.channels_last if x.stride(1) < x.stride(3) else torch.contiguous_format


def as_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return x if x.is_contiguous(memory_format=memory_format) else x.contiguous(memory_format=memory_format)
