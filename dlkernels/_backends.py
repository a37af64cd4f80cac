"""Which implementation runs an op: backend names, availability and the choice behind "auto".

Every op takes `backend=` with one of BACKEND_CHOICES. A requested backend that cannot run says
why (not built, no GPU, Triton missing); "auto" takes the first usable one in the op's order of
preference for the tensor's device.
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import torch

BACKENDS = ("cuda", "triton", "cpu")
BACKEND_CHOICES = ("auto", *BACKENDS)

# Order "auto" tries per device type. The CUDA C++ kernels come first on GPU until measured
# results (benchmarks/results) say otherwise for an op; Triton on CPU is the slow interpreter,
# so it is never preferred to the C++ reference there.
DEFAULT_PREFERENCE = {"cuda": ("cuda", "triton"), "cpu": ("cpu", "triton")}


def _read_build_info() -> dict:
    """What dlkernels._C was built with, or why it cannot be imported."""
    try:
        from dlkernels import _C
    except ImportError as error:  # not built: pure-Python install or a failed build
        return {"built": False, "cuda": False, "cuda_archs": [], "error": str(error)}
    info = dict(_C.build_info())
    archs = info.get("cuda_archs", "")
    return {"built": True, "cuda": bool(info.get("cuda")), "cuda_archs": archs.split("_") if archs else []}


# Read once at import: the answers cannot change within a process, and torch.compile should not
# have to trace into the extension module or the import system.
_BUILD_INFO = _read_build_info()
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def build_info() -> dict:
    return _BUILD_INFO


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """None when `backend` can run on tensors of `device`, else a sentence saying why not."""
    info = build_info()
    if backend == "cpu":
        if device.type != "cpu":
            return f"the C++ reference runs on CPU tensors, got a {device.type} tensor"
        if not info["built"]:
            return f"dlkernels._C is not built ({info['error']}); run `pip install -e . --no-build-isolation`"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA kernels need a CUDA tensor, got a {device.type} tensor"
        if not info["built"]:
            return f"dlkernels._C is not built ({info['error']})"
        if not info["cuda"]:
            return "dlkernels._C was built without CUDA (torch without CUDA or nvcc not found at build time)"
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
    """The backends that can run on tensors of `device` in this process."""
    device = torch.device(device)
    return [b for b in BACKENDS if unavailable_reason(b, device) is None]


def resolve_backend(op: str, backend: str, device: torch.device, preference: dict | None = None) -> str:
    """The concrete backend for one call; raises a clear error when none can run."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"{op}: backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    if backend != "auto":
        reason = unavailable_reason(backend, device)
        if reason is not None:
            raise RuntimeError(f"{op}: backend {backend!r} is unavailable: {reason}")
        return backend
    order = (preference or DEFAULT_PREFERENCE).get(device.type, ())
    reasons = []
    for candidate in order:
        reason = unavailable_reason(candidate, device)
        if reason is None:
            return candidate
        reasons.append(f"{candidate}: {reason}")
    raise RuntimeError(f"{op}: no backend can run on {device.type} tensors ({'; '.join(reasons) or 'unsupported device'})")


def implementation(family: str, backend: str):
    """The object whose functions implement op family `family` on a concrete `backend`.

    The C++ ops (torch.ops.dlk_C, CPU and CUDA kernels behind one dispatcher) and the Triton
    launchers (triton_kernels/<family>.py) share names and argument lists, so callers need not care.
    """
    if backend == "triton":
        return importlib.import_module(f"dlkernels.triton_kernels.{family}")
    import dlkernels._C  # noqa: F401  registers torch.ops.dlk_C

    return torch.ops.dlk_C
