"""BatchNorm2d fused with ReLU or LeakyReLU (and a residual add): torch.nn.BatchNorm2d's arguments and state_dict."""
from __future__ import annotations

from torch import Tensor, nn

from dlkernels.ops.batch_norm import batch_norm_relu


class BatchNormReLU2d(nn.BatchNorm2d):
    """act(BatchNorm2d(x)): activation="relu" (default), "leaky_relu" (nn.LeakyReLU(negative_slope), torch's
    default slope 0.01) or None, a plain BatchNorm2d drop-in.

    Subclassing nn.BatchNorm2d keeps weight, bias, running_mean, running_var and
    num_batches_tracked, so a torch.nn.BatchNorm2d state_dict loads unchanged.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias: bool = True, activation: str | None = "relu",
                 negative_slope: float = 0.01, backend: str = "auto"):
        # bias=False (affine weight, no shift) is new in torch 2.13: passed on only when asked for, so that an
        # older torch still builds the default module (and rejects bias=False as its BatchNorm2d would).
        without_bias = {} if bias else {"bias": False}
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, **without_bias)
        self.activation = activation
        self.negative_slope = negative_slope
        self.backend = backend

    def _normalize(self, input: Tensor, residual: Tensor | None) -> Tensor:
        self._check_input_dim(input)
        # Same bookkeeping as torch.nn.modules.batchnorm._BatchNorm.forward.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_running = not self.training or self.track_running_stats
        return batch_norm_relu(input, self.running_mean if keep_running else None,
                               self.running_var if keep_running else None, self.weight, self.bias,
                               use_batch_stats, momentum, self.eps, residual=residual,
                               activation=self.activation, negative_slope=self.negative_slope,
                               backend=self.backend)

    def forward(self, input: Tensor) -> Tensor:
        return self._normalize(input, None)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.activation == "leaky_relu" else ""
        return super().extra_repr() + f", activation={self.activation!r}{slope}"


class BatchNormAddReLU2d(BatchNormReLU2d):
    """act(BatchNorm2d(x) + residual): ResNet's bn -> add -> relu in one pass."""

    def forward(self, input: Tensor, residual: Tensor) -> Tensor:
        return self._normalize(input, residual)
