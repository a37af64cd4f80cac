"""dlkernels.convert(model): swap torch.nn modules for their dlkernels drop-ins, in place."""
from __future__ import annotations

import inspect

from torch import nn

import dlkernels.nn as dnn

# torch.nn class -> dlkernels class. Exact types only: a user's subclass may change forward().
DROP_INS: dict[type, type] = {
    nn.MaxPool2d: dnn.MaxPool2d,
    nn.AvgPool2d: dnn.AvgPool2d,
    nn.AdaptiveAvgPool2d: dnn.AdaptiveAvgPool2d,
}


def _constructor_args(module: nn.Module, cls: type) -> dict:
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "backend")]
    return {name: getattr(module, name) for name in names}


def _replace(module: nn.Module, cls: type, backend: str) -> nn.Module:
    new = cls(**_constructor_args(module, cls), backend=backend)
    new.load_state_dict(module.state_dict())
    return new.train(module.training)


def convert(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Return `model` with every supported torch.nn module swapped for its drop-in (in place for children).

    Parameters and buffers are carried over through load_state_dict, so outputs and state_dict keys
    are unchanged; modules without a drop-in are left as they are.
    """
    replacement = DROP_INS.get(type(model))
    if replacement is not None:
        return _replace(model, replacement, backend)
    for name, child in model.named_children():
        setattr(model, name, convert(child, backend=backend))
    return model
