"""Pooling modules. Subclassing torch.nn's keeps their arguments, repr and (empty) state_dicts."""
from __future__ import annotations

from torch import Tensor, nn

from dlkernels.ops import pool2d as F


class MaxPool2d(nn.MaxPool2d):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False,
                 *, backend: str = "auto"):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.backend = backend

    def forward(self, input: Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                            self.return_indices, backend=self.backend)


class AvgPool2d(nn.AvgPool2d):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend: str = "auto"):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        self.backend = backend

    def forward(self, input: Tensor):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override, backend=self.backend)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    def __init__(self, output_size, *, backend: str = "auto"):
        super().__init__(output_size)
        self.backend = backend

    def forward(self, input: Tensor):
        return F.adaptive_avg_pool2d(input, self.output_size, backend=self.backend)
