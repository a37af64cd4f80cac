"""Train a dlkernels reference CNN with DistributedDataParallel (or FSDP2) on synthetic data: one process per GPU
(NCCL), or CPU processes (gloo).

    torchrun --nproc-per-node 2 examples/train_ddp.py --model resnet18 --sync-bn
    python examples/train_ddp.py --model MnistCNN --procs 2 --device cpu    # spawns its processes (no torchrun)
    python examples/train_ddp.py --wrap fsdp2

Every step draws one global batch (the same whatever the number of processes) and each process trains on its
slice, so the run is the one-process run on the whole batch (BatchNorm aside: per process, unless --sync-bn
makes it SyncBatchNormReLU2d, statistics over the whole batch). At the end every process checks that its
parameters equal rank 0's.
"""
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Log, autocast, parser  # noqa: E402

import dlkernels.models as M  # noqa: E402
from dlkernels.nn import SyncBatchNormReLU2d  # noqa: E402

MODELS = {"MnistCNN": (lambda **k: M.MnistCNN(**k), 28, 1), "CifarBNCNN": (lambda **k: M.CifarBNCNN(**k), 32, 3),
          "resnet18": (lambda **k: M.resnet18(num_classes=10, **k), 32, 3)}


def arguments():
    p = parser(__doc__.split("\n\n")[0], steps=50, batch=32)
    p.add_argument("--model", default="MnistCNN", choices=list(MODELS))
    p.add_argument("--wrap", default="ddp", choices=["ddp", "fsdp2"])
    p.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over every process")
    p.add_argument("--procs", type=int, default=None,
                   help="processes to spawn when not launched by torchrun (default: one per GPU, or 2 on CPU)")
    args = p.parse_args()
    if args.procs is None:
        args.procs = torch.cuda.device_count() if args.device.startswith("cuda") else 2
    return args


def wrap(model: nn.Module, args, device: torch.device) -> nn.Module:
    if args.sync_bn:
        model = SyncBatchNormReLU2d.convert_sync_batchnorm(model)
    if args.wrap == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard
    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    return fully_shard(model)


def batch(step: int, args, size: int, channels: int, device: torch.device):
    """This process's slice of the step's global batch: random images, labels from their mean brightness (a task
    the model can learn)."""
    g = torch.Generator().manual_seed(step)
    x = torch.randn(args.batch, channels, size, size, generator=g)
    y = (x.mean((1, 2, 3)) * size * 3).clamp(-4.99, 4.99).floor().long() + 5
    rows = slice(dist.get_rank() * args.batch // dist.get_world_size(),
                 (dist.get_rank() + 1) * args.batch // dist.get_world_size())
    return x[rows].to(device), y[rows].to(device)


def train(args) -> None:
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if args.device.startswith("cuda")
                          else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    make, size, channels = MODELS[args.model]
    torch.manual_seed(0)  # the same initial parameters everywhere (DDP also broadcasts rank 0's)
    model = wrap(make(impl=args.impl, backend=args.backend).to(device), args, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    log = Log(args)
    for step in range(args.steps):
        x, y = batch(step, args, size, channels, device)
        with autocast(args):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == 0:
            log(step, loss=loss.item())
    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # FSDP2's shards are DTensors
    flat = torch.cat([full(p).detach().reshape(-1).float() for p in model.parameters()])
    first = flat.clone()
    dist.broadcast(first, src=0)
    assert torch.equal(flat, first), f"rank {rank}: parameters differ from rank 0's"
    if rank == 0:
        print(f"{dist.get_world_size()} processes ({dist.get_backend()}), {args.wrap}"
              f"{' + SyncBatchNorm' if args.sync_bn else ''}: parameters equal on every rank")


def run(rank: int, world: int, store: str, args) -> None:
    """One spawned process (no torchrun)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        train(args)
    finally:
        dist.destroy_process_group()


def main():
    args = arguments()
    if "RANK" in os.environ:  # launched by torchrun: one process of many
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        try:
            train(args)
        finally:
            dist.destroy_process_group()
        return
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(run, args=(args.procs, f"{folder}/store", args), nprocs=args.procs, start_method="spawn")


if __name__ == "__main__":
    main()
