"""The implicit-GEMM convolution kernel (csrc/cuda/conv2d_kernels.cuh) run on the CPU by the warp
emulator in tests/emulator, with its shared-memory race and cp.async pipeline detector. No GPU.

tests/emulator/conv2d_emulate.cpp compiles the kernel's own source with g++ (through nvcc, for the
CUDA headers): conv_gemm_kernel<ConvGemm<...>> with its cp.async chunk loaders, gather loaders,
ldmatrix fragment loads, mma.sync m16n8k16 (fp16, bf16) and m16n8k8 (TF32) and staged epilogue. Each
CUDA thread of a block is a fiber; the PTX instructions are the emulator's, with the PTX ISA's per-lane
layouts (tests/emulator/tensor_core_emu.h). Every case compares with a plain-loop convolution within
fp32-accumulation tolerance, and the race detector must report nothing (see warp_emu.h for what it
flags and what it does not see). The exact SIMT math (fp32 without TF32, fp64) runs too; it reads
shared memory with plain loads, which the detector does not see, so there only its stores and the
results are checked.

A check is only as good as the fault it catches: test_planted_fault compiles mutated copies of the
kernel (or of the emulator) and shows each one fail:
  - fragment-map         MmaThread::a_row_offset gives lanes 0 and 1 each other's A rows: wrong results;
  - emulator-mma-layout  the emulator's mma A layout swaps the rows of lanes 0 and 4: wrong results
                         (the emulator's layouts, not only the kernel's, are pinned by the results);
  - main-loop-barrier    the __syncthreads() after cp_async_wait in the main loop deleted: the detector
                         reports RAW (ldmatrix reads tiles other threads wrote in the same barrier
                         interval) and WAR (the refill overwrites a stage still being read), with the
                         cp.async loaders and with the gather loaders. The results are right: the
                         emulator's schedule happens to finish the copies first, as a GPU often
                         would; only the detector sees it;
  - wait-group           cp_async_wait<kStages - 2> -> <kStages - 1>: the tile being computed is not
                         waited for; the detector reports pending reads and the results are NaN;
  - staging-barrier      the barrier between the main loop and the accumulator staging deleted: the
                         staging stores overwrite ring bytes other warps still read (WAR);
  - epilogue-barrier     the barrier between staging and the epilogue deleted: the epilogue's plain
                         loads are not instrumented, so only the results catch it (they do);
and over-waiting (cp_async_wait<kStages - 3>: slower, not wrong) passes.

test_warp_primitives checks ldmatrix.trans (which the conv kernel does not use) and the shuffles
against plain products, the same way.

The attention forward (attention_forward_kernel and the fp32 attention_forward_float_kernel,
tests/emulator/attention_fwd_emulate.cpp) and the attention backward (row_terms_kernel, then the
tensor-core or the SIMT dK/dV and dQ kernels in the launcher's order, tests/emulator/attention_bwd_emulate.cpp)
are covered at the end of this file, every head dim, dropout, bias and varlen included, each with its
own planted faults; so is the Hopper attention forward (attention_forward_sm90_kernel, the same forward
program with sm90=1), its wgmma.mma_async emulated by tests/emulator/wgmma_emu.h, with planted faults
for each of the detector's wgmma findings. The programs share tests/emulator/harness.h (arguments,
buffers, the verdict) and the mutant builder below.

Cost: about 7 min on 2 cores: three harness builds (about 8-12 s each), about 0.1-6 s per case,
40 mutant builds of the fp16-only harnesses (about 5-8 s each, two at a time) and 2 small builds for
the primitives.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import re
import shutil
import subprocess

import pytest

import cuda_tools as cuda

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "tests" / "emulator"
KERNELS = ROOT / "csrc" / "cuda" / "conv2d_kernels.cuh"

pytestmark = pytest.mark.skipif(cuda.NVCC is None, reason="nvcc is not installed")

# g++ through nvcc's driver (a .cpp: no device pass). The kernel's device attributes and unroll
# pragmas mean nothing to g++: silence those two warnings, keep the rest.
FLAGS = ["-std=c++17", "-O1", f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc' / 'cuda'}",
         "-Xcompiler", "-Wall,-Werror,-Wno-attributes,-Wno-unknown-pragmas"]


def build(source: pathlib.Path, exe: pathlib.Path, *defines: str) -> pathlib.Path:
    command = [cuda.NVCC, *FLAGS, *defines, str(source), "-o", str(exe)]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stdout}{built.stderr}"
    return exe


def run(exe: pathlib.Path, args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args.split()], capture_output=True, text=True, timeout=120)


def run_clean(exe: pathlib.Path, args: str) -> subprocess.CompletedProcess:
    """Runs one case that must pass: exit 0, no wrong output, no detector finding."""
    ran = run(exe, args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r" 0 of \d+ outputs wrong.*, 0 findings", ran.stdout), ran.stdout
    return ran


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> pathlib.Path:
    return build(EMULATOR / "conv2d_emulate.cpp", tmp_path_factory.mktemp("emulator") / "conv2d_emulate")


# Small, awkward shapes: odd channel counts, H != W, per-axis stride / padding / dilation, ragged
# row, column and reduction tails, groups, every tile shape, both loaders, both layouts, every dtype
# and both maths (mma.sync for fp16 / bf16 / tf32, SIMT for f32 / f64). `fast=1` is the cp.async loader (channels_last, C/groups a multiple of 16
# bytes); `fast=0` the gather loader.
GEOMETRY = "n=3 c=24 h=9 w=11 k=40 r=3 s=2 stride=1,2 pad=1,0 dil=2,1"
CASES = {
    # forward
    "fwd-f16-nhwc-cpasync-epilogue": f"op=fwd dtype=f16 layout=nhwc fast=1 {GEOMETRY} epilogue=1",
    "fwd-f16-nhwc-gather-odd": "op=fwd dtype=f16 layout=nhwc fast=0 n=2 c=7 h=9 w=6 k=13 r=2 s=3 stride=2,1 pad=0,2 dil=1,2",
    "fwd-f16-nchw-gather-groups": "op=fwd dtype=f16 layout=nchw fast=0 n=2 c=10 h=7 w=8 k=6 r=3 s=1 pad=1,0 groups=2 epilogue=1",
    "fwd-bf16-nhwc-cpasync-128x128": "op=fwd dtype=bf16 layout=nhwc fast=1 n=2 c=32 h=9 w=6 k=130 r=1 s=3 stride=2,1 pad=0,1 groups=2 tile=128x128",
    "fwd-bf16-nhwc-cpasync-128x64": "op=fwd dtype=bf16 layout=nhwc fast=1 n=5 c=16 h=7 w=9 k=70 r=3 s=3 stride=1,1 pad=1,1 tile=128x64",
    "fwd-bf16-nchw-gather": "op=fwd dtype=bf16 layout=nchw fast=0 n=2 c=5 h=11 w=4 k=9 r=3 s=2 stride=2,1 pad=2,1 dil=1,3",
    "fwd-tf32-nhwc-cpasync": "op=fwd dtype=tf32 layout=nhwc fast=1 n=2 c=12 h=7 w=5 k=12 r=3 s=3 stride=1,2 pad=1,1",
    "fwd-tf32-nchw-gather-groups": "op=fwd dtype=tf32 layout=nchw fast=0 n=2 c=6 h=7 w=5 k=10 r=3 s=3 groups=2",
    # dgrad (A = grad_output through cp.async when channels_last and K/groups fits; B gathered)
    "dgrad-f16-nhwc-cpasync": "op=dgrad dtype=f16 layout=nhwc fast=1 n=2 c=9 h=9 w=7 k=16 r=3 s=2 stride=2,1 pad=1,0 dil=1,2",
    "dgrad-bf16-nchw-gather": "op=dgrad dtype=bf16 layout=nchw fast=0 n=2 c=9 h=9 w=7 k=11 r=3 s=2 stride=2,3 pad=1,2 dil=2,1",
    "dgrad-tf32-nhwc-gather-groups": "op=dgrad dtype=tf32 layout=nhwc fast=0 n=2 c=12 h=6 w=5 k=6 r=2 s=2 stride=2,2 groups=3",
    # wgrad (gather loaders only), split reduction included
    "wgrad-f16-nhwc-split": "op=wgrad dtype=f16 layout=nhwc fast=0 n=3 c=9 h=9 w=7 k=11 r=3 s=2 stride=2,1 pad=1,0 splits=2",
    "wgrad-bf16-nchw-groups": "op=wgrad dtype=bf16 layout=nchw fast=0 n=2 c=6 h=8 w=7 k=12 r=2 s=3 stride=1,2 pad=0,1 dil=2,1 groups=2",
    "wgrad-tf32-nhwc": "op=wgrad dtype=tf32 layout=nhwc fast=0 n=2 c=5 h=6 w=7 k=9 r=3 s=3 pad=1,1 splits=3",
    # the exact SIMT math (fp32 without TF32, fp64): 256 threads, plain shared loads
    "fwd-f32-simt-nhwc-cpasync-128x128": "op=fwd dtype=f32 layout=nhwc fast=1 n=2 c=12 h=7 w=5 k=12 r=3 s=3 stride=1,2 pad=1,1 tile=128x128",
    "fwd-f64-simt-nchw-epilogue": "op=fwd dtype=f64 layout=nchw fast=0 n=2 c=7 h=7 w=5 k=9 r=3 s=2 stride=2,1 pad=1,1 dil=1,2 epilogue=1",
    "dgrad-f64-simt-nhwc-cpasync": "op=dgrad dtype=f64 layout=nhwc fast=1 n=2 c=6 h=7 w=5 k=10 r=3 s=3 stride=2,2 pad=1,1",
    "wgrad-f32-simt-nchw-split": "op=wgrad dtype=f32 layout=nchw fast=0 n=2 c=5 h=6 w=7 k=9 r=3 s=3 pad=1,1 splits=2",
}


@pytest.mark.parametrize("case", CASES)
def test_conv_gemm_emulated(emulator, case):
    run_clean(emulator, CASES[case])


def test_warp_primitives(tmp_path):
    """ldmatrix.x4 (+ .trans), mma.sync f16/bf16 and shuffles composed as kernels use them, against
    plain products (tests/emulator/primitives_check.cpp); and a planted fault in the emulator's
    ldmatrix.trans (the two halves of a register swapped) must fail it."""
    ran = run(build(EMULATOR / "primitives_check.cpp", tmp_path / "primitives_check"), "")
    assert ran.returncode == 0 and ran.stdout.strip().endswith("ok"), ran.stdout + ran.stderr
    for f in EMULATOR.glob("*.h"):
        shutil.copy(f, tmp_path)
    shutil.copy(EMULATOR / "primitives_check.cpp", tmp_path)
    header = tmp_path / "tensor_core_emu.h"
    old = "r = uint32_t(lo) | uint32_t(hi) << 16;"
    assert header.read_text().count(old) == 1
    header.write_text(header.read_text().replace(old, "r = uint32_t(hi) | uint32_t(lo) << 16;"))
    ran = run(build(tmp_path / "primitives_check.cpp", tmp_path / "mutant"), "")
    assert ran.returncode == 1 and "FAIL mma f16" in ran.stdout, ran.stdout + ran.stderr


def test_bad_case_is_refused(emulator):
    """A tile the planner never offers with the gather loader (128x64 is cp.async-only) is a bad
    case (exit 2), not a silent pass."""
    ran = run(emulator, "op=fwd dtype=f16 layout=nhwc fast=0 tile=128x64")
    assert ran.returncode == 2, ran.stdout


# ---------------------------------------------------------------------------------------------
# Planted faults: (file, old, new, case, what the output must show). Each `old` occurs exactly once.

MAIN_LOOP_WAIT = "    cp_async_wait<kStages - 2>();\n    __syncthreads();\n"
FAST = f"op=fwd dtype=f16 layout=nhwc fast=1 {GEOMETRY}"
GATHER = f"op=fwd dtype=f16 layout=nchw fast=0 {GEOMETRY}"
WRONG = r"[1-9]\d* of \d+ outputs wrong"
MUTANTS = {
    "fragment-map": ("conv2d_kernels.cuh", "return tile_offset(row0 + lane % 16, k_step * 32",
                     "return tile_offset(row0 + (lane < 2 ? lane ^ 1 : lane) % 16, k_step * 32",
                     [(FAST, WRONG), (GATHER, WRONG)]),
    "emulator-mma-layout": ("tensor_core_emu.h", "      const int row = g + 8 * (q % 2);\n",
                            "      const int row = (l == 0 ? 1 : l == 4 ? 0 : g) + 8 * (q % 2);\n",
                            [(FAST, WRONG)]),
    "main-loop-barrier": ("conv2d_kernels.cuh", MAIN_LOOP_WAIT, "    cp_async_wait<kStages - 2>();\n",
                          [(FAST, r"raw: \d+[\s\S]*war: \d+"), (GATHER, r"raw: \d+[\s\S]*war: \d+")]),
    "wait-group": ("conv2d_kernels.cuh", MAIN_LOOP_WAIT,
                   "    cp_async_wait<kStages - 1>();\n    __syncthreads();\n",
                   [(FAST, r"pending-read: \d+"), (FAST, WRONG)]),
    "staging-barrier": ("conv2d_kernels.cuh", "  __syncthreads();  // the ring is free: reuse it for the staged accumulators\n",
                        "", [(FAST, r"war: \d+"), (GATHER, r"war: \d+")]),
    "epilogue-barrier": ("conv2d_kernels.cuh",
                         "  compute.stage(smem, Gemm::kStagingRowBytes);\n  __syncthreads();\n",
                         "  compute.stage(smem, Gemm::kStagingRowBytes);\n", [(FAST, WRONG)]),
    "over-waiting-is-fine": ("conv2d_kernels.cuh", MAIN_LOOP_WAIT,
                             "    cp_async_wait<kStages - 3>();\n    __syncthreads();\n", [(FAST, None)]),
}


def build_mutant(directory: pathlib.Path, program: str, kernels: list[pathlib.Path], name: str,
                 fault: tuple) -> pathlib.Path:
    """The fp16-only build of emulator program `program` (a .cpp of tests/emulator) with fault
    (file, old, new, ...) planted in a copy of one of its files."""
    target, old, new = fault[:3]
    directory.mkdir()
    # The harness and its headers beside the mutated copy: quoted includes find the copy first.
    for f in [*EMULATOR.iterdir(), *kernels]:
        if f.suffix in (".h", ".cpp", ".cuh"):
            shutil.copy(f, directory)
    path = directory / target
    text = path.read_text()
    assert text.count(old) == 1, f"{name}: the planted fault's anchor is not unique in {target}"
    path.write_text(text.replace(old, new))
    return build(directory / program, directory / pathlib.Path(program).stem, "-DDLK_EMULATE_F16_ONLY")


def build_mutants(root: pathlib.Path, program: str, kernels: list[pathlib.Path],
                  faults: dict[str, tuple]) -> dict[str, pathlib.Path]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(build_mutant, root / name, program, kernels, name, fault)
                   for name, fault in faults.items()}
        return {name: f.result() for name, f in futures.items()}


def check_planted_fault(exe: pathlib.Path, name: str, cases: list[tuple[str, str | None]]) -> None:
    """Each (args, expected): exit 1 with /expected/ in the output, or a pass where expected is None."""
    for args, expected in cases:
        ran = run(exe, args)
        if expected is None:
            assert ran.returncode == 0, ran.stdout + ran.stderr
        else:
            assert ran.returncode == 1, f"{name} was not caught on {args}:\n{ran.stdout}{ran.stderr}"
            assert re.search(expected, ran.stdout), f"{name} on {args}: expected /{expected}/ in\n{ran.stdout}"


@pytest.fixture(scope="module")
def mutants(tmp_path_factory) -> dict[str, pathlib.Path]:
    return build_mutants(tmp_path_factory.mktemp("mutants"), "conv2d_emulate.cpp", [KERNELS], MUTANTS)


@pytest.mark.parametrize("name", MUTANTS)
def test_planted_fault(mutants, name):
    check_planted_fault(mutants[name], name, MUTANTS[name][3])


# ---------------------------------------------------------------------------------------------
# The fp16 / bf16 flash-attention forward (csrc/cuda/attention_fwd_kernel.cuh:
# attention_forward_kernel<T, D>: cp.async K/V ring, ldmatrix(.trans), mma.sync m16n8k16, quad
# shuffles, online softmax, staged 16-byte output stores) on the emulator against a double-precision
# plain-loop attention: out and lse, zero detector findings (tests/emulator/attention_fwd_emulate.cpp).
# Dropout: the kernel reads its Philox seed through AttentionParams::seed (as the op's device tensor)
# and must drop exactly what dlk/attention.h's rule drops (the reference applies that rule).
# Every head dim: 32 and 64 (kBlockN 128), 96 (kBlockN 64), 128 (Q re-read from shared memory per
# k-step), 256 (8 warps, kBlockN 32).
# Bias (broadcast over the batch, a row of -inf that sees no key) and varlen (packed sequences of
# different lengths, an empty one, with cu_seqlens; dropout counted by packed token).
# A stated max_seqlen below a packed sequence's length (a caller's error the op cannot check under
# torch.compile or CUDA graph capture): that sequence's out and lse must be NaN, not stale memory.
# The exact fp32 SIMT kernel (attention_forward_float_kernel: plain shared loads, unseen by the
# detector, so its results carry the check, to 2e-5) at every head dim with the same features, and the
# fp16 / bf16 kernel's element-copy path for unaligned tensors (aligned=0).
# Causal from the top-left corner (SDPA's is_causal; top_left=1) as well as bottom-right. (The Hopper
# forward and the backward: the next sections.)

ATTENTION_KERNELS = [ROOT / "csrc" / "cuda" / "attention_fwd_kernel.cuh", ROOT / "csrc" / "cuda" / "attention_common.cuh",
                     ROOT / "csrc" / "cuda" / "attention_fwd_sm90_kernel.cuh", ROOT / "csrc" / "cuda" / "wgmma.cuh"]

# Nq != Nk with ragged tails (kBlockM = 64 query rows, kBlockN = 128 keys at D = 32, 64), more key
# blocks than ring stages (nk > 256: the ring is refilled), GQA (hq = 2 hk), batches, causal
# bottom-right with Nq > Nk (rows that see no key: out 0, lse -inf).
ATTENTION_CASES = {
    "f16-d64-gqa-b2-ring": "dtype=f16 d=64 b=2 hq=2 hk=1 nq=77 nk=300",
    "f16-d32-causal-nq-gt-nk-empty-rows": "dtype=f16 d=32 hq=2 hk=1 nq=130 nk=45 causal=1",
    "f16-d64-causal-nq-lt-nk": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=200 causal=1",
    "bf16-d64-causal-ring": "dtype=bf16 d=64 hq=2 hk=1 nq=100 nk=261 causal=1",
    "bf16-d32-gqa-b2-single-block": "dtype=bf16 d=32 b=2 hq=4 hk=2 nq=19 nk=19",
    "bf16-d32-ring": "dtype=bf16 d=32 hq=2 hk=1 nq=65 nk=390",
    "f16-d64-dropout-ring": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=300 dropout=0.3 philox=0x123456789abcdef",
    "bf16-d32-dropout-causal-gqa-b2": "dtype=bf16 d=32 b=2 hq=4 hk=2 nq=77 nk=150 causal=1 dropout=0.2 philox=-7",
    "f16-d96-causal-gqa-ring": "dtype=f16 d=96 hq=2 hk=1 nq=70 nk=150 causal=1",
    "bf16-d128-dropout-b2": "dtype=bf16 d=128 b=2 hq=2 hk=2 nq=33 nk=100 dropout=0.2 philox=5",
    "f16-d128-gqa-ring": "dtype=f16 d=128 hq=4 hk=2 nq=80 nk=200",
    "f16-d256-causal-8-warps": "dtype=f16 d=256 hq=2 hk=1 nq=70 nk=150 causal=1",
    "bf16-d256-dropout-ragged": "dtype=bf16 d=256 b=2 hq=2 hk=2 nq=33 nk=100 dropout=0.2 philox=5",
    "f16-d64-bias-causal": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=200 bias=1 causal=1",
    "bf16-d32-bias-dropout-b2": "dtype=bf16 d=32 b=2 hq=2 hk=2 nq=34 nk=140 bias=1 dropout=0.1 philox=3",
    "f16-d64-varlen-causal-empty": "dtype=f16 d=64 hq=4 hk=2 lens_q=5,77,0,130 lens_k=200,3,9,140 causal=1",
    "bf16-d128-varlen-dropout": "dtype=bf16 d=128 hq=2 hk=1 lens_q=70,1,33 lens_k=20,150,33 dropout=0.2 philox=11",
    "f16-d64-varlen-too-long-nan-fill": "dtype=f16 d=64 hq=2 hk=1 lens_q=40,150,7 lens_k=90,20,300 max_q=100 max_k=200",
    "f16-d64-unaligned-ring": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=300 aligned=0",
    "bf16-d96-unaligned-varlen-too-long-causal": ("dtype=bf16 d=96 hq=2 hk=1 lens_q=40,150,7 lens_k=90,20,300 max_q=100 "
                                                  "max_k=200 aligned=0 causal=1"),
    "f32-d64-gqa-b2": "dtype=f32 d=64 b=2 hq=2 hk=1 nq=37 nk=150",
    "f32-d32-causal-dropout": "dtype=f32 d=32 hq=2 hk=1 nq=40 nk=77 causal=1 dropout=0.2 philox=5",
    "f32-d96-bias": "dtype=f32 d=96 hq=2 hk=1 nq=20 nk=45 bias=1",
    "f32-d128-causal-nq-gt-nk": "dtype=f32 d=128 hq=2 hk=1 nq=40 nk=20 causal=1",
    "f32-d256-varlen-causal-empty": "dtype=f32 d=256 hq=2 hk=1 lens_q=5,33,0 lens_k=20,3,9 causal=1",
    "f32-d64-varlen-too-long-nan-fill": "dtype=f32 d=64 hq=2 hk=1 lens_q=40,150,7 lens_k=90,20,300 max_q=100 max_k=200",
    "f16-d64-causal-top-left-nq-lt-nk": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=200 causal=1 top_left=1",
    "f32-d32-varlen-causal-top-left": "dtype=f32 d=32 hq=2 hk=1 lens_q=40,90 lens_k=70,20 causal=1 top_left=1",
}


@pytest.fixture(scope="module")
def attention_emulator(tmp_path_factory) -> pathlib.Path:
    return build(EMULATOR / "attention_fwd_emulate.cpp", tmp_path_factory.mktemp("attention") / "attention_fwd_emulate")


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_attention_forward_emulated(attention_emulator, case):
    run_clean(attention_emulator, ATTENTION_CASES[case])


ATTENTION_RING = "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=300"
ATTENTION_CAUSAL = "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=200 causal=1"
ATTENTION_DROPOUT = "dtype=f16 d=64 b=2 hq=2 hk=1 nq=70 nk=200 dropout=0.25 philox=99"
ATTENTION_BIAS = "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=200 bias=1"
ATTENTION_VARLEN = "dtype=f16 d=64 hq=2 hk=1 lens_q=40,70 lens_k=90,20"
ATTENTION_MUTANTS = {
    # the online-softmax rescale of O applied to the other row of the thread's pair
    "softmax-rescale-row": ("attention_fwd_kernel.cuh", "        acc_o[n][2 * rr] *= rescale;\n",
                            "        acc_o[n][2 * (1 - rr)] *= rescale;\n",
                            [(ATTENTION_RING, WRONG), (ATTENTION_CAUSAL, WRONG)]),
    # the barrier after cp_async_wait in the main loop deleted
    "main-loop-barrier": ("attention_fwd_kernel.cuh", "    __syncthreads();     // ... and every other thread's\n",
                          "", [(ATTENTION_RING, r"raw: \d+")]),
    # the barrier before a ring stage is refilled deleted
    "refill-barrier": ("attention_fwd_kernel.cuh",
                       "    __syncthreads();  // every warp is done with this stage before it is refilled\n", "",
                       [(ATTENTION_RING, r"war: \d+")]),
    # the two keys of a lane's accumulator pair take each other's dropout decision
    "dropout-key-order": ("attention_fwd_kernel.cuh", "const int key = key0 + 8 * (idx / 2) + 2 * quad_lane + idx % 2;",
                          "const int key = key0 + 8 * (idx / 2) + 2 * quad_lane + (idx + 1) % 2;",
                          [(ATTENTION_DROPOUT, WRONG)]),
    # a fixed key instead of the one read through AttentionParams::seed (what a host-side seed baked
    # into a CUDA graph amounts to)
    # the Q re-read of head dims >= 128 takes the k-steps' fragments in reverse order
    "q-reread-k-step": ("attention_fwd_kernel.cuh", "        load_q_fragment(a, d);\n",
                        "        load_q_fragment(a, kDSteps - 1 - d);\n",
                        [("dtype=f16 d=128 hq=2 hk=1 nq=40 nk=70", WRONG), ("dtype=f16 d=64 hq=2 hk=1 nq=40 nk=70", None)]),
    # each row reads the bias row of its pair partner (i ^ 1)
    "bias-row": ("attention_fwd_kernel.cuh", "int64_t(i) * p.bias_row_stride", "int64_t(i ^ 1) * p.bias_row_stride",
                 [(ATTENTION_BIAS, WRONG), (ATTENTION_RING, None)]),
    # a packed sequence's key count taken from cu_seqlens_q
    "varlen-key-count": ("attention_common.cuh", "s.len_k = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];",
                         "s.len_k = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];", [(ATTENTION_VARLEN, WRONG)]),
    "dropout-seed-not-read": ("attention_fwd_kernel.cuh", "dropout_keep_bits<kSTiles>(args, dropout_seed(p), h,",
                              "dropout_keep_bits<kSTiles>(args, 0, h,", [(ATTENTION_DROPOUT, WRONG)]),
    # fp32: the barrier before a key block's K and V are overwritten deleted (plain loads: the results see it)
    "f32-refill-barrier": ("attention_fwd_kernel.cuh", "    __syncthreads();  // the previous block's K and V are no longer read\n",
                           "", [("dtype=f32 d=64 hq=2 hk=1 nq=37 nk=150", WRONG)]),
    # fp32: P of key key_local fetched from the lane of the next key
    "f32-probability-lane": ("attention_fwd_kernel.cuh", "s[key_local / kGroup], key_local % kGroup, kGroup);",
                             "s[key_local / kGroup], (key_local + 1) % kGroup, kGroup);",
                             [("dtype=f32 d=32 hq=1 hk=1 nq=16 nk=40", WRONG)]),
}


@pytest.fixture(scope="module")
def attention_mutants(tmp_path_factory) -> dict[str, pathlib.Path]:
    return build_mutants(tmp_path_factory.mktemp("attention_mutants"), "attention_fwd_emulate.cpp", ATTENTION_KERNELS,
                         ATTENTION_MUTANTS)


@pytest.mark.parametrize("name", ATTENTION_MUTANTS)
def test_attention_planted_fault(attention_mutants, name):
    check_planted_fault(attention_mutants[name], name, ATTENTION_MUTANTS[name][3])


# ---------------------------------------------------------------------------------------------
# The Hopper flash-attention forward (csrc/cuda/attention_fwd_sm90_kernel.cuh:
# attention_forward_sm90_kernel<T, D>, opt-in and never run on a GPU: two warpgroups, wgmma.mma_async
# S = Q K^T from shared memory and O += P V with P from registers, S(j + 1) overlapping P(j) V(j),
# K and V refilled as separate cp.async groups) on the same program with sm90=1, the wgmma
# instructions emulated by tests/emulator/wgmma_emu.h: descriptors decoded by the canonical
# 128-byte-swizzle layouts, ops run at the latest moment the hardware may (the first wait_group
# that needs them), and the detector extended to the async proxy: shared operands written in the same
# barrier interval, with a cp.async in flight or without the writer's fence.proxy.async, shared
# operands overwritten before every thread's wait_group ("wgmma-operand"), and accumulator or A
# registers changed between issue and wait ("wgmma-register"). Head dims 64 and 128 (kBlockN 128)
# and 256 (kBlockN 64, m64n256 P V); the dispatcher gives it no bias, no dropout, no other head dim
# (such a case is refused, exit 2). The too-long-sequence case found the kernel leaving such a
# sequence's rows past max_seqlen_q stale (the mma.sync kernel fills them with NaN); it now fills too.

SM90_CASES = {
    "f16-d64-gqa-b2-ring": "sm90=1 dtype=f16 d=64 b=2 hq=2 hk=1 nq=77 nk=300",
    "bf16-d128-causal-gqa-two-row-blocks": "sm90=1 dtype=bf16 d=128 hq=4 hk=2 nq=130 nk=261 causal=1",
    "f16-d256-causal-ring": "sm90=1 dtype=f16 d=256 hq=2 hk=1 nq=70 nk=150 causal=1",
    "bf16-d256-b2-ragged": "sm90=1 dtype=bf16 d=256 b=2 hq=2 hk=2 nq=33 nk=100",
    "f16-d64-causal-nq-gt-nk-empty-rows": "sm90=1 dtype=f16 d=64 hq=2 hk=1 nq=200 nk=45 causal=1",
    "f16-d128-one-row-one-key": "sm90=1 dtype=f16 d=128 hq=2 hk=1 nq=1 nk=1",
    "bf16-d64-varlen-causal-empty-sides": "sm90=1 dtype=bf16 d=64 hq=4 hk=2 lens_q=5,77,0,130,9 lens_k=200,3,9,140,0 causal=1",
    "f16-d128-varlen-too-long-nan-fill": "sm90=1 dtype=f16 d=128 hq=2 hk=1 lens_q=40,150,7 lens_k=90,20,300 max_q=100 max_k=200",
    "bf16-d128-causal-top-left-nq-gt-nk": "sm90=1 dtype=bf16 d=128 hq=2 hk=1 nq=200 nk=150 causal=1 top_left=1",
}


@pytest.mark.parametrize("case", SM90_CASES)
def test_attention_forward_sm90_emulated(attention_emulator, case):
    run_clean(attention_emulator, SM90_CASES[case])


@pytest.mark.parametrize("args", ["sm90=1 d=96", "sm90=1 d=64 bias=1", "sm90=1 d=64 dropout=0.1 philox=1"])
def test_attention_forward_sm90_refuses_what_its_dispatcher_does_not_give_it(attention_emulator, args):
    assert run(attention_emulator, args).returncode == 2


SM90_RING = "sm90=1 dtype=f16 d=64 hq=2 hk=1 nq=70 nk=300"  # 3 key blocks: the ring is refilled
SM90_D128 = "sm90=1 dtype=f16 d=128 hq=2 hk=1 nq=70 nk=300"
SM90_REORDERED = ("    wgmma::wait_group<0>();  // P(block) V(block) done: acc_o and p_frag are ours again\n"
                  "    wgmma::fence_registers(acc_o);\n    wgmma::fence_registers(p_frag);\n    rescale_o();\n"
                  "    scores_to_p();\n\n"
                  "    __syncthreads();  // both warpgroups are done with V(block) before its tile is refilled\n"
                  "    if (block + Config::kStages < key_blocks) load_values(block + Config::kStages, stage);\n")
SM90_MUTANTS = {
    # S(block + 1) not waited for (wait_group<2> with two groups pending): the softmax rewrites the
    # accumulators of an in-flight wgmma
    "scores-not-waited": ("attention_fwd_sm90_kernel.cuh", "    wgmma::wait_group<1>();  // S(block + 1) done",
                          "    wgmma::wait_group<2>();  // S(block + 1) done",
                          [(SM90_RING, r"wgmma-register: \d+"), (SM90_RING, WRONG)]),
    # the V refill moved before the wait for P(block) V(block): a wgmma operand overwritten before its wait
    "v-refill-before-pv-wait": ("attention_fwd_sm90_kernel.cuh", SM90_REORDERED,
                                SM90_REORDERED.split("\n\n")[1] + "\n" + SM90_REORDERED.split("\n\n")[0] + "\n",
                                [(SM90_RING, r"wgmma-operand: \d+")]),
    # P(block) V(block) not waited for at all: O rescaled and P rewritten under the running wgmma
    "pv-not-waited": ("attention_fwd_sm90_kernel.cuh",
                      "    wgmma::wait_group<0>();  // P(block) V(block) done: acc_o and p_frag are ours again\n", "",
                      [(SM90_RING, r"first wrong: [\s\S]*wgmma-register: \d+")]),
    # the barrier before V's tile is refilled deleted: the other warpgroup may still be reading it
    "v-refill-barrier": ("attention_fwd_sm90_kernel.cuh",
                         "    __syncthreads();  // both warpgroups are done with V(block) before its tile is refilled\n",
                         "", [(SM90_RING, r"wgmma-operand: \d+")]),
    # the generic -> async proxy fence deleted: correct numbers on the emulator, only the detector sees it
    "no-proxy-fence": ("attention_fwd_sm90_kernel.cuh", "    wgmma::fence_shared_for_async_proxy();\n    __syncthreads();",
                       "    __syncthreads();", [(SM90_RING, r" 0 of \d+ outputs wrong[\s\S]*proxy: \d+")]),
    # the main loop's cp.async wait one group too shallow: K(block + 1) read before it landed
    "cp-async-wait-depth": ("attention_fwd_sm90_kernel.cuh", "    cp_async_wait<Config::kStages - 1>();  // K(block + 1)",
                            "    cp_async_wait<Config::kStages>();  // K(block + 1)", [(SM90_RING, r"pending-read: \d+")]),
    # V's leading byte offset (the next 64 head-dim columns) halved: wrong at head dim 128, unused at 64
    "v-descriptor-lbo": ("attention_fwd_sm90_kernel.cuh", "uint32_t(Config::kBlockN) * wgmma::kSwizzleBytes, kSwizzleAtom);",
                         "uint32_t(Config::kBlockN / 2) * wgmma::kSwizzleBytes, kSwizzleAtom);",
                         [(SM90_D128, WRONG), (SM90_RING, None)]),
    # the S accumulators -> P A-fragment map takes the halves of the k16 step in the wrong order
    "p-fragment-map": ("attention_fwd_sm90_kernel.cuh", "  return 8 * step + 4 * (reg / 2) + 2 * (reg % 2) + half;",
                       "  return 8 * step + 4 * (reg % 2) + 2 * (reg / 2) + half;", [(SM90_RING, WRONG)]),
    # the NaN fill of a sequence longer than the stated max_seqlen removed (as the kernel had it)
    "no-nan-fill": ("attention_fwd_sm90_kernel.cuh", "  if (attention_sequence_too_long(p, seq)) {",
                    "  if (false) {", [(SM90_CASES["f16-d128-varlen-too-long-nan-fill"], r"first wrong: too-long sequence")]),
    # the emulator's own wgmma accumulator layout (row g + 8 ((i / 2) % 2)) planted wrong: the
    # kernel's results pin it
    "emulator-accumulator-layout": ("wgmma_emu.h", "lane / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4)",
                                    "lane / 4 + 8 * (i % 2), col = 8 * (i / 4)", [(SM90_RING, WRONG)]),
}


@pytest.fixture(scope="module")
def sm90_mutants(tmp_path_factory) -> dict[str, pathlib.Path]:
    return build_mutants(tmp_path_factory.mktemp("sm90_mutants"), "attention_fwd_emulate.cpp", ATTENTION_KERNELS,
                         SM90_MUTANTS)


@pytest.mark.parametrize("name", SM90_MUTANTS)
def test_attention_forward_sm90_planted_fault(sm90_mutants, name):
    check_planted_fault(sm90_mutants[name], name, SM90_MUTANTS[name][3])


# ---------------------------------------------------------------------------------------------
# The flash-attention backward, first its fp16 / bf16 tensor-core kernels (csrc/cuda/attention_bwd_kernel.cuh:
# row_terms_kernel<T>, then dkdv_tc_kernel<T, D, kGradK, kGradV> (one pass, or two at head dim 256:
# dV then dK), then dq_tc_kernel<T, D>, with run_tensor_core_kernels' grids) on the emulator against a
# double-precision plain-loop backward: dQ, dK, dV (GQA: summed over the group), the row terms D_i,
# nothing written past the gradients, zero detector findings (tests/emulator/attention_bwd_emulate.cpp).
# out and lse come from a double-precision forward in the program, not from the forward kernel.
# Dropout: the kernels read the Philox seed through AttentionParams::seed and must keep exactly what
# dlk/attention.h's rule keeps (dkdv per element, dq through keep_bits).
# Bias (broadcast over the batch, not differentiated; a row of -inf that sees no key contributes
# nothing) and varlen (packed sequences with cu_seqlens, lse and row terms (Hq, total_q), empty
# sequences on either side, dropout counted by packed query token and max_seqlen_k), as the forward's.
# The SIMT kernels (dkdv_simt_kernel, dq_simt_kernel: fp32, and the fp16 / bf16 fallback for unaligned
# tensors, aligned=0) with the same features; fp32's tolerance adds the fp32 steps' own bound (see the
# program). A stated max_seqlen below a packed sequence's length: that sequence's gradients NaN.
# Causal top-left (top_left=1) as well as bottom-right.
# Not covered: batches split over several launches (more than 65,535 sequences: the planner's split is
# checked on the host, tests/test_launch_plans.py).

ATTENTION_BWD_KERNELS = [ROOT / "csrc" / "cuda" / "attention_bwd_kernel.cuh",
                         ROOT / "csrc" / "cuda" / "attention_common.cuh"]


@pytest.fixture(scope="module")
def attention_bwd_emulator(tmp_path_factory) -> pathlib.Path:
    return build(EMULATOR / "attention_bwd_emulate.cpp", tmp_path_factory.mktemp("attention_bwd") / "attention_bwd_emulate")


# dkdv: 64 keys per CTA, streaming 64 queries (head dims 32, 64) or 32 (96, 128, 256) per step over
# the (query head, query block) pairs of its GQA group; dq: 64 queries per CTA, streaming 64 keys (32
# at head dim 256). Ragged tails against both, Nq != Nk both ways, GQA (hq = 2 hk), batches, more
# streamed blocks than the 2 stages (stages refilled), causal bottom-right with Nq > Nk (rows that see
# no key: dQ 0; key blocks whose first query block is not block 0), every head dim (256: dkdv in two
# passes), dropout, both dtypes; bias (row 0 of head 0 all -inf), dense only; varlen with Nq > Nk and
# Nq < Nk sequences, an empty query side (its keys get dK = dV = 0) and an empty key side (dQ = 0).
ATTENTION_BWD_CASES = {
    "f16-d64-gqa-b2-ragged": "dtype=f16 d=64 b=2 hq=2 hk=1 nq=70 nk=75",
    "f16-d32-causal-nq-gt-nk-empty-rows": "dtype=f16 d=32 hq=2 hk=1 nq=130 nk=45 causal=1",
    "bf16-d64-causal-nq-lt-nk-refill": "dtype=bf16 d=64 hq=2 hk=1 nq=45 nk=130 causal=1",
    "bf16-d32-gqa-b2-single-block": "dtype=bf16 d=32 b=2 hq=4 hk=2 nq=19 nk=19",
    "f16-d64-dropout": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=100 dropout=0.3 philox=0x123456789abcdef",
    "bf16-d32-dropout-causal-gqa-b2": "dtype=bf16 d=32 b=2 hq=4 hk=2 nq=50 nk=77 causal=1 dropout=0.2 philox=-7",
    "f16-d96-causal-gqa": "dtype=f16 d=96 hq=2 hk=1 nq=70 nk=100 causal=1",
    "bf16-d96-nq-gt-nk": "dtype=bf16 d=96 hq=1 hk=1 nq=70 nk=40",
    "f16-d128-gqa": "dtype=f16 d=128 hq=4 hk=2 nq=40 nk=70",
    "bf16-d128-dropout-b2": "dtype=bf16 d=128 b=2 hq=2 hk=2 nq=33 nk=40 dropout=0.2 philox=5",
    "f16-d256-causal-two-pass-refill": "dtype=f16 d=256 hq=2 hk=1 nq=40 nk=70 causal=1",
    "bf16-d256-dropout-two-pass": "dtype=bf16 d=256 hq=1 hk=1 nq=33 nk=40 dropout=0.25 philox=9",
    "f16-d64-bias-causal": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=100 bias=1 causal=1",
    "bf16-d32-bias-dropout-b2": "dtype=bf16 d=32 b=2 hq=2 hk=2 nq=34 nk=70 bias=1 dropout=0.1 philox=3",
    "f16-d64-varlen-causal-empty-gqa": "dtype=f16 d=64 hq=4 hk=2 lens_q=5,70,0,12 lens_k=100,3,9,0 causal=1",
    "bf16-d128-varlen-dropout": "dtype=bf16 d=128 hq=2 hk=1 lens_q=40,1,33 lens_k=20,70,33 dropout=0.2 philox=11",
    "f16-d256-varlen-two-pass": "dtype=f16 d=256 hq=1 hk=1 lens_q=40,9 lens_k=20,70",
    "f16-d64-varlen-too-long-nan-fill": "dtype=f16 d=64 hq=2 hk=1 lens_q=40,70,7 lens_k=20,20,90 max_q=50 max_k=60",
    # the SIMT kernels
    "f32-d64-gqa-b2-ragged": "dtype=f32 d=64 b=2 hq=2 hk=1 nq=70 nk=75",
    "f32-d32-causal-dropout-gqa": "dtype=f32 d=32 hq=4 hk=2 nq=50 nk=77 causal=1 dropout=0.2 philox=-7",
    "f32-d96-causal-nq-gt-nk": "dtype=f32 d=96 hq=2 hk=1 nq=130 nk=45 causal=1",
    "f32-d128-varlen-causal-empty": "dtype=f32 d=128 hq=4 hk=2 lens_q=5,70,0,12 lens_k=100,3,9,0 causal=1",
    "f32-d256-bias": "dtype=f32 d=256 hq=1 hk=1 nq=33 nk=40 bias=1",
    "f32-d64-varlen-too-long-nan-fill": "dtype=f32 d=64 hq=2 hk=1 lens_q=40,70,7 lens_k=20,20,90 max_q=50 max_k=60",
    "f16-d64-causal-top-left-nq-lt-nk": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=130 causal=1 top_left=1",
    "bf16-d32-causal-top-left-nq-gt-nk": "dtype=bf16 d=32 hq=2 hk=1 nq=130 nk=45 causal=1 top_left=1",
    "f32-d64-varlen-causal-top-left": "dtype=f32 d=64 hq=2 hk=1 lens_q=40,90 lens_k=70,20 causal=1 top_left=1",
    "f16-d64-unaligned-dropout": "dtype=f16 d=64 hq=2 hk=1 nq=70 nk=100 aligned=0 dropout=0.3 philox=3",
    "bf16-d96-unaligned-causal": "dtype=bf16 d=96 hq=2 hk=1 nq=45 nk=130 causal=1 aligned=0",
}


@pytest.mark.parametrize("case", ATTENTION_BWD_CASES)
def test_attention_backward_emulated(attention_bwd_emulator, case):
    run_clean(attention_bwd_emulator, ATTENTION_BWD_CASES[case])


BWD_REFILL = "dtype=f16 d=32 hq=2 hk=1 nq=70 nk=150"  # dkdv: 4 (head, query block) steps; dq: 3 key blocks
BWD_DROPOUT = "dtype=f16 d=32 b=2 hq=2 hk=1 nq=40 nk=70 dropout=0.25 philox=99"
BWD_TWO_PASS = "dtype=f16 d=256 hq=1 hk=1 nq=20 nk=33"
BWD_BIAS = "dtype=f16 d=32 hq=2 hk=1 nq=40 nk=70 bias=1"  # nq even: row i ^ 1 stays inside the bias
# The second sequence's key start (20) below its query start (70): the bias-free varlen fault below
# then reads lse rows of the right buffer, only the wrong ones.
BWD_VARLEN = "dtype=f16 d=32 hq=2 hk=1 lens_q=70,40 lens_k=20,90"
DKDV_WAIT = "    cp_async_wait<1>();   // everything but the group just issued has landed (K, V, iteration it)\n"
DQ_REFILL = ("        mma_sync_unordered(dq_acc[2 * np + 1], a, {bk[2], bk[3]}, TypeTag<T>{});\n      }\n    }\n"
             "    __syncthreads();  // this stage is refilled by the next iteration's issue()\n")
DKDV_FACTOR = ("          prob = exp2f(biased_score<T>(p, st[nt][e], b, h, i, j) * kLog2e - lse_tile[il]);\n"
               "          factor = dropout.factor(h, dropout.sequence_token(b, seq.start_q + i), j);\n")
ATTENTION_BWD_MUTANTS = {
    # dK += dS^T Q: the second n-tile takes the k-halves of its Q^T fragment in the wrong order
    "dk-fragment-halves": ("attention_bwd_kernel.cuh",
                           "        mma_sync_unordered(dk_acc[2 * np + 1], a, {bq[2], bq[3]}, TypeTag<T>{});\n",
                           "        mma_sync_unordered(dk_acc[2 * np + 1], a, {bq[3], bq[2]}, TypeTag<T>{});\n",
                           [(BWD_REFILL, r"first wrong: dk ")]),
    # dq's dS takes the row term D_i of the thread's other row (g + 8 for g)
    "dq-row-term": ("attention_bwd_kernel.cuh", "dp[nt][e] * dropout.factor_of(keep, 4 * nt + e) - row_dsum[half]",
                    "dp[nt][e] * dropout.factor_of(keep, 4 * nt + e) - row_dsum[1 - half]",
                    [(BWD_REFILL, r"first wrong: dq ")]),
    # dkdv: the barrier between cp_async_wait and the fragment loads deleted
    "dkdv-main-loop-barrier": ("attention_bwd_kernel.cuh", DKDV_WAIT + "    __syncthreads();\n", DKDV_WAIT,
                               [(BWD_REFILL, r"raw: \d+")]),
    # dq: the barrier before a K/V stage is refilled deleted
    "dq-refill-barrier": ("attention_bwd_kernel.cuh", DQ_REFILL, DQ_REFILL.rsplit("    __syncthreads();", 1)[0],
                          [(BWD_REFILL, r"war: \d+")]),
    # dkdv: each element takes the keep decision of its neighbouring key (j ^ 1)
    "dkdv-dropout-key": ("attention_bwd_kernel.cuh", DKDV_FACTOR,
                         DKDV_FACTOR.replace("seq.start_q + i), j);", "seq.start_q + i), j ^ 1);"),
                         [(BWD_DROPOUT, r"first wrong: d[kv] "), (BWD_REFILL, None)]),
    # dq: the two keys of a lane's accumulator pair take each other's keep bits
    "dq-dropout-key-order": ("attention_bwd_kernel.cuh", "dj = 8 * (idx / 4) + (idx % 2);",
                             "dj = 8 * (idx / 4) + (idx + 1) % 2;", [(BWD_DROPOUT, r"first wrong: dq ")]),
    # the dK pass of head dim 256 no longer computes dP (the split passes' kNeedDP): wrong dK there only
    "two-pass-dk-without-dp": ("attention_bwd_kernel.cuh", "  constexpr bool kNeedDP = kGradK;",
                               "  constexpr bool kNeedDP = kGradK && kGradV;",
                               [(BWD_TWO_PASS, r"first wrong: dk "), (BWD_REFILL, None)]),
    # the recomputed scores (biased_score, both kernels) add the bias row of the pair partner (i ^ 1)
    "bias-row": ("attention_bwd_kernel.cuh", "p.bias_row_stride, b, h, i) + j]", "p.bias_row_stride, b, h, i ^ 1) + j]",
                 [(BWD_BIAS, WRONG), (BWD_REFILL, None)]),
    # dkdv reads a packed sequence's lse rows from its key start (cu_seqlens_k[b]) instead of its query start
    "varlen-dkdv-lse-offset": ("attention_bwd_kernel.cuh",
                               "const int64_t at = b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_q + i;",
                               "const int64_t at = b * p.lse_batch_stride + h * p.lse_head_stride + seq.start_k + i;",
                               [(BWD_VARLEN, r"first wrong: d[kv] "), (BWD_REFILL, None)]),
    # the first query that sees a key computed bottom-right always: with Nq > Nk the SIMT dK/dV (16-row
    # query blocks) skip rows under top-left (the tensor-core kernel's 64-row blocks round it away)
    "first-query-ignores-top-left": ("attention_common.cuh",
                                     "  const int shift = p.causal_bottom_right ? len_k - len_q : 0;\n  const int first = j - shift;",
                                     "  const int shift = len_k - len_q;\n  const int first = j - shift;",
                                     [("dtype=f32 d=32 hq=2 hk=1 nq=70 nk=40 causal=1 top_left=1", r"first wrong: d[kv] "),
                                      ("dtype=f32 d=32 hq=2 hk=1 nq=70 nk=40 causal=1", None)]),
    # SIMT dK/dV: dS takes the row term of the neighbouring query row (il ^ 1)
    "simt-dkdv-row-term": ("attention_bwd_kernel.cuh", "        ds_tile[idx] = prob * (dp * factor - dsum_tile[il]);",
                           "        ds_tile[idx] = prob * (dp * factor - dsum_tile[il ^ 1]);",
                           [("dtype=f32 d=32 hq=2 hk=1 nq=40 nk=70", r"first wrong: dk ")]),
    # SIMT dQ: each element takes the keep decision of its neighbouring key (j ^ 1)
    "simt-dq-dropout-key": ("attention_bwd_kernel.cuh", "dropout.sequence_token(b, seq.start_q + i), j) - dsum_tile[il]);",
                            "dropout.sequence_token(b, seq.start_q + i), j ^ 1) - dsum_tile[il]);",
                            [("dtype=f32 d=32 b=2 hq=2 hk=1 nq=40 nk=70 dropout=0.25 philox=99", r"first wrong: dq "),
                             ("dtype=f32 d=32 hq=2 hk=1 nq=40 nk=70", None)]),
    # SIMT dK/dV: the barrier before the next query block's tiles are loaded deleted (plain loads: the
    # results see it), in fp32 and in the fp16 fallback
    "simt-dkdv-refill-barrier": ("attention_bwd_kernel.cuh",
                                 "      __syncthreads();  // the previous block's tiles are no longer read\n", "",
                                 [("dtype=f32 d=32 hq=2 hk=1 nq=40 nk=70", WRONG),
                                  ("dtype=f16 d=64 hq=2 hk=1 nq=70 nk=100 aligned=0", WRONG)]),
}


@pytest.fixture(scope="module")
def attention_bwd_mutants(tmp_path_factory) -> dict[str, pathlib.Path]:
    return build_mutants(tmp_path_factory.mktemp("attention_bwd_mutants"), "attention_bwd_emulate.cpp",
                         ATTENTION_BWD_KERNELS, ATTENTION_BWD_MUTANTS)


@pytest.mark.parametrize("name", ATTENTION_BWD_MUTANTS)
def test_attention_backward_planted_fault(attention_bwd_mutants, name):
    check_planted_fault(attention_bwd_mutants[name], name, ATTENTION_BWD_MUTANTS[name][3])
