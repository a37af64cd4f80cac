"""BatchNorm (+ residual) (+ ReLU / LeakyReLU) with batch statistics over every replica of a process group:
torch.nn.SyncBatchNorm's semantics on our fused BatchNorm kernels (dlkernels/ops/batch_norm.py).

Training forward, on each replica:
  1. batch_norm_stats gives the mean and biased variance of the replica's own slice (eps = 0, so the variance
     comes back as invstd^-2 to rounding; with eps it would cancel when var << eps);
  2. torch.distributed all-gathers (mean, var, count) and the parallel-variance formula (Chan et al.) combines
     them. Counts weigh uneven slices right (a last partial batch, an empty replica), as torch's SyncBatchNorm's
     count all_gather does, and the combination never subtracts sums of squares;
  3. batch_norm_apply normalises with the global mean and invstd, adds the residual, applies the activation.
  Running statistics take the global mean and unbiased variance, as torch's do.
Backward: batch_norm_backward_reduce gives each replica's sum(g) and sum(g * xhat) (xhat with the global
statistics), one all_reduce sums them, batch_norm_backward_apply finishes the input gradient. Weight and bias
gradients stay the replica's own sums, as torch's SyncBatchNorm returns them: DDP averages them with every other
gradient.

Backends: ours run the steps above on implementation("batch_norm", backend). "torch" normalises with torch's own
SyncBatchNorm function on GPUs and, on CPU (where torch's batch_norm_stats & co. have no kernels), with the same
steps in plain torch ops (TorchSteps); it then adds the residual and applies the activation with torch ops.
Eval mode, or no initialised process group of more than one process: batch_norm_relu, per replica.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from dlkernels._backends import dispatch, implementation
from dlkernels._validation import as_layout
from dlkernels.ops.batch_norm import _check_activation, _stat_dtype, _validate, batch_norm_relu, kernel_operands

_OP = "sync_batch_norm_relu"


def world_size(process_group=None) -> int:
    """Processes in `process_group` (None: the default group); 1 when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group or dist.group.WORLD)


# --------------------------------------------------------------- the four steps in plain torch ops
_DIMS = (0, 2, 3)


def _per_channel(t: Tensor) -> Tensor:
    return t.view(1, -1, 1, 1)


class TorchSteps:
    """batch_norm_stats / apply / backward_reduce / backward_apply of dlkernels/_native/batch_norm.py in torch ops,
    without residual or activation (the torch backend applies those with torch after): the "torch" backend of
    the synchronised op on CPU, where torch's own SyncBatchNorm kernels do not exist."""

    @staticmethod
    def batch_norm_stats(x, running_mean, running_var, momentum, eps, channels_last):
        assert running_mean is None and running_var is None
        var, mean = torch.var_mean(x.to(_stat_dtype(x.dtype)), dim=_DIMS, correction=0)
        return mean, torch.rsqrt(var + eps)

    @staticmethod
    def batch_norm_apply(x, mean, invstd, weight, bias, residual, activation, channels_last, negative_slope=0.0):
        assert residual is None and not activation
        y = (x.to(mean.dtype) - _per_channel(mean)) * _per_channel(invstd)
        y = y if weight is None else y * _per_channel(weight)
        y = y if bias is None else y + _per_channel(bias)
        return y.to(x.dtype)

    @staticmethod
    def batch_norm_backward_reduce(grad_output, output, x, mean, invstd, activation, channels_last,
                                   negative_slope=0.0):
        assert not activation
        g = grad_output.to(mean.dtype)
        xhat = (x.to(mean.dtype) - _per_channel(mean)) * _per_channel(invstd)
        return g.sum(_DIMS), (g * xhat).sum(_DIMS)

    @staticmethod
    def batch_norm_backward_apply(grad_output, output, x, mean, invstd, weight, sum_dy, sum_dy_xhat, training,
                                  activation, want_grad_residual, channels_last, negative_slope=0.0):
        assert training and not activation and not want_grad_residual
        count = x.numel() // x.shape[1]
        g = grad_output.to(mean.dtype)
        xhat = (x.to(mean.dtype) - _per_channel(mean)) * _per_channel(invstd)
        scale = invstd if weight is None else invstd * weight
        grad = _per_channel(scale) * (g - _per_channel(sum_dy / count) - xhat * _per_channel(sum_dy_xhat / count))
        return grad.to(x.dtype), x.new_empty(0)


# ------------------------------------------------------------------------------ autograd
class _SyncBatchNormReLU(torch.autograd.Function):
    """act(batch_norm(x) + residual) of a 4-D x in its kernel layout, statistics synchronised over `group`.
    weight and bias are in the statistics' dtype (the caller casts them, differentiably)."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, running_mean, running_var, momentum, eps, activation, slope,
                channels_last, group, steps):
        channels, count = x.shape[1], x.numel() // max(x.shape[1], 1)
        stat_dtype = _stat_dtype(x.dtype)
        if count:
            mean, invstd = steps.batch_norm_stats(x, None, None, 0.0, 0.0, channels_last)
            var = invstd.pow(-2)  # 1 / inf^2 = 0 for a constant channel
        else:  # an empty replica still joins every collective, with count 0
            mean = var = torch.zeros(channels, dtype=stat_dtype, device=x.device)
        local = torch.cat([mean, var, mean.new_full((1,), count)])
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, local, group=group)
        table = torch.stack(gathered)  # (replicas, 2C + 1): means, variances, count
        means, variances, counts = table[:, :channels], table[:, channels:-1], table[:, -1:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total  # biased, over the whole batch
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            running_mean.copy_(torch.lerp(running_mean.to(stat_dtype), mean, momentum))
            unbiased = var * (total / (total - 1).clamp(min=1))  # one value in all: the biased, as our kernels do
            running_var.copy_(torch.lerp(running_var.to(stat_dtype), unbiased, momentum))
        if count:
            out = steps.batch_norm_apply(x, mean, invstd, weight, bias, residual, activation, channels_last, slope)
        else:
            out = torch.empty_like(x)
        ctx.save_for_backward(x, weight, mean, invstd, out if activation else None, count / total)
        ctx.options = (activation, slope, channels_last, group, steps, residual is not None)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, mean, invstd, output, share = ctx.saved_tensors
        activation, slope, channels_last, group, steps, has_residual = ctx.options
        needs = ctx.needs_input_grad
        grad_output = as_layout(grad_output, torch.channels_last if channels_last else torch.contiguous_format)
        if x.numel():
            sum_dy, sum_dy_xhat = steps.batch_norm_backward_reduce(grad_output, output, x, mean, invstd, activation,
                                                                   channels_last, slope)
        else:
            sum_dy, sum_dy_xhat = torch.zeros_like(mean), torch.zeros_like(mean)
        grad_weight = sum_dy_xhat if needs[1] else None  # the replica's own, as torch's SyncBatchNorm
        grad_bias = sum_dy if needs[2] else None
        grad_input = grad_residual = None
        want_residual = has_residual and needs[3]
        if needs[0] or want_residual:
            if needs[0]:
                sums = torch.cat([sum_dy, sum_dy_xhat])
                dist.all_reduce(sums, group=group)
                # backward_apply divides by the replica's count: scaled by count / total, it divides by the total.
                sum_dy, sum_dy_xhat = (sums * share).chunk(2)
            if x.numel():
                grad_input, grad_residual = steps.batch_norm_backward_apply(
                    grad_output, output, x, mean, invstd, weight, sum_dy, sum_dy_xhat, True, activation,
                    want_residual, channels_last, slope)
            else:
                grad_input, grad_residual = torch.zeros_like(x), torch.zeros_like(x)
        return (grad_input if needs[0] else None, grad_weight, grad_bias,
                grad_residual if want_residual else None, *([None] * 9))


# ------------------------------------------------------------------------------ public API
def _synchronised(input, running_mean, running_var, weight, bias, momentum, eps, residual, activation,
                  negative_slope, group, steps):
    operands = kernel_operands(input, residual, activation, negative_slope)
    out = _SyncBatchNormReLU.apply(operands.x, operands.as_stat(weight), operands.as_stat(bias), operands.residual,
                                   running_mean, running_var, float(momentum), float(eps), activation is not None,
                                   operands.slope, operands.channels_last, group, steps)
    return operands.restore_shape(out, input)


def _torch_activation(out: Tensor, residual: Tensor | None, activation: str | None, negative_slope: float) -> Tensor:
    if residual is not None:
        out = out + residual
    if activation == "leaky_relu":
        return F.leaky_relu(out, negative_slope)
    return out if activation is None else torch.relu(out)


def sync_batch_norm_relu(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                         weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
                         momentum: float = 0.1, eps: float = 1e-5, *, residual: Tensor | None = None,
                         activation: str | None = "relu", negative_slope: float = 0.01, process_group=None,
                         backend: str = "auto") -> Tensor:
    """batch_norm_relu whose training statistics span every process of `process_group` (None: the default group),
    as torch.nn.SyncBatchNorm's do. Each process passes its slice of the batch (slices may differ in size, or be
    empty); all must call it together. training=False, or no initialised group of more than one process, is
    batch_norm_relu on the local input. `backend` as batch_norm_relu's ("auto" follows its choice)."""
    group = process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
    if not training or world_size(group) == 1:
        return batch_norm_relu(input, running_mean, running_var, weight, bias, training, momentum, eps,
                               residual=residual, activation=activation, negative_slope=negative_slope,
                               backend=backend)

    def prepare(chosen: str):
        _validate(input, running_mean, running_var, weight, bias, True, momentum, eps, residual, activation,
                  negative_slope, op=_OP, per_replica=True)
        steps = implementation("batch_norm", chosen)
        return lambda: _synchronised(input, running_mean, running_var, weight, bias, momentum, eps, residual,
                                     activation, negative_slope, group, steps)

    def run_torch():
        _check_activation(activation, negative_slope)
        if input.device.type == "cpu":
            _validate(input, running_mean, running_var, weight, bias, True, momentum, eps, None, None, 0.0, op=_OP,
                      per_replica=True)
            out = _synchronised(input, running_mean, running_var, weight, bias, momentum, eps, None, None, 0.0,
                                group, TorchSteps)
        else:  # torch's own kernels (nn.SyncBatchNorm's autograd function)
            from torch.nn.modules._functions import SyncBatchNorm
            out = SyncBatchNorm.apply(input, weight, bias, running_mean, running_var, eps, momentum, group,
                                      world_size(group))
        return _torch_activation(out, residual, activation, negative_slope)

    # The per-replica kernels are batch_norm_relu's: "auto" follows the measurements of that op.
    return dispatch("batch_norm_relu", backend, input, prepare, run_torch)


__all__ = ["TorchSteps", "sync_batch_norm_relu", "world_size"]
