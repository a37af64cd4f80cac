"""One switch between a model built from dlkernels.nn modules and its torch.nn twin.

Every model takes `impl="dlkernels"` (our modules, `backend` passed down) or `impl="torch"` (torch.nn modules
only). Both build the same attributes in the same order, so parameter and buffer names (and initial values under
the same seed) are identical: one state_dict loads into both. Where our module fuses an activation that the
twin runs as a separate nn.ReLU or nn.LeakyReLU, the dlkernels model holds an nn.Identity under its name (no
parameters), as dlkernels.convert() does.
"""
from __future__ import annotations

from torch import nn

import dlkernels.nn as dnn

IMPLS = ("dlkernels", "torch")


class Layers:
    """Module constructors for one implementation; `fused` says whether activations are fused."""

    def __init__(self, impl: str = "dlkernels", backend: str = "auto"):
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl, self.backend = impl, backend
        self.ours = impl == "dlkernels"

    # Convolution, optionally with a fused ReLU or LeakyReLU (the twin then needs relu_after() or leaky_relu_after()).
    def conv(self, *args, activation: str | None = None, negative_slope: float = 0.01, **kwargs) -> nn.Module:
        if self.ours:
            return dnn.Conv2d(*args, activation=activation, negative_slope=negative_slope, backend=self.backend,
                              **kwargs)
        return nn.Conv2d(*args, **kwargs)

    def relu_after(self, fused: bool = True) -> nn.Module:
        """The ReLU that follows a module built with activation="relu": Identity where it was fused."""
        return nn.Identity() if self.ours and fused else nn.ReLU()

    def conv_relu(self, *args, **kwargs) -> list[nn.Module]:
        """[conv, relu] as two Sequential entries (torchvision's layout); ours fuses the ReLU into the conv."""
        return [self.conv(*args, activation="relu", **kwargs), self.relu_after()]

    def leaky_relu_after(self, negative_slope: float) -> nn.Module:
        """The LeakyReLU that follows a module built with activation="leaky_relu": Identity in ours."""
        return nn.Identity() if self.ours else nn.LeakyReLU(negative_slope)

    def conv_leaky_relu(self, *args, negative_slope: float, **kwargs) -> list[nn.Module]:
        """[conv, LeakyReLU(negative_slope)] as two Sequential entries; ours fuses the LeakyReLU into the conv."""
        return [self.conv(*args, activation="leaky_relu", negative_slope=negative_slope, **kwargs),
                self.leaky_relu_after(negative_slope)]

    def bn(self, num_features: int, *, relu: bool = False, **kwargs) -> nn.Module:
        if self.ours:
            return dnn.BatchNormReLU2d(num_features, activation="relu" if relu else None, backend=self.backend,
                                       **kwargs)
        return nn.BatchNorm2d(num_features, **kwargs)

    def bn_relu(self, num_features: int, **kwargs) -> list[nn.Module]:
        return [self.bn(num_features, relu=True, **kwargs), self.relu_after()]

    def bn_leaky_relu(self, num_features: int, negative_slope: float, **kwargs) -> list[nn.Module]:
        """[BatchNorm2d, LeakyReLU(negative_slope)]; ours fuses the LeakyReLU into the BatchNorm."""
        if self.ours:
            bn = dnn.BatchNormReLU2d(num_features, activation="leaky_relu", negative_slope=negative_slope,
                                     backend=self.backend, **kwargs)
        else:
            bn = nn.BatchNorm2d(num_features, **kwargs)
        return [bn, self.leaky_relu_after(negative_slope)]

    def bn_add_relu(self, num_features: int, **kwargs) -> nn.Module:
        """relu(bn(x) + residual): call through add_relu(bn, x, residual)."""
        if self.ours:
            return dnn.BatchNormAddReLU2d(num_features, backend=self.backend, **kwargs)
        return nn.BatchNorm2d(num_features, **kwargs)

    @staticmethod
    def add_relu(bn: nn.Module, x, residual):
        if isinstance(bn, (dnn.BatchNormAddReLU2d, dnn.SyncBatchNormAddReLU2d)):
            return bn(x, residual)
        return (bn(x) + residual).relu()

    def max_pool(self, *args, **kwargs) -> nn.Module:
        return dnn.MaxPool2d(*args, backend=self.backend, **kwargs) if self.ours else nn.MaxPool2d(*args, **kwargs)

    def avg_pool(self, *args, **kwargs) -> nn.Module:
        return dnn.AvgPool2d(*args, backend=self.backend, **kwargs) if self.ours else nn.AvgPool2d(*args, **kwargs)

    def adaptive_avg_pool(self, output_size) -> nn.Module:
        return dnn.AdaptiveAvgPool2d(output_size, backend=self.backend) if self.ours else \
            nn.AdaptiveAvgPool2d(output_size)

    def lstm(self, *args, **kwargs) -> nn.Module:
        return dnn.LSTM(*args, backend=self.backend, **kwargs) if self.ours else nn.LSTM(*args, **kwargs)

    def gru(self, *args, **kwargs) -> nn.Module:
        return dnn.GRU(*args, backend=self.backend, **kwargs) if self.ours else nn.GRU(*args, **kwargs)

    def mha(self, *args, **kwargs) -> nn.Module:
        if self.ours:
            return dnn.MultiheadAttention(*args, backend=self.backend, **kwargs)
        return nn.MultiheadAttention(*args, **kwargs)

    def sdpa(self, q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False):
        import torch.nn.functional as F

        import dlkernels
        if self.ours:
            return dlkernels.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                                          is_causal=is_causal, backend=self.backend)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)


def scaled(channels: int, width_mult: float) -> int:
    """A channel count scaled for a narrow test model (at least 1)."""
    return max(1, int(round(channels * width_mult)))
