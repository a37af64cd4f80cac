"""`python -m dlkernels.bench --ops overhead` on CPU: every public op, forward and forward+backward, timed against
the torch op, written with the environment it ran in.

Timing is cut to two short repeats here: the figures are noisy, so only their form is checked (positive, finite,
ratio = ours / torch), never the targets.
"""
import json
import math
import re

import pytest
import torch

import dlkernels
from dlkernels.bench import overhead
from dlkernels.bench.__main__ import main

# Named here, not read from the benchmark, so a workload dropped from it fails the test.
PUBLIC_OPS = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "conv2d", "batch_norm_relu (training)",
              "batch_norm_relu (eval)", "scaled_dot_product_attention", "attention", "lstm_cell", "gru_cell", "lstm",
              "gru"]
CONVERTED_MODELS = ["convert: small CNN", "convert: small LSTM"]
DIRECTIONS = ["forward", "forward+backward"]
ENVIRONMENT = ["device", "torch", "triton", "cuda", "commit", "dirty", "date", "cpu", "torch_threads", "timing"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(overhead, "QUICK_TIMING", (2, 0.2, 1))
        assert main(["--ops", "overhead", "--quick", "--out", str(out)]) == 0
    folder = out / "cpu"
    if torch.cuda.is_available():
        folder = out / overhead.results.device_slug(torch.cuda.get_device_name())
    return json.loads((folder / "overhead.json").read_text()), (folder / "overhead.md").read_text()


def test_public_ops_are_the_ones_timed():
    for op in PUBLIC_OPS:
        assert callable(getattr(dlkernels, op.split(" ")[0]))


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", PUBLIC_OPS + CONVERTED_MODELS)
def test_every_op_and_direction_has_an_auto_row_on_cpu(report, op, direction):
    data, table = report
    rows = [r for r in data["rows"] if (r["op"], r["direction"], r["device"], r["backend"]) ==
            (op, direction, "cpu", "auto")]
    assert len(rows) == 1, f"{op} {direction}: {len(rows)} auto rows on cpu"
    row = rows[0]
    assert row["error"] is None
    for key in ("ours_us", "torch_us"):
        assert math.isfinite(row[key]) and row[key] > 0, f"{op} {direction}: {key} = {row[key]}"
    assert row["ratio"] == pytest.approx(row["ours_us"] / row["torch_us"])
    assert len(row["ours_samples_us"]) == len(row["torch_samples_us"]) == data["repeats"] == 2
    assert row["target_ratio"] == (overhead.CONVERT_TARGET_RATIO if op.startswith("convert")
                                   else overhead.TARGET_RATIO)
    line = f"| `{op}` | {row['inputs']} | {direction} | cpu | auto | {row['ours_us']:.1f} |"
    assert line in table


def test_named_backends_are_timed_or_not_accepted(report):
    data, _ = report
    backends = {r["backend"] for r in data["rows"] if r["device"] == "cpu"}
    assert backends == set(overhead.backends_for("cpu")[0])
    assert "triton" not in backends  # the interpreter, when present, is listed as skipped instead
    for row in data["rows"]:
        assert row["error"] is None, f"{row['op']} {row['direction']} {row['backend']}: {row['error']}"
        assert row.get("not_accepted") or (row["ours_us"] > 0 and math.isfinite(row["ours_us"]))


def test_environment_is_recorded(report):
    data, table = report
    assert set(ENVIRONMENT) <= set(data)
    for key in ("device", "torch", "date", "cpu", "timing", "commit"):  # cuda and triton may be None
        assert data[key], f"{key} = {data[key]!r}"
    assert data["torch"] == torch.__version__ and data["triton"] == dlkernels.info()["triton"]
    assert data["torch_threads"] == 1 and "median over 2 repeats" in data["timing"]
    assert re.fullmatch(r"[0-9a-f]{40}", data["commit"])
    assert f"torch {torch.__version__}" in table and data["date"] in table and "median over 2 repeats" in table
