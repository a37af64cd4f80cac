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


class DlkOp:
    """dlk::<name> as the ops call it: the OpOverload, but a call that needs no gradient skips the
    Python Autograd kernel (a few µs per call) by dispatching below autograd itself. Under
    torch.compile the op is called as it is, so tracing sees the dispatcher's view."""

    __slots__ = ("overload", "_needs_grad")

    def __init__(self, overload, needs_grad: Callable | None):
        self.overload, self._needs_grad = overload, needs_grad

    def __call__(self, *args):
        if torch.compiler.is_compiling() or torch.is_grad_enabled() and self._needs_grad(args):
            return self.overload(*args)
        with torch._C._AutoDispatchBelowAutograd():
            return self.overload(*args)


def define(schema: str, impl: Callable, fake: Callable, *, setup_context: Callable | None = None,
           backward: Callable | None = None) -> DlkOp:
    """Define dlk::<name> from `schema` ("name(Tensor x, int[] k, ...) -> Tensor") and register it.

    `setup_context(ctx, inputs, output)` and `backward(ctx, *grad_outputs)` follow
    torch.library.register_autograd's convention; without them the op has no derivative, and
    differentiating through it raises (which is what double backward of our ops meets).
    """
    name = schema.split("(", 1)[0]
    LIBRARY.define(schema)
    op = getattr(torch.ops.dlk, name).default
    LIBRARY.impl(name, impl, "CPU")
    LIBRARY.impl(name, impl, "CUDA")
    torch.library.register_fake(f"dlk::{name}", fake, lib=LIBRARY)
    if backward is None:  # without an Autograd kernel torch would differentiate it silently wrong (a warning)
        setup_context, backward = _no_context, _no_derivative(name)
    return DlkOp(op, _register_autograd(name, op, setup_context, backward))


def _no_context(ctx, inputs, output) -> None:
    pass


def _no_derivative(name: str) -> Callable:
    def backward(ctx, *grads):
        # custom_op's wording, which dlkernels.models' double-backward check reads
        raise RuntimeError(f"Trying to backward through dlk::{name} but no autograd formula was registered "
                           "(dlkernels has no double backward for this op yet)")
    return backward


def _register_autograd(name: str, op, setup_context: Callable, backward: Callable) -> Callable:
    def forward(*args):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    function = type(f"dlk_{name}", (torch.autograd.Function,), {  # grad_fn: dlk_<name>Backward
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })

    # Which arguments can carry a gradient, read once from the schema: the per-call check then looks
    # at those alone (this kernel runs on every call, gradient or not).
    types = [str(argument.type) for argument in op._schema.arguments]
    tensors = [i for i, kind in enumerate(types) if "Tensor" in kind and not kind.startswith("List")]
    tensor_lists = [i for i, kind in enumerate(types) if "Tensor" in kind and kind.startswith("List")]

    def needs_grad(args) -> bool:
        for i in tensors:
            if args[i] is not None and args[i].requires_grad:
                return True
        return any(t is not None and t.requires_grad for i in tensor_lists for t in args[i])

    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and needs_grad(args):
            return function.apply(*args)
        return op.redispatch(keyset & _BELOW_AUTOGRAD, *args)

    LIBRARY.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    return needs_grad
