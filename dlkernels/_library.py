"""The dlk operator namespace: ops defined once and registered per dispatch key.

`torch.library.custom_op` costs about 20 µs a call on the host; an op defined with
`torch.library.Library(...).define/impl` and called as `torch.ops.dlk.<name>.default` costs a few. So
each op here is a schema plus one kernel for the CPU and CUDA keys (our backends pick the device
themselves), a fake implementation (torch.compile, meta tensors) and, for differentiable ops, an
Autograd kernel that takes the autograd.Function path only when a gradient is needed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

LIBRARY = torch.library.Library("dlk", "DEF")
_BELOW_AUTOGRAD = torch._C._after_autograd_keyset


def _needs_grad(args) -> bool:
    for value in args:
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return True
        if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) and v.requires_grad for v in value):
            return True
    return False


def define(schema: str, impl: Callable, fake: Callable, *, setup_context: Callable | None = None,
           backward: Callable | None = None) -> torch._ops.OpOverload:
    """Define dlk::<name> from `schema` ("name(Tensor x, int[] k, ...) -> Tensor") and register it.

    `setup_context(ctx, inputs, output)` and `backward(ctx, *grad_outputs)` follow
    torch.library.register_autograd's convention; without them the op has no derivative (autograd
    then refuses to differentiate through it, which is what double backward of our ops meets).
    """
    name = schema.split("(", 1)[0]
    LIBRARY.define(schema)
    op = getattr(torch.ops.dlk, name).default
    LIBRARY.impl(name, impl, "CPU")
    LIBRARY.impl(name, impl, "CUDA")
    torch.library.register_fake(f"dlk::{name}", fake, lib=LIBRARY)
    if backward is not None:
        _register_autograd(name, op, setup_context, backward)
    return op


def _register_autograd(name: str, op, setup_context: Callable, backward: Callable) -> None:
    def forward(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    function = type(f"{name}_function", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and _needs_grad(args):
            return function.apply(*args)
        return op.redispatch(keyset & _BELOW_AUTOGRAD, *args)

    LIBRARY.impl(name, autograd_kernel, "Autograd", with_keyset=True)
