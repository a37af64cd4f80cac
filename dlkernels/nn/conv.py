"""Conv2d and ConvTranspose2d drop-ins: torch.nn's arguments and state_dict; Conv2d adds a fused epilogue and an
algorithm choice."""
from __future__ import annotations

import torch.nn.functional as torch_F
from torch import Tensor, nn

from dlkernels.ops.conv2d import conv2d
from dlkernels.ops.conv_transpose2d import conv_transpose2d


class Conv2d(nn.Conv2d):
    """act(Conv2d(x) + residual), activation None (the default), "relu" or "leaky_relu" (nn.LeakyReLU(negative_slope),
    torch's default slope 0.01). Subclassing nn.Conv2d keeps weight, bias, initialisation and every
    padding_mode: non-zero modes pad the input first, as torch.nn.Conv2d itself does, then convolve
    without padding.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 padding_mode="zeros", device=None, dtype=None, *, activation: str | None = None,
                 negative_slope: float = 0.01, algo: str = "auto", backend: str = "auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.activation = activation
        self.negative_slope = negative_slope
        self.algo = algo
        self.backend = backend

    def forward(self, input: Tensor, residual: Tensor | None = None) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            input = torch_F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
                      algo=self.algo, activation=self.activation, negative_slope=self.negative_slope,
                      residual=residual, backend=self.backend)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.activation == "leaky_relu" else ""
        return super().extra_repr() + f", activation={self.activation!r}{slope}, algo={self.algo!r}"


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d on dlkernels.conv_transpose2d. Subclassing keeps weight, bias, initialisation and
    torch's output_size handling (forward(input, output_size) picks the output_padding that gives that size)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None, *, backend: str = "auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, padding_mode, device, dtype)
        self.backend = backend

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups,
                                self.dilation, backend=self.backend)
