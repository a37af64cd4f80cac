"""Result files: benchmarks/results/<device>/<family>.json (the data), .md (the table), .png (the plot)."""
from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
from pathlib import Path

import torch

from dlkernels.bench import REFERENCE, REPO_ROOT

SHORT_PARAM_NAMES = {"kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d", "output_size": "out"}


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _command_output(*command: str) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _env_flag(name: str) -> bool | None:
    return None if name not in os.environ else os.environ[name] not in ("", "0")


def environment() -> dict:
    """What a reader needs to reproduce or discount the numbers: device, versions, commit, date."""
    import dlkernels

    driver = _command_output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    status = _command_output("git", "status", "--porcelain")
    info = dlkernels.info()
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "driver": driver.splitlines()[0] if driver else None,
        "torch": torch.__version__,
        "triton": info["triton"],
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda_archs": info["compiled"].get("cuda_archs", []),
        # Machines given a copy of the tree without .git are told the commit by the caller.
        "commit": _command_output("git", "rev-parse", "HEAD") or os.environ.get("DLK_BENCH_COMMIT"),
        "dirty": bool(status) if status is not None else _env_flag("DLK_BENCH_DIRTY"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write(out_dir: Path, results: dict, plot: bool = True) -> list[Path]:
    """Writes <family>.json, .md and (if asked and matplotlib is there) .png; returns the paths."""
    folder = Path(out_dir) / device_slug(results["device"])
    folder.mkdir(parents=True, exist_ok=True)
    # A run limited by --match keeps its own files, so runs over several subsets do not overwrite each other.
    selection = results.get("selection")
    stem = folder / (results["family"] + (f"-{device_slug(selection)}" if selection else ""))
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(results) + "\n")
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    if plot:
        try:
            written.append(write_plot(results, stem.with_suffix(".png")))
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
    return written


def load_all(results_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*/*.json"))]


def _params(params) -> str:
    return " ".join(f"{SHORT_PARAM_NAMES.get(k, k)}={v}" for k, v in params)


def _row_key(record: dict) -> tuple:
    return (record["op"], record["workload"], tuple(record["shape"]), _params(record["params"]),
            record["dtype"], record["layout"], record["direction"])


def _grouped(results: dict) -> tuple[list[str], dict]:
    """Backends (reference first) and {row key: {backend: record}} in the order measured."""
    rows: dict = {}
    backends = [REFERENCE]
    for record in results["cases"]:
        rows.setdefault(_row_key(record), {})[record["backend"]] = record
        if record["backend"] not in backends:
            backends.append(record["backend"])
    return backends, rows


def _milliseconds(record: dict | None) -> str:
    if record is None:
        return "–"
    return "failed" if record.get("time_ms") is None else f"{record['time_ms']:.3f}"


def render_markdown(results: dict, heading: str = "##") -> str:
    versions = (f"driver {results['driver']}, torch {results['torch']} (CUDA {results['cuda']}, "
                f"cuDNN {results['cudnn']}), triton {results['triton']}")
    commit = (results["commit"] or "unknown")[:12] + (" (with uncommitted changes)" if results["dirty"] else "")
    lines = [
        f"{heading} {results['family']} on {results['device']}"
        + (f" (cases matching `{results['selection']}`)" if results.get("selection") else ""),
        "",
        f"{versions}; commit {commit}; {results['date']}.",
        f"Times in ms: median of {results['trials']} trials ({results['timing']}). "
        f"`×` = {REFERENCE} time / our time (above 1: ours is faster). GB/s counts {results['bytes_counted']}; "
        f"the device copies at {results['copy_bandwidth_gbs']:.0f} GB/s.",
        "",
    ]
    if results.get("precision_flags"):
        lines[-1:-1] = ["Precision flags: " + ", ".join(f"`{k}={v}`" for k, v in results["precision_flags"].items())
                        + ". TFLOP/s count the direct algorithm's FLOPs; % of the device's dense peak."]
    backends, rows = _grouped(results)
    ours = backends[1:]
    by_flops = any("flops" in record for record in results["cases"])
    header = ["op", "workload", "input", "params", "dtype", "layout", "dir", f"{REFERENCE} ms"]
    for backend in ours:
        header += [f"{backend} ms", f"{backend} ×"]
    header.append("best TFLOP/s (% of peak)" if by_flops else "best GB/s (% of copy)")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, by_backend in rows.items():
        op, workload, shape, params, dtype, layout, direction = key
        cells = [f"`{op}`", workload, "×".join(map(str, shape)), params, dtype, layout, direction,
                 _milliseconds(by_backend.get(REFERENCE))]
        for backend in ours:
            record = by_backend.get(backend)
            speedup = record and record.get("speedup")
            cells += [_milliseconds(record), f"{speedup:.2f}×" if speedup else "–"]
        timed = [r for b in ours if (r := by_backend.get(b)) and r.get("time_ms") is not None]
        best = min(timed, key=lambda r: r["time_ms"], default=None)
        if best is None:
            cells.append("–")
        elif by_flops:
            peak = best.get("pct_dense_peak")
            cells.append(f"{best['tflops']:.1f} ({'?' if peak is None else f'{peak:.0f}'}%, {best['backend']})")
        else:
            cells.append(f"{best['gbs']:.0f} ({best['pct_copy_bandwidth']:.0f}%, {best['backend']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _geomean_summary(results, ours)
    return "\n".join(lines)


def geomean_speedups(results: dict) -> dict:
    """{(group, backend): (geometric-mean speedup, number of rows)} over records that carry a group."""
    logs: dict = {}
    for record in results["cases"]:
        if record.get("group") and record["backend"] != REFERENCE and record.get("speedup"):
            logs.setdefault((record["group"], record["backend"]), []).append(math.log(record["speedup"]))
    return {key: (math.exp(sum(v) / len(v)), len(v)) for key, v in logs.items()}


def _geomean_summary(results: dict, ours: list[str]) -> list[str]:
    means = geomean_speedups(results)
    if not means:
        return []
    groups = list(dict.fromkeys(group for group, _ in means))
    lines = ["", f"Geometric-mean speedup over {REFERENCE} per group (rows in the group):", "",
             "| group | " + " | ".join(ours) + " |", "|---|" + "---|" * len(ours)]
    for group in groups:
        cells = [f"{means[(group, b)][0]:.2f}× ({means[(group, b)][1]})" if (group, b) in means else "–"
                 for b in ours]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return lines


def write_plot(results: dict, path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends, rows = _grouped(results)
    ours = backends[1:]
    directions = list(dict.fromkeys(key[-1] for key in rows))
    heights = [sum(key[-1] == d for key in rows) for d in directions]
    figure, axes = plt.subplots(len(directions), 1, figsize=(10, 1 + 0.32 * sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights}, layout="constrained")
    bar = 0.8 / max(len(ours), 1)
    for axis, direction in zip(axes[:, 0], directions):
        keys = [key for key in rows if key[-1] == direction]
        for i, backend in enumerate(ours):
            speedups = [rows[key].get(backend, {}).get("speedup") or float("nan") for key in keys]
            axis.barh([y + i * bar for y in range(len(keys))], speedups, height=bar, label=backend)
        axis.set_xscale("log", base=2)  # 2x faster and 2x slower sit equally far from 1
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}×"))
        axis.set_yticks([y + bar * (len(ours) - 1) / 2 for y in range(len(keys))])
        axis.set_yticklabels([f"{k[0]} {'×'.join(map(str, k[2]))} {k[4]} {k[5]}" for k in keys], fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{direction}: speedup over {REFERENCE} (above 1 = ours faster)", fontsize=9)
        axis.legend(fontsize=7)
    commit = (results["commit"] or "unknown")[:12] + ("+dirty" if results["dirty"] else "")
    figure.suptitle(f"{results['family']} on {results['device']} · torch {results['torch']} · "
                    f"triton {results['triton']} · {commit} · {results['date'][:10]}", fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
