"""Host overhead per call: every public op against the torch op it stands for, on tiny inputs (issue #12, item 6).

    python -m dlkernels.bench --ops overhead [--quick] [--out DIR] [--match TERMS]

Tiny inputs make the kernels' own work negligible, so what is timed is the layer around them: argument checks,
backend choice, dispatch, autograd bookkeeping. Each op runs forward (under torch.no_grad()) and forward+backward
(inputs and weights require grad; backward starts from precomputed output gradients), on every backend the op
can run here ("auto" always, then each name in dlkernels._backends.BACKENDS that can run on the device), always
against the torch op in the same process. `dlkernels.convert(model)` is timed on a small CNN and a small LSTM
against the unconverted model the same way. On a GPU machine the CPU rows run too, then the GPU rows.

Targets (issue #12, benchmarks not tests): ours at most TARGET_RATIO x torch's host time per call, and a converted
model at most CONVERT_TARGET_RATIO x the unconverted one on CPU.
Results: <out>/<device>/overhead.json (every figure, with the environment) and overhead.md (the table).
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import dlkernels
from dlkernels import _backends
from dlkernels.bench import results

FAMILY = "overhead"
TARGET_RATIO = 1.5
CONVERT_TARGET_RATIO = 1.1
DIRECTIONS = ("forward", "forward+backward")
AUTO = "auto"
TORCH_OP = "torch op"  # the reference's key among the timed candidates; no backend name has a space
# Triton on CPU tensors is its interpreter, which times Python emulating a GPU, not a host's dispatch cost.
SKIPPED_ON_CPU = {"triton": "Triton on CPU is its interpreter: not a host-overhead measurement"}
# What an op raises, at its argument checks, for a backend it does not take (or not for these arguments): such a
# backend gets a "not accepted" row. Anything else a backend raises, and anything "auto" raises, is a failure.
NOT_ACCEPTED = (ValueError, NotImplementedError)
# (repeats, minimum milliseconds per repeat, warm-up calls): several repeats so one preempted repeat on a busy
# machine does not move the median; a repeat long enough that perf_counter_ns's resolution does not matter.
FULL_TIMING = (7, 20.0, 20)
QUICK_TIMING = (3, 2.0, 3)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One row group: our call and the torch call it stands for, on the same tiny inputs.

    build(device, requires_grad) -> (ours, reference): ours(backend) returns a zero-argument callable running our
    op (or converted model) on `backend`; reference() runs torch. Inputs and models are made once, in build.
    outputs(result) -> the tensors backward starts from."""
    op: str
    inputs: str      # the tiny input, described
    torch_op: str    # what it is timed against
    build: Callable
    outputs: Callable
    convert: bool = False  # a whole model through dlkernels.convert: the target is CONVERT_TARGET_RATIO

    def describe(self) -> str:
        return f"{self.op} {self.inputs}"


def _as_outputs(result) -> tuple:
    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


def _first_output(result) -> tuple:
    return (result[0],)


def _op(op: str, inputs: str, torch_op: str, make: Callable, ours: Callable, reference: Callable,
        outputs: Callable = _as_outputs) -> Workload:
    """make(device, requires_grad) -> argument tuple; ours(*args, backend=...) and reference(*args) use it."""
    def build(device, requires_grad):
        args = make(device, requires_grad)
        return (lambda backend: lambda: ours(*args, backend=backend)), (lambda: reference(*args))
    return Workload(op, inputs, torch_op, build, outputs)


def _model(name: str, inputs: str, make_model: Callable, input_shape: tuple) -> Workload:
    """The model in eval mode for forward, train mode for forward+backward; ours is a converted deep copy."""
    def build(device, requires_grad):
        torch.manual_seed(0)
        model = make_model().to(device).train(requires_grad)
        x = torch.randn(input_shape, device=device)

        def ours(backend):
            converted = dlkernels.convert(copy.deepcopy(model), backend=backend)
            return lambda: converted(x)
        return ours, lambda: model(x)
    return Workload(f"convert: {name}", inputs, f"unconverted {name}", build, _as_outputs, convert=True)


def _tensor(device, requires_grad: bool, *shape: int) -> torch.Tensor:
    return torch.randn(shape, device=device).requires_grad_(requires_grad)


def _pool_input(device, requires_grad):
    return (_tensor(device, requires_grad, 1, 4, 8, 8),)


def _conv_inputs(device, requires_grad):
    return tuple(_tensor(device, requires_grad, *shape) for shape in ((1, 4, 8, 8), (4, 4, 3, 3), (4,)))


def _batch_norm_inputs(device, requires_grad):
    x, weight, bias = (_tensor(device, requires_grad, *shape) for shape in ((1, 4, 8, 8), (4,), (4,)))
    running_mean, running_var = torch.zeros(4, device=device), torch.ones(4, device=device)
    return x, running_mean, running_var, weight, bias


def _attention_inputs(device, requires_grad):
    return tuple(_tensor(device, requires_grad, 1, 1, 8, 32) for _ in range(3))


BATCH, HIDDEN, STEPS = 1, 8, 4


def _cell_inputs(gates: int, states: int):
    def make(device, requires_grad):
        shapes = [(BATCH, HIDDEN)] * (1 + states) + [(gates * HIDDEN, HIDDEN)] * 2 + [(gates * HIDDEN,)] * 2
        return tuple(_tensor(device, requires_grad, *shape) for shape in shapes)
    return make


def _layer_inputs(gates: int, states: int):
    """input (STEPS, BATCH, HIDDEN), the initial states, and one layer's [w_ih, w_hh, b_ih, b_hh]."""
    def make(device, requires_grad):
        x = _tensor(device, requires_grad, STEPS, BATCH, HIDDEN)
        initial = tuple(_tensor(device, requires_grad, 1, BATCH, HIDDEN) for _ in range(states))
        shapes = [(gates * HIDDEN, HIDDEN)] * 2 + [(gates * HIDDEN,)] * 2
        params = [_tensor(device, requires_grad, *shape) for shape in shapes]
        return x, initial if states == 2 else initial[0], params
    return make


def _batch_norm_relu(training: bool) -> Workload:
    mode = "training" if training else "eval"

    def ours(x, mean, var, weight, bias, backend):
        return dlkernels.batch_norm_relu(x, mean, var, weight, bias, training, backend=backend)

    def reference(x, mean, var, weight, bias):
        return F.relu(F.batch_norm(x, mean, var, weight, bias, training))
    return _op(f"batch_norm_relu ({mode})", "1x4x8x8", "F.relu(F.batch_norm)", _batch_norm_inputs, ours, reference)


class SmallCNN(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


class SmallLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(HIDDEN, HIDDEN)
        self.head = nn.Linear(HIDDEN, 4)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


WORKLOADS = [
    _op("max_pool2d", "1x4x8x8 k=2 s=2", "F.max_pool2d", _pool_input,
        lambda x, backend: dlkernels.max_pool2d(x, 2, 2, backend=backend), lambda x: F.max_pool2d(x, 2, 2)),
    _op("avg_pool2d", "1x4x8x8 k=2 s=2", "F.avg_pool2d", _pool_input,
        lambda x, backend: dlkernels.avg_pool2d(x, 2, 2, backend=backend), lambda x: F.avg_pool2d(x, 2, 2)),
    _op("adaptive_avg_pool2d", "1x4x8x8 out=2", "F.adaptive_avg_pool2d", _pool_input,
        lambda x, backend: dlkernels.adaptive_avg_pool2d(x, 2, backend=backend),
        lambda x: F.adaptive_avg_pool2d(x, 2)),
    _op("conv2d", "1x4x8x8 4x4x3x3 p=1 +bias", "F.conv2d", _conv_inputs,
        lambda x, w, b, backend: dlkernels.conv2d(x, w, b, 1, 1, backend=backend),
        lambda x, w, b: F.conv2d(x, w, b, 1, 1)),
    _batch_norm_relu(training=True),
    _batch_norm_relu(training=False),
    _op("scaled_dot_product_attention", "1x1x8x32", "F.scaled_dot_product_attention", _attention_inputs,
        lambda q, k, v, backend: dlkernels.scaled_dot_product_attention(q, k, v, backend=backend),
        F.scaled_dot_product_attention),
    _op("attention", "1x1x8x32", "F.scaled_dot_product_attention", _attention_inputs,
        lambda q, k, v, backend: dlkernels.attention(q, k, v, backend=backend), F.scaled_dot_product_attention),
    _op("lstm_cell", f"batch {BATCH} hidden {HIDDEN}", "torch.lstm_cell", _cell_inputs(gates=4, states=2),
        lambda x, h, c, *weights, backend: dlkernels.lstm_cell(x, h, c, *weights, backend=backend),
        lambda x, h, c, *weights: torch.lstm_cell(x, (h, c), *weights)),
    _op("gru_cell", f"batch {BATCH} hidden {HIDDEN}", "torch.gru_cell", _cell_inputs(gates=3, states=1),
        lambda x, h, *weights, backend: dlkernels.gru_cell(x, h, *weights, backend=backend), torch.gru_cell),
    _op("lstm", f"{STEPS} steps, batch {BATCH} hidden {HIDDEN}, 1 layer", "torch.lstm",
        _layer_inputs(gates=4, states=2),
        lambda x, hx, params, backend: dlkernels.lstm(x, hx, params, 1, backend=backend),
        lambda x, hx, params: torch.lstm(x, hx, params, True, 1, 0.0, False, False, False), _first_output),
    _op("gru", f"{STEPS} steps, batch {BATCH} hidden {HIDDEN}, 1 layer", "torch.gru", _layer_inputs(gates=3, states=1),
        lambda x, h, params, backend: dlkernels.gru(x, h, params, 1, backend=backend),
        lambda x, h, params: torch.gru(x, h, params, True, 1, 0.0, False, False, False), _first_output),
    _model("small CNN", "1x3x16x16", SmallCNN, (1, 3, 16, 16)),
    _model("small LSTM", f"{STEPS} steps, batch {BATCH} hidden {HIDDEN}", SmallLSTM, (STEPS, BATCH, HIDDEN)),
]


def devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def backends_for(device: str) -> tuple[list[str], dict]:
    """("auto" and every backend name that can run on `device`, {skipped name: why}). Names come from
    dlkernels._backends at run time: available_backends lists our kernels, unavailable_reason (when the module
    has it) also admits names that are always there, such as "torch"."""
    listed = set(dlkernels.available_backends(device))
    reason = getattr(_backends, "unavailable_reason", None)
    runnable = [b for b in _backends.BACKENDS if b in listed or (reason and reason(b, torch.device(device)) is None)]
    skipped = {b: SKIPPED_ON_CPU[b] for b in runnable if device == "cpu" and b in SKIPPED_ON_CPU}
    return [AUTO, *(b for b in runnable if b not in skipped)], skipped


def _synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _per_call_ns(fn: Callable, calls: int, synchronize: Callable) -> float:
    """Mean wall time of `calls` back-to-back calls; on GPU synchronised once, after the last."""
    synchronize()
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    synchronize()
    return (time.perf_counter_ns() - start) / calls


def _calls_per_repeat(fn: Callable, min_ns: float, synchronize: Callable) -> int:
    """Doubles a batch until it lasts min_ns (which also warms fn up)."""
    calls = 1
    while _per_call_ns(fn, calls, synchronize) * calls < min_ns:
        calls *= 2
    return calls


def _runner(call: Callable, direction: str, outputs: Callable) -> Callable:
    if direction == "forward":
        return call
    grads = tuple(torch.ones_like(t) for t in outputs(call()))

    def forward_backward():
        torch.autograd.backward(outputs(call()), grads)
    return forward_backward


def time_group(workload: Workload, direction: str, device: str, backends: list[str], timing: tuple) -> list[dict]:
    """One record per backend, ours against torch; every candidate is timed once per repeat, in turn, so a slow
    stretch of a shared machine hits them alike."""
    repeats, min_ms, warmup = timing
    synchronize = _synchronizer(device)
    requires_grad = direction != "forward"
    row = {"op": workload.op, "inputs": workload.inputs, "torch_op": workload.torch_op, "direction": direction,
           "device": device, "target_ratio": CONVERT_TARGET_RATIO if workload.convert else TARGET_RATIO}
    records = []
    with torch.set_grad_enabled(requires_grad):
        ours, reference = workload.build(device, requires_grad)
        candidates = {TORCH_OP: _runner(reference, direction, workload.outputs)}
        for backend in backends:
            try:
                fn = _runner(ours(backend), direction, workload.outputs)
                fn()  # the first call raises here, where the backend does not take these arguments
                candidates[backend] = fn
            except Exception as error:  # one backend failing must not lose the other rows
                message = f"{type(error).__name__}: {error}"
                if backend != AUTO and isinstance(error, NOT_ACCEPTED):
                    records.append({**row, "backend": backend, "not_accepted": message, "error": None})
                else:
                    records.append({**row, "backend": backend, "error": message})
        for fn in candidates.values():
            for _ in range(warmup):
                fn()
        calls = {key: _calls_per_repeat(fn, min_ms * 1e6, synchronize) for key, fn in candidates.items()}
        samples = {key: [] for key in candidates}
        gc.collect()
        gc.disable()  # a collection inside one batch would charge that batch alone
        try:
            for _ in range(repeats):
                for key, fn in candidates.items():
                    samples[key].append(_per_call_ns(fn, calls[key], synchronize) / 1e3)
        finally:
            gc.enable()
    torch_us = statistics.median(samples[TORCH_OP])
    for backend in [key for key in candidates if key != TORCH_OP]:
        ours_us = statistics.median(samples[backend])
        records.append({**row, "backend": backend, "ours_us": ours_us, "torch_us": torch_us,
                        "ratio": ours_us / torch_us, "ours_samples_us": samples[backend],
                        "torch_samples_us": samples[TORCH_OP], "ours_calls_per_repeat": calls[backend],
                        "torch_calls_per_repeat": calls[TORCH_OP], "error": None})
    order = {name: i for i, name in enumerate(backends)}
    return sorted(records, key=lambda record: order[record["backend"]])


def selected(workloads: list[Workload], match: str | None) -> list[Workload]:
    terms = [term for term in (match or "").split(",") if term]
    return [w for w in workloads if all(term in w.describe() for term in terms)]


def measure(timing: tuple = FULL_TIMING, match: str | None = None) -> dict:
    """Every selected workload x direction x device x backend; the report written by write()."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # host overhead of one thread, as a data-loader worker or a served request sees it
    try:
        rows, skipped = [], {}
        for device in devices():
            backends, skipped[device] = backends_for(device)
            for workload in selected(WORKLOADS, match):
                for direction in DIRECTIONS:
                    rows += time_group(workload, direction, device, backends, timing)
    finally:
        torch.set_num_threads(threads)
    repeats, min_ms, warmup = timing
    return {"family": FAMILY, **results.environment(), "cpu": _cpu_name(), "torch_threads": 1,
            "repeats": repeats, "min_ms_per_repeat": min_ms, "warmup_calls": warmup,
            "timing": f"median over {repeats} repeats of the mean per call of a batch of back-to-back calls lasting "
                      f"at least {min_ms:g} ms (time.perf_counter_ns), after {warmup} warm-up calls and a "
                      "calibration run; ours and torch alternate batch by batch; one torch thread. forward runs "
                      "under torch.no_grad(); forward+backward is the call then torch.autograd.backward from "
                      "precomputed output gradients, inputs and weights requiring grad (converted models: eval "
                      "mode forward, train mode forward+backward). On GPU a batch is synchronised once, at its "
                      "end: the inputs are tiny, so the GPU keeps up and the time is the host's",
            "target": f"ours <= {TARGET_RATIO}x torch per call; convert(model) <= {CONVERT_TARGET_RATIO}x the "
                      "unconverted model on CPU",
            "skipped_backends": skipped, "selection": match, "rows": rows}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meets_target(record: dict) -> bool:
    return record["ratio"] <= record["target_ratio"]


def render_markdown(report: dict) -> str:
    commit = (report["commit"] or "unknown")[:12] + (" (with uncommitted changes)" if report["dirty"] else "")
    lines = [f"## Host overhead per call on {report['device']}"
             + (f" (workloads matching `{report['selection']}`)" if report.get("selection") else ""), "",
             f"CPU {report['cpu']}; torch {report['torch']} (CUDA {report['cuda']}), triton {report['triton']}; "
             f"commit {commit}; {report['date']}.",
             f"Times in µs per call: {report['timing']}.",
             f"ratio = ours / torch; target: {report['target']} (✓ met, ✗ missed).", ""]
    for device, skipped in report["skipped_backends"].items():
        lines += [f"Not timed on {device}: {name} ({why})." for name, why in skipped.items()]
    lines += ["", "| op | input | direction | device | backend | ours µs | torch op | torch µs | ratio | target |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        head = f"| `{r['op']}` | {r['inputs']} | {r['direction']} | {r['device']} | {r['backend']} |"
        if r["error"] or r.get("not_accepted"):
            why = f"failed: {r['error']}" if r["error"] else f"not accepted: {r['not_accepted']}"
            lines.append(f"{head} {why[:100]} | {r['torch_op']} | – | – | – |")
        else:
            lines.append(f"{head} {r['ours_us']:.1f} | {r['torch_op']} | {r['torch_us']:.1f} | {r['ratio']:.2f}× | "
                         f"{'✓' if _meets_target(r) else '✗'} ≤ {r['target_ratio']:g}× |")
    lines += ["", "Rows within target and geometric-mean ratio, per device and backend:", "",
              "| device | backend | within target | geomean ratio |", "|---|---|---|---|"]
    groups: dict = {}
    for r in report["rows"]:
        groups.setdefault((r["device"], r["backend"]), []).append(r)
    for (device, backend), group in groups.items():
        timed = [r for r in group if "ratio" in r]
        geomean = math.exp(sum(math.log(r["ratio"]) for r in timed) / len(timed)) if timed else math.nan
        lines.append(f"| {device} | {backend} | {sum(map(_meets_target, timed))} / {len(timed)} timed "
                     f"({len(group) - len(timed)} not) | {geomean:.2f}× |")
    return "\n".join(lines)


def write(out_dir: Path, report: dict) -> list[Path]:
    """<out>/<device>/overhead.json and .md (overhead-<terms>.* for a --match run)."""
    folder = Path(out_dir) / results.device_slug(report["device"])
    folder.mkdir(parents=True, exist_ok=True)
    selection = report.get("selection")
    stem = folder / (FAMILY + (f"-{results.device_slug(selection)}" if selection else ""))
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(report) + "\n")
    return [stem.with_suffix(".json"), stem.with_suffix(".md")]


def run(args) -> bool:
    """The command-line entry: measures, prints the table, writes the files; False when any row failed."""
    report = measure(QUICK_TIMING if args.quick else FULL_TIMING, args.match)
    print(render_markdown(report))
    print("wrote " + ", ".join(map(str, write(args.out, report))))
    failed = [r for r in report["rows"] if r["error"]]
    for r in failed:
        print(f"FAILED {r['op']} {r['direction']} {r['device']} {r['backend']}: {r['error']}")
    return not failed
