"""Case generators shared by the op tests, the differential fuzz and the mutation routine.

One module per op family (pool2d, conv2d, batch_norm, attention, rnn). Each exposes:

- ``boundary_cases() -> list[Case]``: the deterministic CI sample. It varies every axis on its own
  (H != W; stride, padding, dilation different per axis), moves every argument off its default, and
  places sizes just below, at and just above each tile size of the C++ reference and of the Triton
  kernels' interpreter configs (read from the kernels' own sources of truth, not copied).
- ``random_cases(seed: int, count: int) -> list[Case]``: seeded random cases for the fuzz
  (``DLK_FUZZ_CASES`` sets the count of the long mode; see ``fuzz_count``).
- ``check(case: Case, backend: str) -> None``: runs the case through the public op with
  ``backend=`` and compares values and gradients with float64 torch (or torch in the same dtype
  with the tolerances of tests/helpers.py); raises AssertionError naming the case on a mismatch.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

# Count of random cases per family and backend: small in CI, DLK_FUZZ_CASES=<n> for the long mode.
DEFAULT_FUZZ_CASES = 12


def fuzz_count(default: int = DEFAULT_FUZZ_CASES) -> int:
    return int(os.environ.get("DLK_FUZZ_CASES", default))


def fuzz_seed() -> int:
    """DLK_FUZZ_SEED reruns one failing draw; the default keeps CI deterministic."""
    return int(os.environ.get("DLK_FUZZ_SEED", 0))


def rng(seed: int) -> random.Random:
    return random.Random(seed)


def around(size: int, low: int = 1) -> list[int]:
    """Sizes just below, at and just above a tile size (deduplicated, never below `low`)."""
    return sorted({max(low, size - 1), max(low, size), size + 1})


@dataclass(frozen=True)
class Case:
    """One call of a public op: `op` names the dlkernels function, `args` its arguments (shapes and
    scalars, not tensors, so a case prints and hashes), `why` the gap it covers."""
    family: str
    op: str
    args: tuple[tuple[str, Any], ...]
    why: str = ""
    grad: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.args).get(name, default)

    @property
    def id(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in self.args)
        return f"{self.op}({inner})"


def case(family: str, op: str, why: str = "", grad: bool = True, tags=(), **args: Any) -> Case:
    return Case(family, op, tuple(args.items()), why, grad, frozenset(tags))
