"""Reference models trained under torch.distributed (issue #16): two processes on gloo, each with half of every
batch, must end where one process training on the whole batches ends.

MnistCNN under DistributedDataParallel and under FSDP2 (torch.distributed.fsdp.fully_shard, which runs on CPU and
gloo in torch 2.13), ResNet-18 and the DCGAN pair with their BatchNorms converted to SyncBatchNormReLU2d under DDP,
against the unconverted model in one process (BatchNorm over the whole batch), and RowLSTM and the GPT decoder
under DDP. Classifiers take cross-entropy, the others a fixed random probe of their outputs per sample. All on the C++ reference in float64; SGD with
momentum and weight decay, a few steps; dropout off (its masks cannot match between a split and a whole batch).
Each rank's loss is the mean over its half, so DDP's and FSDP's gradient averaging gives the gradient of the mean
over the whole batch. Tolerance: RTOL of each tensor's largest magnitude (+ ATOL for values that are zero in exact
arithmetic), as tests/test_models.py: float64 sums in another order differ by ~1e-15, which a few steps through
deep BatchNorm stacks amplify by a few orders. Without SyncBatchNorm, BatchNorm under DDP normalises per replica,
as torch's does.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlkernels.models.registry import SPECS, outputs
from dlkernels.nn import SyncBatchNormReLU2d

from distributed_helpers import run_processes

RTOL, ATOL = 1e-9, 1e-13
STEPS, BATCH = 3, 8  # BATCH is split 4 + 4
SIDE = {"MnistCNN": 12, "resnet18": 32}  # images smaller than the specs' small ones: seconds per test
SIZE_ARGS = {"MnistCNN": {"image_size": 12}}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = SPECS[name].make(impl="dlkernels", backend="reference", **SIZE_ARGS.get(name, {})).double()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def _batches(name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for step in range(STEPS):
        (x,) = SPECS[name].inputs(batch=BATCH, dtype=torch.float64, seed=step)
        if name in SIDE:
            x = x[..., :SIDE[name], :SIDE[name]].contiguous()
        batches.append((x, torch.randint(0, 10, (BATCH,), generator=torch.Generator().manual_seed(step))))
    return batches


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: slice, step: int) -> torch.Tensor:
    """The mean over this rank's rows of a per-sample loss: cross-entropy for the classifiers, else sum(out * r)
    with fixed random r per sample of the whole batch (the models' outputs all lead with the batch)."""
    result = model(x[rows])
    if isinstance(result, torch.Tensor) and result.shape == (len(y[rows]), 10):
        return F.cross_entropy(result, y[rows])
    g = torch.Generator().manual_seed(100 + step)
    total = 0
    for out in outputs(result):
        probe = torch.randn((BATCH, *out.shape[1:]), generator=g, dtype=torch.float64)[rows]
        total = total + (out * probe).sum()
    return total / len(y[rows])


def _train(model: nn.Module, batches, rows: slice) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for step, (x, y) in enumerate(batches):
        loss = _loss(model, x, y, rows, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _state(model: nn.Module) -> dict:
    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2 shards are DTensors
    state = {name: full(p).detach().clone() for name, p in model.named_parameters()}
    state.update({name: full(b).clone() for name, b in model.named_buffers() if b.is_floating_point()})
    return state


def _train_rank(rank: int, world: int, name: str, wrap: str) -> dict:
    model = _model(name)
    if wrap == "ddp":
        trained = nn.parallel.DistributedDataParallel(model)
    elif wrap == "ddp+syncbn":
        trained = nn.parallel.DistributedDataParallel(SyncBatchNormReLU2d.convert_sync_batchnorm(model))
    else:
        from torch.distributed.fsdp import fully_shard
        for module in model.modules():
            if isinstance(module, nn.Sequential):
                fully_shard(module)
        trained = fully_shard(model)
    half = BATCH // world
    _train(trained, _batches(name), slice(rank * half, (rank + 1) * half))
    return _state(model)


# label -> (wrap, model). The DCGAN pair has BatchNorm, so it trains with SyncBatchNorm; the others have none.
CONFIGS = {"ddp": ("ddp", "MnistCNN"), "fsdp2": ("fsdp2", "MnistCNN"), "ddp+syncbn": ("ddp+syncbn", "resnet18"),
           "ddp RowLSTM": ("ddp", "RowLSTM"), "ddp GPT": ("ddp", "GPT"),
           "ddp+syncbn DCGAN32-G": ("ddp+syncbn", "DCGAN32-G"), "ddp+syncbn DCGAN32-D": ("ddp+syncbn", "DCGAN32-D")}


def _train_all(rank: int, world: int) -> dict:
    return {label: _train_rank(rank, world, name, wrap) for label, (wrap, name) in CONFIGS.items()}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    """Every configuration, trained in one spawn of two processes (each spawn costs seconds of imports)."""
    return run_processes(tmp_path_factory.mktemp("gloo"), _train_all)


def _check(label: str, ranks: list[dict]) -> None:
    wrap, name = CONFIGS[label]
    single = _model(name)
    _train(single, _batches(name), slice(None))
    expected = _state(single)
    for rank, states in enumerate(ranks):
        state = states[label]
        assert state.keys() == expected.keys()
        for key, e in expected.items():
            error = (state[key] - e).abs().max().item()
            scale = e.abs().max().item()
            assert error <= RTOL * scale + ATOL, f"{name} {wrap} rank {rank} {key}: error {error:.3g} (scale {scale:.3g})"
    initial = _state(_model(name))
    assert any((ranks[0][label][k] - v).abs().max() > 1e-3 for k, v in initial.items()), "nothing trained"


def test_ddp_mnist_cnn_matches_one_process(two_processes):
    _check("ddp", two_processes)


def test_fsdp2_mnist_cnn_matches_one_process(two_processes):
    _check("fsdp2", two_processes)


def test_ddp_resnet18_sync_batch_norm_matches_one_process(two_processes):
    """Every BatchNorm (and BatchNorm + residual + ReLU) synchronised: equal to BatchNorm on the whole batch."""
    _check("ddp+syncbn", two_processes)


@pytest.mark.parametrize("label", ["ddp RowLSTM", "ddp GPT", "ddp+syncbn DCGAN32-G", "ddp+syncbn DCGAN32-D"])
def test_ddp_rnn_transformer_and_gan_match_one_process(two_processes, label):
    _check(label, two_processes)
