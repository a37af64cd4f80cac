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


def _entry(rank: int, world: int, folder: str, fn, args: tuple) -> None:
    torch.set_num_threads(1)  # N processes share the CI's cores
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        result = fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    torch.save(result, f"{folder}/rank{rank}.pt")


def run_processes(folder: Path, fn, *args, world: int = 2) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_entry, args=(world, str(folder), fn, args), nprocs=world, join=True, start_method="spawn")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
