"""Pieces every Triton op file shares."""
import os

import triton
import triton.language as tl

# Triton's CPU interpreter (how CI runs the kernels): it cannot benchmark autotune configs, cannot do
# bf16 arithmetic (kernels upcast), and truncates fp32 -> bf16 stores where the GPU rounds.
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRETING_CONSTEXPR = tl.constexpr(INTERPRETING)


def autotune_configs(configs: list) -> list:
    """The configs to autotune over: all on a GPU, only the first (keep it small) when interpreting."""
    return configs[:1] if INTERPRETING else configs


@triton.jit
def cast_for_store(x, dtype: tl.constexpr):
    # Rounds to nearest even under the interpreter too, so CPU tests see what the GPU stores.
    if _INTERPRETING_CONSTEXPR and dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(x != x, 0x7FC0, rounded)
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)
