"""The Winograd and depthwise convolution kernels run on the CPU by the warp emulator in tests/emulator,
through their launchers' own host code, against plain-loop double-precision convolutions. No GPU.

How the launchers run: tests/emulator/winograd_emulate.cpp and depthwise_emulate.cpp compile
csrc/cuda/conv2d_winograd.cu and csrc/cuda/conv2d.cu whole with g++ (through nvcc, for the CUDA headers;
linked with -cudart=none). The only change to a .cu is rewrite_launches below: every
`kernel<<<grid, block, smem, stream>>>(args)` becomes `::dlk_emu::cuda_launch("kernel", grid, block, smem,
stream)(kernel, args)`, which runs the grid on the emulator at once (tests/emulator/warp_emu.h, the
section on launches from host code). The CUDA runtime calls of launch.cuh (device attributes,
cudaFuncSetAttribute, cudaGetLastError) are answered by warp_emu.h's DLK_EMU_CUDA_RUNTIME stubs, with a
device of `sms=` SMs (132 unless a case says otherwise), which is what sizes the grid-stride grids, the
depthwise weight gradient's split and the choice of the narrow F(2) GEMM tiling. So the launch order,
grids, blocks, dynamic shared memory, workspace layout and the paths the launchers choose are theirs.
Besides the rewrite, conv2d.cu is compiled with `__shared__` defined as `static` (depthwise_wgrad_kernel's
block-wide array, one per running block; see depthwise_emulate.cpp) and with stubs for the implicit-GEMM
launchers it also calls (never reached by a depthwise case), and the fp16-only planted-fault builds let
the launchers' dtype dispatch instantiate fp16 alone (to build faster).

Winograd (conv2d_winograd.cu): winograd_transform_weight_cuda (winograd_weight_transform_kernel) and
conv2d_winograd_cuda (pad_weight_rows_kernel when C is not a multiple of 8 or U is misaligned;
winograd_input_transform_kernel in its three forms: channels_last channel pairs, channels_last, NCHW;
winograd_gemm_kernel with cp.async stages, ldmatrix and mma.sync for fp16 / bf16 (F(2) wide and narrow,
F(4)) and TF32, and its FMA path for exact fp32 and fp64; fused output transform and epilogue, paired
and single stores). Checked against double precision on the same rounded inputs: U = G g G^T, its
padded copy, V = B^T d B in the workspace (padding channels exactly zero), each within the dtype's
rounding; the output against the Winograd algorithm in double on the U and V the kernels stored (the
GEMM, output transform, epilogue and stores alone: fp32 sums and the output's rounding); and the output
against a direct convolution (+ bias + residual, LeakyReLU) within the first-order error bound of the
precision contract of dlk/winograd.h (U, V rounded to the dtype, fp32 sums): 1.25 (2 u_T + (C + 64)
u_fp32) B + u_T |ref|, B the sum of the magnitudes of the terms the algorithm adds for that output (see
winograd_emulate.cpp). A fixed relative bar is not available to borrow: dlkernels.ops.conv2d lists no
Winograd tile as accurate (ACCURATE_WINOGRAD_TILES is empty; tests/test_conv2d.py holds Winograd to 4x /
64x PyTorch's measured error); the bound is what the contract promises, and the tight checks are the
per-stage ones. The transform matrices of the references are Lavin & Gray's, written out in the harness
and checked there to reproduce a 3x3 correlation.

Depthwise (conv2d.cu, groups == C == K): conv2d_forward_cuda / conv2d_backward_input_cuda
(depthwise_kernel<T, kCL, kVec, kBackward> over depthwise_item: channels_last with 16-byte channel
vectors, channels_last scalar (odd C or misaligned tensors), NCHW; grid-stride loops) and
conv2d_backward_weight_cuda (depthwise_wgrad_kernel's block tree reduction, split over blocks with
reduce_partials_kernel summing the slots), per-axis stride / padding / dilation, odd sizes, padding
beyond the kernel, the fused epilogue, every dtype. Tolerance: u_T |ref| + (terms + 8) u_acc sum|terms|.

Not covered, and why:
  - the Winograd data gradient and the weight cache are Python (dlkernels/ops/conv2d.py: a Winograd
    forward of the flipped weight with padding 2 - p); the negative padding it produces is covered here;
  - launches split for more than 2^31 - 1 items (depthwise batch chunks, the 64-bit index form of the
    input transform, several wgrad launches): the sizes are out of reach of an emulator;
  - the race detector does not see plain shared-memory loads (the Winograd FMA path reads its stages
    with them) nor depthwise_wgrad_kernel's static `__shared__` array (compiled as a `static`, one per
    block, so the block's threads share it; the detector watches dynamic shared memory only): there the
    results are the check (a deleted tree barrier is caught, see below);
  - the implicit-GEMM path of conv2d.cu is conv2d_emulate.cpp's (tests/test_cuda_emulator.py); here its
    launchers are stubs that fail the run.

Planted faults (fp16-only builds of copies of the sources), each must be caught:
  - input-tile-offset         V reads its tile one column to the right: results (V, output);
  - output-transform-entry    A^T's F(2) entry (1, 3) is +1 instead of -1 (dlk/winograd.h, which the
                              GEMM kernel's output_coefficients use): results (output, conv2d) at F(2),
                              a pass at F(4);
  - gemm-main-loop-barrier    the __syncthreads() after cp_async_wait in winograd_gemm_kernel deleted:
                              the detector (raw and war), narrow F(2) and F(4);
  - gemm-wait-group           cp_async_wait<kStages - 1>: pending reads (detector) and NaN results;
  - forward-dilation          depthwise_source_coordinate's forward drops the dilation term: results
                              with dilation, a pass without;
  - backward-kernel-flip      the input gradient's source position o + pad - t * dil (the transposed
                              convolution's flip of the kernel window) taken as the forward's
                              o - pad + t * dil: results (dx only), at stride 1 too;
  - dgrad-stride-remainder    the input gradient takes output positions that the stride skips: results
                              with stride > 1, a pass at stride 1;
  - wgrad-tree-barrier        the barrier between the tree reduction's levels deleted: results (dw);
  - wgrad-split-slot          every split writes slot first_slot: results when split, a pass when not.

Cost: two harness builds in parallel (~7 s), 9 fp16-only mutant builds two at a time (~3-4 s each),
0.02-1.7 s per case: about 50 s on 2 cores.
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import re
import shutil

import pytest

from test_cuda_emulator import EMULATOR, ROOT, WRONG, build, check_planted_fault, run, run_clean

import cuda_tools as cuda

CUDA = ROOT / "csrc" / "cuda"
WINOGRAD_CU = CUDA / "conv2d_winograd.cu"
CONV_CU = CUDA / "conv2d.cu"

pytestmark = pytest.mark.skipif(cuda.NVCC is None, reason="nvcc is not installed")

# `kernel<<<config>>>(` with the kernel a name or a template-id (one level of nested <...> allowed).
LAUNCH = re.compile(r"(?P<kernel>\b[A-Za-z_]\w*(?:<[^;{}<>]*(?:<[^;{}<>]*>[^;{}<>]*)*>)?)(?P<space>\s*)"
                    r"<<<(?P<config>[^;]*?)>>>\(", re.S)


def rewrite_launches(text: str) -> str:
    """`kernel<<<config>>>(args)` -> `::dlk_emu::cuda_launch("kernel", config)(kernel, args)`, nothing else
    (line breaks kept, so compiler messages point at the .cu's own lines)."""
    def launch(m: re.Match) -> str:
        name = m["kernel"].split("<")[0]
        return f'::dlk_emu::cuda_launch("{name}", {m["config"]}){m["space"]}({m["kernel"]}, '

    rewritten, count = LAUNCH.subn(launch, text)
    assert count == text.count("<<<") and "<<<" not in rewritten, "a launch the rewrite does not understand"
    return rewritten


def host_sources(directory: pathlib.Path, sources: dict[pathlib.Path, str]) -> None:
    """Writes each .cu's text, launches rewritten, as <stem>.host.cu into `directory`."""
    for path, text in sources.items():
        (directory / f"{path.stem}.host.cu").write_text(rewrite_launches(text))


def build_program(directory: pathlib.Path, program: str, source_dir: pathlib.Path = EMULATOR,
                  *defines: str) -> pathlib.Path:
    """Builds tests/emulator/<program> (or its copy in source_dir) against the .host.cu files in
    `directory`, linked without the CUDA runtime. `directory` is searched for quoted includes before
    the source tree (-iquote), so that a mutated header placed there is the one compiled."""
    return build(source_dir / program, directory / pathlib.Path(program).stem, f"-Xcompiler=-iquote{directory}",
                 "-cudart=none", *defines)


PROGRAMS = {"winograd_emulate.cpp": WINOGRAD_CU, "depthwise_emulate.cpp": CONV_CU}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict[str, pathlib.Path]:
    directory = tmp_path_factory.mktemp("conv_families")
    host_sources(directory, {cu: cu.read_text() for cu in PROGRAMS.values()})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {program: pool.submit(build_program, directory, program) for program in PROGRAMS}
        return {program: f.result() for program, f in futures.items()}


@pytest.fixture(scope="module")
def winograd(programs) -> pathlib.Path:
    return programs["winograd_emulate.cpp"]


@pytest.fixture(scope="module")
def depthwise(programs) -> pathlib.Path:
    return programs["depthwise_emulate.cpp"]


# Odd channel counts (pad_weight_rows_kernel, scalar input transform), C > one 128-byte chunk (two
# pipeline steps per xi), K over two GEMM column blocks, tiles over two row blocks, partial output tiles,
# negative / one-sided padding, misaligned U (u_offset) and output (out_offset: single stores), both
# GEMM tilings of F(2) fp16 / bf16 (narrow at 132 SMs, wide at sms=1), every dtype and both layouts.
WINOGRAD_CASES = {
    "f16-f2-nhwc-pairs-narrow-epilogue": "dtype=f16 tile=2 n=2 c=16 h=9 w=7 k=12 epilogue=1",
    "f16-f2-nchw-wide-negative-pad": "dtype=f16 tile=2 layout=nchw n=1 c=7 h=8 w=11 k=9 pad=-1,2 sms=1",
    "f16-f4-nhwc-odd-c-single-stores": "dtype=f16 tile=4 n=2 c=13 h=9 w=7 k=10 epilogue=1 out_offset=1",
    "f16-f4-nhwc-two-chunks-two-k-blocks": "dtype=f16 tile=4 n=1 c=72 h=6 w=5 k=40 pad=1,0",
    "bf16-f2-nhwc-k-blocks-misaligned-u": "dtype=bf16 tile=2 n=2 c=16 h=6 w=7 k=70 u_offset=1",
    "bf16-f4-nchw": "dtype=bf16 tile=4 layout=nchw n=1 c=8 h=10 w=9 k=8 pad=0,1 epilogue=1",
    "tf32-f2-nhwc-wide": "dtype=tf32 tile=2 n=1 c=9 h=7 w=8 k=7 epilogue=1",
    "tf32-f4-nchw": "dtype=tf32 tile=4 layout=nchw n=1 c=20 h=7 w=6 k=12 pad=2,1",
    "f32-f2-fma-nhwc-single-stores": "dtype=f32 tile=2 n=3 c=9 h=5 w=9 k=6 epilogue=1 out_offset=1",
    "f32-f4-fma-nchw-two-chunks-two-k-blocks": "dtype=f32 tile=4 layout=nchw n=2 c=40 h=14 w=13 k=36",
    "f64-f2-fma-nhwc-row-blocks": "dtype=f64 tile=2 n=4 c=5 h=9 w=7 k=70 pad=0,2",
    "f64-f4-fma-nchw-epilogue": "dtype=f64 tile=4 layout=nchw n=1 c=17 h=10 w=9 k=9 epilogue=1",
}

# Per-axis stride / padding / dilation, odd sizes, padding beyond the kernel, channel vectors (C a
# multiple of 16 bytes, aligned) and scalar channels_last (odd C, offset=1), grid-stride loops (sms=1:
# 8 blocks), the split weight gradient with reduce_partials_kernel (N*P*Q >= 8192), every dtype.
DEPTHWISE_CASES = {
    "f16-nhwc-vector-stride-dilation-epilogue": "dtype=f16 n=2 c=16 h=9 w=7 r=3 s=2 stride=2,1 pad=1,0 dil=1,2 epilogue=1",
    "f16-nhwc-odd-c": "dtype=f16 n=1 c=5 h=7 w=6 r=2 s=3 stride=1,2 pad=0,1 dil=2,1",
    "f16-nhwc-misaligned": "dtype=f16 n=2 c=8 h=6 w=7 r=3 s=3 stride=2,2 pad=1,1 offset=1 epilogue=1",
    "f16-nchw-split-wgrad": "dtype=f16 layout=nchw n=2 c=3 h=64 w=64 r=3 s=3 pad=1,1",
    "bf16-nchw-large-stride-epilogue": "dtype=bf16 layout=nchw n=1 c=6 h=11 w=10 r=5 s=3 stride=3,2 pad=2,1 dil=1,2 epilogue=1",
    "bf16-nhwc-vector-dilation": "dtype=bf16 n=1 c=24 h=6 w=5 r=3 s=3 stride=2,2 pad=1,1 dil=2,2",
    "f32-nhwc-vector-grid-stride": "dtype=f32 n=2 c=12 h=20 w=18 r=3 s=3 pad=1,1 sms=1 epilogue=1",
    "f32-nhwc-vector-split-wgrad": "dtype=f32 n=2 c=4 h=64 w=64 r=3 s=1 stride=1,1 pad=1,0",
    "f32-nchw-grid-stride": "dtype=f32 layout=nchw n=2 c=7 h=13 w=11 r=3 s=3 stride=2,1 pad=1,2 dil=2,1 sms=1",
    "f64-nhwc-vector": "dtype=f64 n=1 c=6 h=8 w=7 r=5 s=3 stride=3,1 pad=2,1 dil=1,2",
    "f64-nchw-pad-beyond-kernel": "dtype=f64 layout=nchw n=2 c=3 h=5 w=4 r=2 s=2 stride=2,3 pad=3,2 epilogue=1",
}

# What the launchers must have chosen for some of the cases (nothing is forced: the launch log).
PATHS = {
    "f16-f2-nhwc-pairs-narrow-epilogue": ["channel pairs", "winograd_gemm_kernel<tensor cores, narrow>"],
    "f16-f2-nchw-wide-negative-pad": ["pad_weight_rows_kernel", "input_transform_kernel<nchw>",
                                      "winograd_gemm_kernel<tensor cores, wide>"],
    "f16-f4-nhwc-odd-c-single-stores": ["winograd_input_transform_kernel<channels_last> "],
    "bf16-f2-nhwc-k-blocks-misaligned-u": ["pad_weight_rows_kernel", "winograd_gemm_kernel<tensor cores, narrow> (2 blocks"],
    "tf32-f2-nhwc-wide": ["winograd_gemm_kernel<tensor cores, wide>"],
    "f32-f2-fma-nhwc-single-stores": ["winograd_gemm_kernel<fma>"],
    "f16-nchw-split-wgrad": ["depthwise_wgrad_kernel<nchw> (3 x 9 x 2 blocks)", "reduce_partials_kernel"],
    "f16-nhwc-misaligned": ["depthwise_kernel<fwd, channels_last> ", "depthwise_kernel<dgrad, channels_last> "],
    "f32-nhwc-vector-grid-stride": ["depthwise_kernel<fwd, channels_last, vector> (8 x 1 x 1 blocks)"],
    "f32-nhwc-vector-split-wgrad": ["depthwise_wgrad_kernel<channels_last, vector> (1 x 3 x 2 blocks)",
                                    "reduce_partials_kernel"],
}
def check_case(exe: pathlib.Path, case: str, args: str) -> None:
    ran = run_clean(exe, args)
    for path in PATHS.get(case, []):
        assert path in ran.stdout, f"{case}: the launcher did not take {path!r}:\n{ran.stdout}"


@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_emulated(winograd, case):
    check_case(winograd, case, WINOGRAD_CASES[case])


@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_emulated(depthwise, case):
    check_case(depthwise, case, DEPTHWISE_CASES[case])


def test_bad_cases_are_refused(winograd, depthwise):
    """A tile the launcher has no kernel for, or an empty output, is a bad case (exit 2), not a pass."""
    assert run(winograd, "dtype=f16 tile=3").returncode == 2
    assert run(winograd, "dtype=f16 tile=2 h=2 w=2 pad=0,0").returncode == 2
    assert run(depthwise, "dtype=f16 h=2 w=2 r=3 s=3 pad=0,0").returncode == 2


# ---------------------------------------------------------------------------------------------
# Planted faults: (file under ROOT, old, new, [(args, expected output or None for a pass)]). Each `old`
# occurs exactly once in its file.

GEMM_WAIT = "    cp_async_wait<kStages - 2>();\n    __syncthreads();\n"
W_F2 = "dtype=f16 tile=2 n=1 c=16 h=7 w=6 k=12"            # narrow F(2)
W_F4 = "dtype=f16 tile=4 n=1 c=13 h=7 w=9 k=10 layout=nchw"  # F(4), scalar NCHW input transform
D_DIL = "dtype=f16 n=2 c=16 h=9 w=7 r=3 s=2 stride=2,1 pad=1,0 dil=1,2"
D_ODD = "dtype=f16 layout=nchw n=1 c=5 h=8 w=7 r=3 s=3 stride=1,2 pad=1,1 dil=2,1"
D_PLAIN = "dtype=f16 n=1 c=8 h=6 w=5 r=3 s=3 pad=1,1"
D_SPLIT = "dtype=f16 layout=nchw n=2 c=3 h=64 w=64 r=3 s=1 pad=1,0"
MUTANTS = {
    "winograd_emulate.cpp": {
        "input-tile-offset": ("csrc/cuda/conv2d_winograd.cu",
                              "col0 = tile.tw * Tile - a.pad_w;", "col0 = tile.tw * Tile - a.pad_w + 1;",
                              [(W_F2, r"first wrong: V\["), (W_F4, WRONG)]),
        "output-transform-entry": ("csrc/include/dlk/winograd.h", "    o[os] = m1 - m2 - m3;\n",
                                   "    o[os] = m1 - m2 + m3;\n", [(W_F2, r"first wrong: output\["), (W_F4, None)]),
        "gemm-main-loop-barrier": ("csrc/cuda/conv2d_winograd.cu", GEMM_WAIT, "    cp_async_wait<kStages - 2>();\n",
                                   [(W_F2, r"raw: \d+[\s\S]*war: \d+"), (W_F4, r"raw: \d+[\s\S]*war: \d+")]),
        "gemm-wait-group": ("csrc/cuda/conv2d_winograd.cu", GEMM_WAIT,
                            "    cp_async_wait<kStages - 1>();\n    __syncthreads();\n",
                            [(W_F2, r"pending-read: \d+"), (W_F4, WRONG)]),
    },
    "depthwise_emulate.cpp": {
        "forward-dilation": ("csrc/cuda/conv2d.cu", "source = o * stride - pad + t * dilation;",
                             "source = o * stride - pad + t;",
                             [(D_DIL, r"first wrong: y\["), (D_ODD, WRONG), (D_PLAIN, None)]),
        "backward-kernel-flip": ("csrc/cuda/conv2d.cu", "const int shifted = o + pad - t * dilation;",
                                 "const int shifted = o - pad + t * dilation;",
                                 [(D_DIL, r"first wrong: dx\["), (D_PLAIN, r"first wrong: dx\[")]),
        "dgrad-stride-remainder": ("csrc/cuda/conv2d.cu", "return rest == 0 && source < extent;",
                                   "return source < extent;",
                                   [(D_DIL, r"first wrong: dx\["), (D_PLAIN, None)]),
        "wgrad-tree-barrier": ("csrc/cuda/conv2d.cu",
                               "sums[thread][v] += sums[thread + stride][v];\n    }\n    __syncthreads();\n",
                               "sums[thread][v] += sums[thread + stride][v];\n    }\n",
                               [(D_PLAIN, r"first wrong: dw\["), (D_ODD, r"first wrong: dw\[")]),
        "wgrad-split-slot": ("csrc/cuda/conv2d.cu", "[(args.first_slot + blockIdx.z) * args.slot_elements + index]",
                             "[args.first_slot * args.slot_elements + index]",
                             [(D_SPLIT, r"first wrong: dw\["), (D_PLAIN, None)]),
    },
}
FAULTS = [(program, name) for program, faults in MUTANTS.items() for name in faults]


def build_mutant(directory: pathlib.Path, program: str, fault: tuple) -> pathlib.Path:
    """The fp16-only build of `program` with `fault` planted in a copy of its file: the emulator's
    sources and the (rewritten) .cu are copied into `directory`; a mutated header goes there too
    (csrc/cuda/x -> x, csrc/include/dlk/x -> dlk/x), where the quoted includes find it first."""
    target, old, new = fault[:3]
    directory.mkdir()
    for f in EMULATOR.iterdir():
        if f.suffix in (".h", ".cpp"):
            shutil.copy(f, directory)
    source = ROOT / target
    text = source.read_text()
    assert text.count(old) == 1, f"the planted fault's anchor is not unique in {target}"
    mutated = text.replace(old, new)
    cu = PROGRAMS[program]
    if source == cu:
        host_sources(directory, {cu: mutated})
    else:
        host_sources(directory, {cu: cu.read_text()})
        relative = source.relative_to(ROOT / "csrc" / ("include" if "include" in source.parts else "cuda"))
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_text(mutated)
    return build_program(directory, program, directory, "-DDLK_EMULATE_F16_ONLY")


@pytest.fixture(scope="module")
def mutants(tmp_path_factory) -> dict[tuple[str, str], pathlib.Path]:
    root = tmp_path_factory.mktemp("conv_family_mutants")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(program, name): pool.submit(build_mutant, root / name, program, MUTANTS[program][name])
                   for program, name in FAULTS}
        return {key: f.result() for key, f in futures.items()}


@pytest.mark.parametrize("program, name", FAULTS, ids=[name for _, name in FAULTS])
def test_planted_fault(mutants, program, name):
    check_planted_fault(mutants[(program, name)], name, MUTANTS[program][name][3])
