"""Which implementation runs an op: backend names, availability, and the choice behind "auto".

Every public op takes `backend=`, one of BACKEND_CHOICES:
  "cuda"       our CUDA C++ kernels (CUDA tensors)
  "triton"     our Triton kernels (CUDA tensors; CPU tensors only under TRITON_INTERPRET=1)
  "reference"  our C++ reference kernels (CPU tensors; "cpu" is a deprecated alias)
  "torch"      PyTorch's own op: cuDNN/ATen on GPU, ATen/oneDNN on CPU
  "auto"       the policy in `dispatch`: never knowingly worse than "torch"

A backend named explicitly either runs or raises a clear error (ours validate their arguments and
say what they do not cover). "auto" runs torch on CPU tensors, for calls our kernels do not cover
(torch then behaves exactly as torch, errors included), and on GPUs for which no committed
measurement shows ours at least as fast; `autotune(True)` times the candidates instead.
`explain(fn, ...)` records which backend each call took and why.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import time
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import torch

OURS = ("cuda", "triton", "reference")
BACKENDS = (*OURS, "torch")
BACKEND_CHOICES = ("auto", *BACKENDS)
DEPRECATED_ALIASES = {"cpu": "reference"}  # kept for one release

T = TypeVar("T")


def _read_build_info() -> dict:
    """What the native libraries (dlkernels/lib, see dlkernels._native) were built with, or why not."""
    from dlkernels import _native

    try:
        _native.cpu_lib()
    except RuntimeError as error:  # not built: pure-Python checkout or a failed build
        return {"built": False, "cuda": False, "cuda_archs": [], "error": str(error)}
    try:
        cuda = _native.cuda_lib().build_info()
    except RuntimeError as error:
        return {"built": True, "cuda": False, "cuda_archs": [], "cuda_error": str(error)}
    return {"built": True, "cuda": True, "cuda_archs": list(cuda.get("cuda_archs", []))}


# Read once at import: the answers cannot change within a process, and torch.compile should not
# have to trace into ctypes or the import system.
_BUILD_INFO = _read_build_info()
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def build_info() -> dict:
    return _BUILD_INFO


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def canonical(op: str, backend: str) -> str:
    """`backend` as one of BACKEND_CHOICES; a deprecated alias warns once per call site."""
    if backend in BACKEND_CHOICES:
        return backend
    if backend in DEPRECATED_ALIASES:
        new = DEPRECATED_ALIASES[backend]
        warnings.warn(f"{op}: backend={backend!r} is deprecated, use backend={new!r}", FutureWarning, stacklevel=4)
        return new
    raise ValueError(f"{op}: backend must be one of {BACKEND_CHOICES}, got {backend!r}")


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """None when `backend` can run on tensors of `device`, else a sentence saying why not."""
    info = build_info()
    if backend == "torch":
        return None
    if backend in ("reference", "cpu"):
        if device.type != "cpu":
            return f"the C++ reference runs on CPU tensors, got a {device.type} tensor"
        if not info["built"]:
            return info["error"]
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA kernels need a CUDA tensor, got a {device.type} tensor"
        if not info["cuda"]:
            return info.get("cuda_error") or info["error"]
        return None
    if backend == "triton":
        if not triton_installed():
            return "triton is not installed"
        if device.type == "cuda":
            return None
        if device.type == "cpu":
            return None if triton_interpreting() else "Triton runs on CPU tensors only with TRITON_INTERPRET=1"
        return f"Triton does not run on {device.type} tensors"
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKEND_CHOICES}")


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Our implementations ("cuda", "triton", "reference") that can run on tensors of `device` here.
    "torch" is always available and not listed."""
    device = torch.device(device)
    return [b for b in OURS if unavailable_reason(b, device) is None]


def implementation(family: str, backend: str):
    """The module whose functions implement op family `family` on one of our backends.

    dlkernels._native.<family> (the C++ reference and CUDA kernels, called through their C ABI) and
    dlkernels.triton_kernels.<family> share function names and argument lists, so callers need not care.
    """
    package = "dlkernels.triton_kernels" if backend == "triton" else "dlkernels._native"
    return importlib.import_module(f"{package}.{family}")


# ----------------------------------------------------------------------------------- explain
@dataclasses.dataclass(frozen=True)
class Decision:
    op: str
    backend: str
    reason: str


class Explanation(list):
    """The decisions of one `explain` run, in call order; `.result` is what the function returned."""
    result: Any = None

    def __str__(self) -> str:
        width = max((len(d.op) for d in self), default=2)
        return "\n".join(f"{d.op:<{width}}  {d.backend:<9}  {d.reason}" for d in self) or "(no dlkernels op ran)"


_RECORDING: list[Explanation] = []  # a stack, so explain() nests


def _note(op: str, backend: str, reason: str) -> None:
    if _RECORDING:
        _RECORDING[-1].append(Decision(op, backend, reason))


def explain(fn: Callable[..., Any], *args, **kwargs) -> Explanation:
    """Run fn(*args, **kwargs) and return which backend each dlkernels op call took, and why.

        >>> print(dlkernels.explain(model, x))
        conv2d      torch      auto: CPU tensors run torch's ATen/oneDNN kernels
    """
    explanation = Explanation()
    _RECORDING.append(explanation)
    try:
        explanation.result = fn(*args, **kwargs)
    finally:
        _RECORDING.pop()
    return explanation


# ---------------------------------------------------------------------- the "auto" policy
# Measured choices per GPU, written by `python -m dlkernels.bench policy` from committed results:
# {"<GPU name>": {"<op>": {"<dtype>/<layout>": "<backend>"}}} (see dlkernels/bench/policy.py). Absent
# or silent for a device, op or class, "auto" runs torch there: nothing of ours is trusted unmeasured.
_POLICY_FILE = Path(__file__).with_name("auto_policy.json")
_POLICY: dict[str, dict[str, dict[str, str]]] = \
    json.loads(_POLICY_FILE.read_text()) if _POLICY_FILE.exists() else {}
_DEVICE_NAMES: dict[int, str] = {}

_AUTOTUNE = {"enabled": False}
_AUTOTUNED: dict[Hashable, str] = {}


def autotune(enabled: bool = True) -> None:
    """Let "auto" time our usable backends and torch on the first call of each op and shape on a GPU
    and keep the fastest, as torch.backends.cudnn.benchmark does. Off by default; never under
    torch.compile. Turning it on or off forgets earlier measurements."""
    _AUTOTUNE["enabled"] = bool(enabled)
    _AUTOTUNED.clear()


def autotune_enabled() -> bool:
    return _AUTOTUNE["enabled"]


def _device_name(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DEVICE_NAMES:
        _DEVICE_NAMES[index] = torch.cuda.get_device_name(index)
    return _DEVICE_NAMES[index]


def _layout_name(tensor: torch.Tensor) -> str | None:
    if tensor.dim() != 4:
        return None  # the benchmark's other layouts (e.g. attention's) are not readable off one tensor
    return "channels_last" if tensor.is_contiguous(memory_format=torch.channels_last) \
        and not tensor.is_contiguous() else "nchw"


def _policy_choice(op: str, like: torch.Tensor) -> tuple[str, str]:
    name = _device_name(like.device)
    classes = _POLICY.get(name, {}).get(op, {})
    dtype = str(like.dtype).removeprefix("torch.")
    layout = _layout_name(like)
    if layout is not None:
        chosen = classes.get(f"{dtype}/{layout}")
    else:  # one answer for the dtype whatever the layout, or none
        answers = {backend for key, backend in classes.items() if key.split("/")[0] == dtype}
        chosen = answers.pop() if len(answers) == 1 else None
    if chosen is not None and unavailable_reason(chosen, like.device) is None:
        return chosen, f"auto: committed results on {name} show {chosen} at least as fast as torch ({dtype})"
    return "torch", f"auto: no committed results on {name} show ours at least as fast as torch ({dtype})"


def elapsed_seconds(run: Callable[[], Any], device: torch.device, repeats: int = 5) -> float:
    """Wall seconds that `repeats` calls of `run` take after one warm-up call (Triton compiles and autotunes
    there), the GPU synchronised before and after: the host's work counts too, as it does for the caller.
    Autotune and conv2d's measured Winograd tile use it."""
    run()
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    began = time.perf_counter()
    for _ in range(repeats):
        run()
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return time.perf_counter() - began


_CPU = torch.device("cpu")


def capturing() -> bool:
    """True while the current CUDA stream captures a graph: nothing may read device values on the host
    (a sync fails the capture) or time kernels then. Called only on the paths that would read or time."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def runs_torch_now(backend: str, like) -> bool:
    """True when dispatch() would run torch's op with nothing else to do: backend "torch", or "auto" on a plain
    CPU tensor; never while explain() records. Public ops test this first and call torch directly, skipping the
    closures dispatch() takes (about 0.5 us of a 1.5 us pooling call on tiny inputs). Subclasses (Parameter,
    FakeTensor) take the general path under "auto"."""
    if _RECORDING:
        return False
    return backend == "torch" or (backend == "auto" and type(like) is torch.Tensor and not like.is_cuda)


def dispatch(op: str, backend: str, like, prepare: Callable[[str], Callable[[], T]], run_torch: Callable[[], T],
             key: Callable[[], Hashable] | None = None) -> T:
    """Run one call of `op` on the backend `backend` resolves to for the device of tensor `like`.

    prepare(b) validates the call for our backend b and returns a thunk that runs it; it raises
    TypeError/ValueError (naming the argument) for what b does not cover. run_torch() runs the call
    with torch's op. key() (optional; None for calls with side effects, e.g. running statistics)
    identifies the call's shape class for autotune. `like` need not be a tensor: then prepare() or
    torch says what is wrong with it.
    """
    if backend == "auto":
        if not (isinstance(like, torch.Tensor) and like.is_cuda):  # the hot path on CPU: nothing else runs
            if _RECORDING:
                kind = like.device.type if isinstance(like, torch.Tensor) else type(like).__name__
                _note(op, "torch", f"auto: {kind} tensors run torch's own kernels (ours are references there)")
            return run_torch()
        device = like.device
        if _AUTOTUNE["enabled"] and key is not None and not torch.compiler.is_compiling() and not capturing():
            return _autotuned(op, device, prepare, run_torch, key())
        chosen, reason = _policy_choice(op, like)
        if chosen == "torch":
            _note(op, "torch", reason)
            return run_torch()
        try:
            run = prepare(chosen)
        except (TypeError, ValueError, NotImplementedError) as unsupported:
            _note(op, "torch", f"auto: {chosen} does not cover this call ({unsupported})")
            return run_torch()
        _note(op, chosen, reason)
        return run()
    backend = canonical(op, backend)
    if backend == "torch":
        _note(op, "torch", "requested")
        return run_torch()
    device = like.device if isinstance(like, torch.Tensor) else _CPU
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f"{op}: backend {backend!r} is unavailable: {reason}")
    run = prepare(backend)
    _note(op, backend, "requested")
    return run()


def _autotuned(op: str, device: torch.device, prepare, run_torch, shape_key: Hashable):
    cache_key = (op, device.index, shape_key)
    chosen = _AUTOTUNED.get(cache_key)
    if chosen is None:
        candidates = {"torch": run_torch}
        for name in available_backends(device):
            try:
                candidates[name] = prepare(name)
            except (TypeError, ValueError, NotImplementedError):
                pass  # does not cover this call
        with torch.no_grad():
            times = {name: elapsed_seconds(run, device) for name, run in candidates.items()}
        chosen = _AUTOTUNED[cache_key] = min(times, key=times.get)
    if chosen != "torch":
        try:
            run = prepare(chosen)
        except (TypeError, ValueError, NotImplementedError) as unsupported:
            _note(op, "torch", f"autotune: {chosen} won this shape class but does not cover this call ({unsupported})")
            return run_torch()
        _note(op, chosen, "autotune: fastest of torch and " + ", ".join(available_backends(device)))
        return run()
    _note(op, "torch", "autotune: fastest of torch and " + ", ".join(available_backends(device)))
    return run_torch()
