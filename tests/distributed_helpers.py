"""Run a function in N processes joined by a gloo process group, as torchrun would, and collect what each returns.

    results = run_processes(tmp_path, fn, *args)   # fn(rank, world, *args) -> picklable; one result per rank

fn must be a module-level function (processes are spawned, so it is pickled by name). A collective that one rank
never reaches fails after COLLECTIVE_TIMEOUT rather than hanging the test run.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=60)


def _entry(rank: int, world: int, folder: str, fn, args: tuple, backend: str = "gloo") -> None:
    torch.set_num_threads(1)  # N processes share the CI's cores
    if backend == "nccl":
        torch.cuda.set_device(rank)  # one GPU per rank
    dist.init_process_group(backend, init_method=f"file://{folder}/store", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        result = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    torch.save(result, f"{folder}/rank{rank}.pt")


def run_processes(folder: Path, fn, *args, world: int = 2, backend: str = "gloo") -> list:
    """backend "nccl": rank r runs on cuda:r (needs `world` GPUs)."""
    folder.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_entry, args=(world, str(folder), fn, args, backend), nprocs=world, join=True,
                       start_method="spawn")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
