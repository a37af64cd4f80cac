"""dlkernels.info(): what this installation can run."""
from __future__ import annotations

import platform

import torch

from dlkernels._backends import available_backends, build_info, triton_installed, triton_interpreting


def info() -> dict:
    triton_version = None
    if triton_installed():
        import triton

        triton_version = triton.__version__
    cuda_device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "triton_interpret": triton_interpreting(),
        "compiled": build_info(),
        "device": cuda_device or "cpu (no CUDA GPU visible)",
        "backends": {"cpu": available_backends("cpu"),
                     "cuda": available_backends("cuda") if cuda_device else []},
    }


def format_info(values: dict | None = None) -> str:
    values = values or info()
    compiled = values["compiled"]
    kernels = ("C++ CPU reference" + (f" + CUDA (sm_{', sm_'.join(compiled['cuda_archs'])})" if compiled["cuda"] else "")
               if compiled["built"] else f"not built: {compiled.get('error')}")
    lines = [
        f"dlkernels on {values['device']}",
        f"  python {values['python']}, torch {values['torch']} (CUDA {values['torch_cuda']}), triton {values['triton']}"
        + (" [TRITON_INTERPRET=1]" if values["triton_interpret"] else ""),
        f"  compiled kernels: {kernels}",
        f"  backends for CPU tensors: {', '.join(values['backends']['cpu']) or 'none'}",
        f"  backends for CUDA tensors: {', '.join(values['backends']['cuda']) or 'none (no GPU)'}",
    ]
    return "\n".join(lines)
