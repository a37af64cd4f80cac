"""Pieces every Triton op file shares."""
import os

import torch
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


SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


_DOT_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
               torch.float64: tl.float64}


def dot_dtype(dtype: torch.dtype):
    """The type tl.dot multiplies in: the input's, except bf16 under the interpreter, which cannot multiply
    bf16 (the kernels upcast the operands)."""
    return tl.float32 if INTERPRETING and dtype == torch.bfloat16 else _DOT_DTYPES[dtype]


def input_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """tl.dot's input_precision. Only fp32 has a choice: TF32 tensor cores when allowed, exact FMAs otherwise."""
    return "tf32" if dtype == torch.float32 and allow_tf32 else "ieee"


def accumulator_dtype(dtype: torch.dtype):
    """fp32 accumulation for every dtype but float64."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def check_4d(op: str, name: str, tensor, channels_last: bool) -> None:
    """A 4-D tensor of a supported dtype, contiguous in the layout the caller chose."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{op} (triton): {name} dtype must be one of float16, bfloat16, float32, float64, "
                         f"got {getattr(tensor, 'dtype', type(tensor).__name__)}")
    if tensor.dim() != 4:
        raise ValueError(f"{op} (triton): {name} must be 4-D (N, C, H, W), got shape {tuple(tensor.shape)}")
    if not tensor.is_contiguous(memory_format=memory_format(channels_last)):
        raise ValueError(f"{op} (triton): {name} must be contiguous in "
                         f"{'channels_last' if channels_last else 'NCHW'} layout, got strides {tensor.stride()}")


def channel_block(channels: int, max_block: int = 64) -> int:
    """Channels per channels_last tile: all of them up to max_block (64 gives full 128-byte rows at
    fp16), else the widest power of two >= 16 that divides C (C = 96 -> 32), so the last block is
    not half empty; max_block when none does."""
    if channels <= max_block:
        return triton.next_power_of_2(channels)
    block = max_block
    while block > 16 and channels % block:
        block //= 2
    return block if channels % block == 0 else max_block


_SM_COUNTS = {}


def target_programs(device, programs_per_sm: int) -> int:
    """How many programs fill `device`: programs_per_sm per SM on a GPU; 8 on CPU (the interpreter),
    which still splits reductions so the tests cover the split paths."""
    if device.type != "cuda":
        return 8
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return programs_per_sm * _SM_COUNTS[index]
