"""SyncBatchNormReLU2d (dlkernels/ops/sync_batch_norm.py) against nn.BatchNorm2d on the whole batch.

Two processes on gloo each hold a slice of one batch (uneven slices, an empty one, one value per channel
included); outputs, input and residual gradients, the summed weight/bias gradients, the running statistics and
num_batches_tracked must equal nn.BatchNorm1d/2d/3d (+ residual, + ReLU/LeakyReLU) on the concatenated batch, in
float64, to RTOL/ATOL (exact math in float64 differs only in summation order, ~1e-15). torch's own
nn.SyncBatchNorm refuses CPU tensors, hence BatchNorm on the whole batch as the reference. Each spawn costs a few
seconds (two Python processes importing torch), so one spawn runs a whole list of cases.

In one process (no process group, or eval): SyncBatchNormReLU2d is BatchNormReLU2d; convert() and
convert_sync_batchnorm() build it with torch's state_dict keys.
"""
from __future__ import annotations

import copy
import dataclasses
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlkernels
from dlkernels.nn import BatchNormAddReLU2d, BatchNormReLU2d, SyncBatchNormAddReLU2d, SyncBatchNormReLU2d

from distributed_helpers import run_processes
from helpers import HAS_CUDA

RTOL, ATOL = 1e-11, 1e-12


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    backend: str
    shape: tuple  # of the whole batch
    split: tuple  # rows of the batch on rank 0 and rank 1
    activation: str | None = "relu"
    negative_slope: float = 0.01
    channels_last: bool = False
    residual: bool = False
    affine: bool = True
    momentum: float | None = 0.1


def _cases(backend: str) -> list[Case]:
    return [
        Case("nchw-relu-uneven", backend, (4, 3, 4, 5), (3, 1)),
        Case("channels_last-leaky-residual", backend, (4, 3, 4, 5), (2, 2), "leaky_relu", 0.2, channels_last=True,
             residual=True),
        Case("no-affine-empty-rank-cumulative", backend, (4, 3, 2, 3), (4, 0), None, affine=False, momentum=None),
        Case("2d-one-value-per-replica", backend, (2, 5), (1, 1)),
        Case("3d-leaky", backend, (3, 4, 6), (1, 2), "leaky_relu", 0.0),
        Case("5d-residual", backend, (3, 2, 2, 3, 2), (2, 1), residual=True),
    ]


TRITON_CASES = [] if HAS_CUDA else _cases("triton")[:2]  # the interpreter takes seconds per kernel
CASES = [*_cases("reference"), *_cases("torch"),
         Case("auto-negative-slope", "auto", (4, 3, 4, 5), (1, 3), "leaky_relu", -0.1, residual=True)]


def _data(case: Case) -> dict:
    g = torch.Generator().manual_seed(zlib.crc32(case.name.encode()))  # the same in every process
    channels = case.shape[1]
    new = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    return dict(x=new(*case.shape) * 2 + 1, grad=new(*case.shape), residual=new(*case.shape),
                weight=new(channels), bias=new(channels), running_mean=new(channels),
                running_var=torch.rand(channels, generator=g, dtype=torch.float64) + 0.5)


def _layout(t: torch.Tensor, case: Case) -> torch.Tensor:
    if not case.channels_last:
        return t.contiguous()
    return t.contiguous(memory_format={4: torch.channels_last, 5: torch.channels_last_3d}[t.dim()])


def _load(module: nn.Module, data: dict) -> None:
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, name) is not None:
                getattr(module, name).copy_(data[name])


def _rows(case: Case, rank: int) -> slice:
    start = sum(case.split[:rank])
    return slice(start, start + case.split[rank])


def _sync_rank(rank: int, world: int, cases: list[Case]) -> list[dict]:
    """One training step of each case on this rank's slice."""
    results = []
    for case in cases:
        data, rows = _data(case), _rows(case, rank)
        cls = SyncBatchNormAddReLU2d if case.residual else SyncBatchNormReLU2d
        bn = cls(case.shape[1], momentum=case.momentum, affine=case.affine, activation=case.activation,
                 negative_slope=case.negative_slope, backend=case.backend).double()
        _load(bn, data)
        x = _layout(data["x"][rows], case).requires_grad_()
        residual = _layout(data["residual"][rows], case).requires_grad_() if case.residual else None
        out = bn(x, residual) if case.residual else bn(x)
        out.backward(_layout(data["grad"][rows], case))
        results.append(dict(out=out.detach(), grad_x=x.grad, grad_residual=residual.grad if case.residual else None,
                            grad_weight=bn.weight.grad if case.affine else None,
                            grad_bias=bn.bias.grad if case.affine else None, running_mean=bn.running_mean,
                            running_var=bn.running_var, num_batches_tracked=bn.num_batches_tracked,
                            layout_kept=_layout(out, case).data_ptr() == out.data_ptr()))
    return results


def _reference(case: Case) -> dict:
    data = _data(case)
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(case.shape)]
    bn = cls(case.shape[1], momentum=case.momentum, affine=case.affine).double()
    _load(bn, data)
    x = data["x"].clone().requires_grad_()
    residual = data["residual"].clone().requires_grad_()
    out = bn(x) + residual if case.residual else bn(x)
    if case.activation == "relu":
        out = out.relu()
    elif case.activation == "leaky_relu":
        out = F.leaky_relu(out, case.negative_slope)
    out.backward(data["grad"])
    return dict(out=out.detach(), grad_x=x.grad, grad_residual=residual.grad if case.residual else None,
                grad_weight=bn.weight.grad if case.affine else None, grad_bias=bn.bias.grad if case.affine else None,
                running_mean=bn.running_mean, running_var=bn.running_var, num_batches_tracked=bn.num_batches_tracked)


def _check_all(cases: list[Case], ranks: list[list[dict]]) -> None:
    close = lambda actual, expected, what: torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL,
                                                                      msg=lambda m: f"{what}: {m}")
    for case, results in zip(cases, zip(*ranks)):
        expected = _reference(case)
        for key in ("out", "grad_x", "grad_residual"):
            if expected[key] is not None:
                close(torch.cat([r[key] for r in results]), expected[key], f"{case.name} {key}")
        for key in ("grad_weight", "grad_bias"):  # each rank's own sum, as torch's SyncBatchNorm (DDP averages)
            if expected[key] is not None:
                close(sum(r[key] for r in results), expected[key], f"{case.name} {key} summed over ranks")
        for r in results:
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                close(r[key], expected[key], f"{case.name} {key}")
            assert r["layout_kept"], f"{case.name}: the output is not in the input's memory format"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[list[dict]]:
    """Every case, run in one spawn of two processes (each spawn costs seconds of imports)."""
    return run_processes(tmp_path_factory.mktemp("gloo"), _sync_rank, [*CASES, *TRITON_CASES])


def test_sync_batch_norm_two_processes_match_batch_norm_on_whole_batch(two_processes):
    _check_all(CASES, [results[:len(CASES)] for results in two_processes])


@pytest.mark.skipif(HAS_CUDA, reason="Triton's CPU interpreter is off when a GPU is present")
def test_sync_batch_norm_two_processes_triton(two_processes):
    _check_all(TRITON_CASES, [results[len(CASES):] for results in two_processes])


# ------------------------------------------------------------------------------ one process
@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("training", [True, False])
def test_one_process_is_batch_norm_relu(backend, training):
    """No process group (or eval): exactly BatchNormReLU2d / BatchNormAddReLU2d."""
    torch.manual_seed(0)
    for sync_cls, cls in ((SyncBatchNormReLU2d, BatchNormReLU2d), (SyncBatchNormAddReLU2d, BatchNormAddReLU2d)):
        ours = sync_cls(3, activation="leaky_relu", negative_slope=0.1, backend=backend).double().train(training)
        plain = cls(3, activation="leaky_relu", negative_slope=0.1, backend=backend).double().train(training)
        _load(ours, _data(Case("one", backend, (4, 3, 2, 2), (4, 0))))
        plain.load_state_dict(ours.state_dict())
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
        args = (x, torch.randn_like(x)) if sync_cls is SyncBatchNormAddReLU2d else (x,)
        torch.testing.assert_close(ours(*args), plain(*args), rtol=0, atol=0)
        torch.testing.assert_close(ours.state_dict(), plain.state_dict(), rtol=0, atol=0)


def test_module_has_torch_sync_batch_norm_arguments_and_state_dict():
    torch.manual_seed(0)
    group = object()
    ours = SyncBatchNormReLU2d(6, 1e-3, 0.2, True, True, group, activation=None)
    theirs = nn.SyncBatchNorm(6, 1e-3, 0.2, True, True, group)
    assert ours.process_group is group and (ours.eps, ours.momentum) == (1e-3, 0.2)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    assert "activation=None" in repr(ours)


def test_convert_fuses_sync_batch_norm_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.BatchNorm2d(6), nn.LeakyReLU(0.2),
                          nn.BatchNorm2d(6)).double()
    model.train()(torch.randn(4, 3, 8, 8, dtype=torch.float64))  # non-trivial running statistics
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    keys, x = model.state_dict().keys(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = model.eval()(x)
    converted = dlkernels.convert(copy.deepcopy(model), backend="reference")
    assert [type(m) for m in converted] == [dlkernels.nn.Conv2d, SyncBatchNormReLU2d, nn.Identity,
                                            SyncBatchNormReLU2d, nn.Identity, SyncBatchNormReLU2d]
    assert [converted[i].activation for i in (1, 3, 5)] == ["relu", "leaky_relu", None]
    assert converted[3].negative_slope == 0.2 and converted[1].running_mean.dtype == torch.float64
    assert converted.state_dict().keys() == keys
    torch.testing.assert_close(converted(x), expected)


def test_convert_sync_batchnorm_keeps_fused_activations_and_tensors():
    torch.manual_seed(0)
    model = nn.Sequential(BatchNormReLU2d(4, activation="leaky_relu", negative_slope=0.3, backend="reference"),
                          BatchNormAddReLU2d(4, backend="reference"), nn.BatchNorm2d(4)).double().eval()
    weight = model[0].weight
    group = object()
    converted = SyncBatchNormReLU2d.convert_sync_batchnorm(model, process_group=group)
    assert [type(m) for m in converted] == [SyncBatchNormReLU2d, SyncBatchNormAddReLU2d, SyncBatchNormReLU2d]
    assert (converted[0].activation, converted[0].negative_slope, converted[0].backend) == ("leaky_relu", 0.3,
                                                                                           "reference")
    assert converted[2].activation is None and all(m.process_group is group for m in converted)
    assert converted[0].weight is weight and not converted[0].training  # the very parameters, as torch's


def test_sync_batch_norm_validates_like_batch_norm_relu():
    x = torch.randn(4, 3, 5, 5)
    with pytest.raises(ValueError, match="activation must be"):
        SyncBatchNormReLU2d(3, activation="gelu", backend="reference")(x)
    with pytest.raises(ValueError, match="expected at least 2D input"):
        SyncBatchNormReLU2d(3)(torch.randn(3))


# ---------------------------------------------------------------------------------------------
# Two GPUs on NCCL: against torch's own nn.SyncBatchNorm (+ ReLU), which runs there.

def _nccl_rank(rank: int, world: int, backend: str) -> dict:
    torch.manual_seed(0)
    device = torch.device("cuda", rank)
    channels, rows = 16, 5 + 2 * rank  # uneven slices
    x = torch.randn(12, channels, 9, 7, device=device)[(0 if rank == 0 else 5):(5 if rank == 0 else 12)]
    assert x.shape[0] == rows
    grad = torch.randn(12, channels, 9, 7, device=device)[(0 if rank == 0 else 5):(5 if rank == 0 else 12)]
    ours = SyncBatchNormReLU2d(channels, backend=backend).to(device)
    theirs = nn.SyncBatchNorm(channels).to(device)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(torch.linspace(0.5, 1.5, channels))
            module.bias.copy_(torch.linspace(-0.2, 0.2, channels))
    errors = {}
    for name, module, post in (("ours", ours, lambda t: t), ("torch", theirs, F.relu)):
        xi = x.clone().requires_grad_()
        out = post(module(xi))
        out.backward(grad)
        errors[name] = {"out": out.detach().cpu(), "grad_input": xi.grad.cpu(), "grad_weight": module.weight.grad.cpu(),
                        "grad_bias": module.bias.grad.cpu(), "running_mean": module.running_mean.cpu(),
                        "running_var": module.running_var.cpu()}
    return errors


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs for NCCL")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_sync_batch_norm_nccl_matches_torch_sync_batch_norm(tmp_path, backend):
    """fp32; tolerance: both reduce in fp32 in different orders (1e-4 relative, 1e-5 absolute)."""
    for rank, result in enumerate(run_processes(tmp_path, _nccl_rank, backend, backend="nccl")):
        for key, expected in result["torch"].items():
            torch.testing.assert_close(result["ours"][key], expected, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"rank {rank} {key}: {m}")
