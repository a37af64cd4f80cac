"""BatchNorm2d fused with ReLU or LeakyReLU (and a residual add): torch.nn.BatchNorm2d's arguments and state_dict;
the SyncBatchNorm variants take torch.nn.SyncBatchNorm's."""
from __future__ import annotations

from torch import Tensor, nn

from dlkernels.ops.batch_norm import batch_norm_relu
from dlkernels.ops.sync_batch_norm import sync_batch_norm_relu


def _bookkeeping(bn: nn.modules.batchnorm._BatchNorm):
    """torch.nn.modules.batchnorm._BatchNorm.forward's bookkeeping: counts the batch, and returns the momentum, whether
    the batch's own statistics normalise it, and the running statistics to pass (None when not to be touched)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep_running = not bn.training or bn.track_running_stats
    return momentum, use_batch_stats, bn.running_mean if keep_running else None, \
        bn.running_var if keep_running else None


def _bias_argument(bias: bool) -> dict:
    """bias=False (affine weight, no shift) is new in torch 2.13: passed on only when asked for, so that an older
    torch still builds the default module (and rejects bias=False as its batch norms would)."""
    return {} if bias else {"bias": False}


class _Fused:
    """What our batch-norm modules add to torch's: the activation, its slope and the backend, and forward through
    the subclass's _normalize(input, residual). Listed before the torch base class, so its forward wins."""

    def _set_fusion(self, activation: str | None, negative_slope: float, backend: str) -> None:
        self.activation = activation
        self.negative_slope = negative_slope
        self.backend = backend

    def forward(self, input: Tensor) -> Tensor:
        return self._normalize(input, None)

    def extra_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.activation == "leaky_relu" else ""
        return super().extra_repr() + f", activation={self.activation!r}{slope}"


class _AddsResidual:
    """forward(input, residual): act(batch_norm(input) + residual) in one pass."""

    def forward(self, input: Tensor, residual: Tensor) -> Tensor:
        return self._normalize(input, residual)


class BatchNormReLU2d(_Fused, nn.BatchNorm2d):
    """act(BatchNorm2d(x)): activation="relu" (default), "leaky_relu" (nn.LeakyReLU(negative_slope), torch's
    default slope 0.01) or None, a plain BatchNorm2d drop-in.

    Subclassing nn.BatchNorm2d keeps weight, bias, running_mean, running_var and
    num_batches_tracked, so a torch.nn.BatchNorm2d state_dict loads unchanged.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias: bool = True, activation: str | None = "relu",
                 negative_slope: float = 0.01, backend: str = "auto"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         **_bias_argument(bias))
        self._set_fusion(activation, negative_slope, backend)

    def _normalize(self, input: Tensor, residual: Tensor | None) -> Tensor:
        self._check_input_dim(input)
        momentum, use_batch_stats, running_mean, running_var = _bookkeeping(self)
        return batch_norm_relu(input, running_mean, running_var, self.weight, self.bias, use_batch_stats, momentum,
                               self.eps, residual=residual, activation=self.activation,
                               negative_slope=self.negative_slope, backend=self.backend)


class BatchNormAddReLU2d(_AddsResidual, BatchNormReLU2d):
    """act(BatchNorm2d(x) + residual): ResNet's bn -> add -> relu in one pass."""


class SyncBatchNormReLU2d(_Fused, nn.modules.batchnorm._BatchNorm):
    """act(SyncBatchNorm(x)): torch.nn.SyncBatchNorm's arguments, state_dict and semantics on our fused kernels,
    with BatchNormReLU2d's activation, negative_slope and backend.

    In training, with torch.distributed initialised and more than one process in `process_group` (None: the
    default group), the batch statistics are those of the whole batch across the processes (the per-process
    sums of our kernels, gathered; see dlkernels/ops/sync_batch_norm.py) and the input gradient accounts for
    them; weight and bias gradients are each process's own, as torch's (DDP averages them). Otherwise (eval,
    one process) it is BatchNormReLU2d. Any input of 2 or more dimensions (N, C, ...), as torch's; CPU tensors
    too, which torch's nn.SyncBatchNorm refuses. Not an nn.SyncBatchNorm subclass: DistributedDataParallel
    refuses those in CPU modules.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None, *, bias: bool = True, activation: str | None = "relu",
                 negative_slope: float = 0.01, backend: str = "auto"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         **_bias_argument(bias))
        self.process_group = process_group
        self._set_fusion(activation, negative_slope, backend)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
        if input.size(1) == 0:
            raise ValueError("SyncBatchNormReLU2d: the input must have at least one channel")

    def _normalize(self, input: Tensor, residual: Tensor | None) -> Tensor:
        self._check_input_dim(input)
        shape = input.shape
        if input.dim() > 4:  # (N, C, D, H, W) -> (N, C, D, H * W): a view in NCDHW and channels_last_3d
            input = input.flatten(3)
            residual = None if residual is None else residual.reshape(input.shape)
        momentum, use_batch_stats, running_mean, running_var = _bookkeeping(self)
        options = dict(residual=residual, activation=self.activation, negative_slope=self.negative_slope,
                       backend=self.backend)
        if self.training:  # as torch's: never synchronised in eval, even when normalising with batch statistics
            out = sync_batch_norm_relu(input, running_mean, running_var, self.weight, self.bias, True, momentum,
                                       self.eps, process_group=self.process_group, **options)
        else:
            out = batch_norm_relu(input, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                                  momentum, self.eps, **options)
        return out if input.shape == shape else out.reshape(shape)  # not a view: FSDP2 warns of those

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """torch.nn.SyncBatchNorm.convert_sync_batchnorm for models built of our modules: BatchNormReLU2d becomes
        SyncBatchNormReLU2d and BatchNormAddReLU2d SyncBatchNormAddReLU2d, keeping activation, slope, backend,
        parameters, buffers and train/eval; torch's BatchNorm1d/2d/3d become SyncBatchNormReLU2d(activation=None).
        (torch's own would turn ours into plain nn.SyncBatchNorm and drop the fused activation.)"""
        if type(module) in _SYNC_OF:
            target = _SYNC_OF[type(module)]
            extra = {"activation": None, "backend": "auto"} if type(module) in _TORCH_BATCH_NORMS else \
                {"activation": module.activation, "negative_slope": module.negative_slope, "backend": module.backend}
            new = target(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                         process_group, bias=module.bias is not None or not module.affine, **extra)
            # The very tensors, as torch's convert_sync_batchnorm: an optimizer built before still updates them.
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                setattr(new, name, tensor)
            return new.train(module.training)
        for name, child in module.named_children():
            module.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return module


class SyncBatchNormAddReLU2d(_AddsResidual, SyncBatchNormReLU2d):
    """act(SyncBatchNorm(x) + residual): BatchNormAddReLU2d with the statistics of the whole batch."""


_TORCH_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_SYNC_OF = {BatchNormReLU2d: SyncBatchNormReLU2d, BatchNormAddReLU2d: SyncBatchNormAddReLU2d,
            **{t: SyncBatchNormReLU2d for t in _TORCH_BATCH_NORMS}}
