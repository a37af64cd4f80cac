"""`python -m dlkernels.bench policy`: what backend="auto" runs on each GPU, derived from committed results.

For every GPU with result files, every op and every (dtype, layout) class measured, one of ours is
chosen only if it ran every measured row of that class, forward and backward, without error and at
least as fast as torch (speedup >= 1); among several, the one with the best geometric-mean speedup.
Everything else stays on torch. The answer is dlkernels/auto_policy.json, which
dlkernels._backends reads at import: {"<GPU name>": {"<op>": {"<dtype>/<layout>": "<backend>"}}}.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from dlkernels.bench import REFERENCE
from dlkernels.bench.results import load_all

POLICY_FILE = Path(__file__).resolve().parents[1] / "auto_policy.json"
OURS = ("cuda", "triton")  # the variants (e.g. "cuda_wgmma") are opt-in, never picked by auto


def class_key(dtype: str, layout: str) -> str:
    return f"{dtype}/{layout}"


def derive(reports: list[dict]) -> dict:
    policy: dict = {}
    for report in reports:
        if report.get("device", "cpu") == "cpu" or "cases" not in report:
            continue  # the CPU correctness matrix and the host-overhead rows time nothing on a GPU
        speedups: dict = defaultdict(lambda: defaultdict(list))  # (op, class) -> backend -> speedups
        for record in report["cases"]:
            if record["backend"] == REFERENCE:
                continue
            speedup = record.get("speedup") if not record.get("error") else None
            speedups[(record["op"], class_key(record["dtype"], record["layout"]))][record["backend"]].append(speedup)
        device = policy.setdefault(report["device"], {})
        for (op, key), by_backend in speedups.items():
            winners = {backend: _geomean(values) for backend, values in by_backend.items()
                       if backend in OURS and values and all(v is not None and v >= 1.0 for v in values)}
            if winners:
                device.setdefault(op, {})[key] = max(winners, key=winners.get)
    return {device: ops for device, ops in policy.items() if ops}


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def write(results_dir: Path, policy_file: Path = POLICY_FILE) -> dict:
    policy = derive(load_all(results_dir))
    policy_file.write_text(json.dumps(policy, indent=1, sort_keys=True) + "\n")
    return policy
