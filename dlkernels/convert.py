"""dlkernels.convert(model): swap torch.nn modules for their dlkernels drop-ins, in place."""
from __future__ import annotations

import inspect
import itertools

from torch import nn

import dlkernels.nn as dnn
from dlkernels.ops.attention import HEAD_DIMS

# torch.nn class -> (dlkernels class, extra constructor arguments). Exact types only: a user's
# subclass may change forward().
DROP_INS: dict[type, tuple[type, dict]] = {
    nn.Conv2d: (dnn.Conv2d, {}),
    nn.ConvTranspose2d: (dnn.ConvTranspose2d, {}),
    nn.MaxPool2d: (dnn.MaxPool2d, {}),
    nn.AvgPool2d: (dnn.AvgPool2d, {}),
    nn.AdaptiveAvgPool2d: (dnn.AdaptiveAvgPool2d, {}),
    nn.BatchNorm2d: (dnn.BatchNormReLU2d, {"activation": None}),
    nn.SyncBatchNorm: (dnn.SyncBatchNormReLU2d, {"activation": None}),
    nn.MultiheadAttention: (dnn.MultiheadAttention, {}),
    nn.LSTM: (dnn.LSTM, {}),
    nn.GRU: (dnn.GRU, {}),
    nn.LSTMCell: (dnn.LSTMCell, {}),
    nn.GRUCell: (dnn.GRUCell, {}),
}
# Constructor arguments that are not attributes of the module: taken from its tensors instead.
_NOT_ATTRIBUTES = ("self", "backend", "activation", "negative_slope", "algo", "device", "dtype")


def _constructor_args(module: nn.Module, cls: type) -> dict:
    if isinstance(module, nn.RNNBase):  # nn.LSTM / nn.GRU take *args, **kwargs: name them
        names = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"]
        return {name: getattr(module, name) for name in names}
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in _NOT_ATTRIBUTES]
    args = {name: getattr(module, name) for name in names if hasattr(module, name)}
    if cls in (dnn.Conv2d, dnn.ConvTranspose2d):  # bias=True is kept as the tensor (or None) under that name
        args["bias"] = module.bias is not None
    # likewise BatchNorm2d(bias=False) (torch >= 2.13); no tensors at all without affine
    if cls in (dnn.BatchNormReLU2d, dnn.SyncBatchNormReLU2d):
        args["bias"] = module.bias is not None or not module.affine
    if cls is dnn.MultiheadAttention:  # these two live only as tensors (or None)
        args["bias"] = module.in_proj_bias is not None
        args["add_bias_kv"] = module.bias_k is not None
    return args


def _replace(module: nn.Module, cls: type, extra: dict, backend: str) -> nn.Module:
    new = cls(**_constructor_args(module, cls), **extra, backend=backend)
    floating = [t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()]
    if floating:  # keep the original's device and dtype (num_batches_tracked stays int64)
        new.to(device=floating[0].device, dtype=floating[0].dtype)
    new.load_state_dict(module.state_dict())
    return new.train(module.training)


def _fuse_relu(model: nn.Sequential) -> None:
    """In a Sequential, (Sync)BatchNorm2d or Conv2d then ReLU or LeakyReLU becomes one fused module and an Identity
    (same keys). A LeakyReLU with a negative slope stays torch's: our kernels' backward needs slope >= 0."""
    children = list(model.named_children())
    for (name, child), (next_name, following) in zip(children, children[1:]):
        fusable = type(child) in (dnn.BatchNormReLU2d, dnn.SyncBatchNormReLU2d, dnn.Conv2d) and child.activation is None
        if fusable and type(following) is nn.ReLU:
            child.activation = "relu"
            setattr(model, next_name, nn.Identity())
        elif fusable and type(following) is nn.LeakyReLU and following.negative_slope >= 0:
            child.activation, child.negative_slope = "leaky_relu", following.negative_slope
            setattr(model, next_name, nn.Identity())


def _has_drop_in(module: nn.Module) -> bool:
    """False for the configurations our kernels do not run, which stay torch's modules."""
    if getattr(module, "proj_size", 0) != 0:  # LSTM projections
        return False
    if isinstance(module, nn.MultiheadAttention):  # our flash kernels' head dims only
        return module.head_dim in HEAD_DIMS
    return True


def convert(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Return `model` with every supported torch.nn module swapped for its drop-in (in place for children).

    Parameters and buffers are carried over, so outputs and state_dict keys are unchanged; a Conv2d,
    BatchNorm2d or SyncBatchNorm directly followed by ReLU or LeakyReLU (slope >= 0) inside an nn.Sequential runs
    as one fused kernel (nn.SyncBatchNorm becomes SyncBatchNormReLU2d: statistics over the process group, as
    torch's). Modules without a drop-in are left as they are, and so are configurations the kernels do not run
    (LSTM with proj_size, MultiheadAttention whose head dim is not one of HEAD_DIMS).
    """
    if type(model) in DROP_INS and _has_drop_in(model):
        cls, extra = DROP_INS[type(model)]
        return _replace(model, cls, extra, backend)
    for name, child in model.named_children():
        setattr(model, name, convert(child, backend=backend))
    if isinstance(model, nn.Sequential):
        _fuse_relu(model)
    return model


__all__ = ["DROP_INS", "convert"]
