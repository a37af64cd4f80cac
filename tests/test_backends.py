"""The choice behind backend="auto" (dlkernels._backends.dispatch), checked without a GPU.

A CPU tensor that says it is on CUDA stands in for a GPU tensor; the backends' availability, the
device name and CUDA synchronisation are patched, so what is tested is the policy alone: committed
results, autotune, fall-back to torch for calls ours do not cover, explain, and named backends.
"""
import time

import pytest
import torch

import dlkernels
from dlkernels import _backends


class PretendCuda(torch.Tensor):
    is_cuda = True
    device = torch.device("cuda", 0)


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(_backends, "_device_name", lambda device: "Pretend GPU")
    monkeypatch.setattr(_backends, "available_backends", lambda device: ["cuda", "triton"])
    monkeypatch.setattr(_backends, "unavailable_reason", lambda backend, device: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(_backends, "_POLICY", {})
    _backends.autotune(False)
    yield torch.zeros(2, 3, 4).as_subclass(PretendCuda)
    _backends.autotune(False)


def _call(like, backend="auto", refuse=(), cost=None, ran=None, shape="shape"):
    """One op call whose backends record that they ran; `refuse` lists ours that do not cover it."""
    ran = [] if ran is None else ran

    def prepare(chosen):
        if chosen in refuse:
            raise ValueError(f"toy: {chosen} does not cover this")

        def run():
            ran.append(chosen)
            time.sleep((cost or {}).get(chosen, 0))
            return chosen
        return run

    def run_torch():
        ran.append("torch")
        time.sleep((cost or {}).get("torch", 0))
        return "torch"

    return _backends.dispatch("toy", backend, like, prepare, run_torch, key=lambda: (shape,))


def test_auto_on_a_gpu_without_committed_results_runs_torch(gpu):
    explanation = dlkernels.explain(_call, gpu)
    assert explanation.result == "torch"
    assert "no committed results on Pretend GPU" in explanation[0].reason


def test_auto_follows_committed_results_and_falls_back_where_ours_do_not_cover(gpu, monkeypatch):
    monkeypatch.setattr(_backends, "_POLICY", {"Pretend GPU": {"toy": {"float32/bhsd": "triton"}}})
    assert _call(gpu) == "triton"
    explanation = dlkernels.explain(_call, gpu, refuse=("triton",))
    assert explanation.result == "torch"
    assert "triton does not cover this call (toy: triton does not cover this)" in explanation[0].reason


def test_autotune_measures_once_per_shape_and_keeps_the_fastest(gpu):
    dlkernels.autotune(True)
    ran = []
    cost = {"torch": 0.004, "cuda": 0.0, "triton": 0.002}
    assert _call(gpu, cost=cost, ran=ran) == "cuda"
    assert set(ran) == {"torch", "cuda", "triton"}  # each candidate timed on the first call
    ran.clear()
    assert _call(gpu, cost=cost, ran=ran) == "cuda" and ran == ["cuda"]  # then the winner alone
    assert _call(gpu, cost=cost, refuse=("cuda",), shape="other") == "triton"  # measured per shape class
    assert _call(gpu, cost=cost, refuse=("cuda",)) == "torch"  # a winner that refuses a call: torch runs
    dlkernels.autotune(True)  # switching it again forgets: cuda refuses this shape now, triton wins
    assert _call(gpu, cost=cost, refuse=("cuda",)) == "triton"


def test_autotune_does_not_time_candidates_while_a_cuda_graph_is_captured(gpu, monkeypatch):
    """Timing synchronises, which a capture forbids: the committed policy decides then (here: torch)."""
    dlkernels.autotune(True)
    monkeypatch.setattr(_backends, "capturing", lambda: True)
    ran = []
    assert _call(gpu, cost={"torch": 0.004, "cuda": 0.0, "triton": 0.002}, ran=ran) == "torch" and ran == ["torch"]
    monkeypatch.setattr(_backends, "capturing", lambda: False)
    assert _call(gpu, cost={"torch": 0.004, "cuda": 0.0, "triton": 0.002}, ran=ran) == "cuda"  # then it measures


def test_named_backends_run_or_raise_and_never_fall_back(gpu):
    assert _call(gpu, backend="triton") == "triton"
    assert _call(gpu, backend="torch") == "torch"
    with pytest.raises(ValueError, match="toy: cuda does not cover this"):
        _call(gpu, backend="cuda", refuse=("cuda",))
    with pytest.raises(ValueError, match="backend must be one of"):
        _call(gpu, backend="fastest")


def test_auto_on_cpu_runs_torch_without_preparing_ours():
    ran = []
    assert _call(torch.zeros(2), refuse=("reference", "triton", "cuda"), ran=ran) == "torch" and ran == ["torch"]
    assert _call([1.0], ran=ran) == "torch"  # not a tensor: torch says what is wrong with it


def test_explain_nests_and_reports_each_call():
    outer = dlkernels.explain(lambda: [_call(torch.zeros(1)), dlkernels.explain(_call, torch.zeros(1))])
    assert [d.op for d in outer] == ["toy"] and [d.op for d in outer.result[1]] == ["toy"]
    assert "toy" in str(outer) and "torch" in str(outer)


def test_policy_is_per_dtype_and_layout(gpu, monkeypatch):
    monkeypatch.setattr(_backends, "_POLICY", {"Pretend GPU": {"toy": {"float16/channels_last": "cuda",
                                                                       "float16/nchw": "triton"}}})
    image = torch.zeros(2, 3, 4, 5, dtype=torch.float16)
    assert _call(image.as_subclass(PretendCuda)) == "triton"
    assert _call(image.contiguous(memory_format=torch.channels_last).as_subclass(PretendCuda)) == "cuda"
    assert _call(image.float().as_subclass(PretendCuda)) == "torch"  # float32 unmeasured


def test_policy_is_derived_from_results_conservatively():
    from dlkernels.bench.policy import derive

    def row(backend, speedup, dtype="float16", layout="nchw", direction="fwd", error=None):
        return {"op": "conv2d", "backend": backend, "speedup": speedup, "dtype": dtype, "layout": layout,
                "direction": direction, "error": error}
    report = {"device": "H100", "cases": [
        row("torch", 1.0), row("cuda", 1.3), row("triton", 1.1), row("cuda", 1.2, direction="bwd"),
        row("triton", 1.5, direction="bwd"),  # both always faster: the better geomean wins (triton)
        row("cuda", 2.0, layout="channels_last"), row("cuda", 0.9, layout="channels_last", direction="bwd"),
        row("cuda", 1.5, dtype="bfloat16"), row("cuda", None, dtype="bfloat16", error="boom"),
    ]}
    assert derive([report, {"device": "cpu", "cases": []}]) == {"H100": {"conv2d": {"float16/nchw": "triton"}}}
