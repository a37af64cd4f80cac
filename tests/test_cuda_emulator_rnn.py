"""The LSTM / GRU kernels (csrc/cuda/rnn_kernels.cuh), per-step and persistent, run on the CPU by the
warp emulator in tests/emulator, over whole sequences, against a plain-loop double-precision LSTM / GRU.
No GPU.

tests/emulator/rnn_emulate.cpp compiles the kernel header unchanged and drives rnn_forward_kernel and
rnn_backward_kernel (kPersistent = false) the way rnn.cu's per-step path does: one launch per time step
(the backward: T iterations in reverse, then the grad_h0 / grad_c0 launch), the grid of
plan::plan_rnn_grid, rnn.cu's tile choice (n_tiles_for, copied) or a forced one, StepArgs' alignment
flags and batch-tile offsets as rnn.cu sets them, the backward workspace (W_hh^T, the two gate-gradient
buffers, the carries) left uninitialised (NaN). What rnn.cu's callers compute outside the kernels (the
input projection x W_ih^T + b_ih (+ b_hh for LSTM), W_hh^T) is computed on the host in double. The
reference follows dlk/rnn.h and csrc/cpu/rnn.cpp (gate orders i, f, g, o and r, z, n; h_t stored in
the input dtype), and the backward runs on the reference forward's tensors, so the two kernels are
checked separately. Checked: h_all, h_n, c_all, c_n, saved (forward); grad_x_proj, grad_gh (GRU),
grad_h0, grad_c0 (backward); every output starts as NaN, so an unwritten one fails. Tolerances are
relative to each tensor's largest |reference| (8 u of the input dtype for fp16 / bf16; see
rnn_emulate.cpp), and the race detector must report nothing.

Covered: LSTM and GRU; fp16 and bf16 (mma.sync m16n8k16, K split over 4 warps, partials summed in
shared memory) and fp32 / fp64 (the SIMT GEMM with per-warp staging; __syncwarp is emulated as a
warp-wide wait); hidden sizes not a multiple of 16 and odd ones (the unaligned operand loads; GRU's
3H odd in the backward too); batches not a multiple of 8 and over several batch tiles; both tile
counts; reverse direction; ragged lengths (packed sequences); training off (saved = null); null
grad_h_n / grad_c_n; batch tiles split over several launches (chunk=, the batch_tile_offset path
rnn.cu takes beyond 65,535 tiles).

The persistent kernels (kPersistent = true; `path=persistent`): one cooperative launch for the whole
sequence (forward: T steps; backward: T + 1), run by warp_emu.h's launch_cooperative: every CTA
co-resident, each with its own shared memory (the one `extern __shared__` buffer is swapped at every
change of CTA), the grid barrier's atomicAdd / __threadfence / __nanosleep emulated and its inline-PTX
ld.acquire mapped to the emulator by an overload (rnn_emulate.cpp), spinners yielding, a grid that
only spins for 64 rounds reported as a deadlock (an "execution" finding, never a hang). As rnn.cu's
persistent branch: the (hidden tiles, batch tiles) grid of a single launch, shared memory
persistent_smem_bytes(K) with the weight slice, first_step 0, num_steps = launches, the barrier
counter zeroed first; a case rnn.cu would not run persistent (chunked, slice over 227 KiB) is a bad
case. Same reference and checks, plus the counter's final value ((launches - 1) x CTAs arrivals). The
default turn order is greedy (each CTA runs until it spins, then the next), under which a barrier that
opens before the last CTA arrives lets CTAs read step outputs not yet written (NaN); schedule=rr
(lock-step turns) runs a few cases in the friendliest order. Covered there: both cells, fp16 / bf16 /
fp32 / fp64, several CTAs along hidden and batch (the barrier matters), odd hidden, reverse, ragged,
training off, null grads, forced tile counts.

Not covered: rnn_transpose_kernel (its static __shared__ tile would be a per-fiber local on the host;
W_hh^T is formed on the host). rnn.cu's path choice (persistent_fits' occupancy query: here every
grid is co-resident), argument checks, workspace layout and the T = 0 copies. The detector does not
see plain shared loads (the pointwise phase's partial sums, the SIMT operand reads), so a missing
barrier before them shows in the results only; it does not see global memory at all, so cross-CTA
ordering in the persistent kernels (step s reading other CTAs' step s - 1 writes) shows in the results
only (per-step: it holds by construction, each step being its own launch). The emulator's memory is
sequentially consistent: a missing __threadfence before the arrival, or .cg loads replaced by cached
ones, cannot be seen; nor can a kernel that spins without __nanosleep or an acquire load (its fiber
would never yield: a hang, bounded by the test's subprocess timeout).

Planted faults (RNN_MUTANTS, fp16-only builds of copies of rnn_kernels.cuh), each must fail:
  - c-fragment-duplicate  lane 1 stores to lane 0's columns: the detector (waw: two writers of a
                          partial in one barrier interval) and the results (unstored partials: NaN);
  - partials-barrier      the __syncthreads() that ends block_gemm (between the partial stores and
                          the pointwise phase) deleted: the pointwise sums read partials other warps
                          have not stored yet (0xFF: NaN): results. The detector cannot see it (plain
                          loads; each partial has one writer);
  - forward-gate-index    the pointwise phase takes gate g ^ 1's partial sums (i <-> f, g <-> o):
                          results;
  - gate-grads-buffer     the backward GEMM reads the gate-gradient buffer the step is about to write
                          instead of the previous step's (still NaN at s = 1): results;
  - gru-n-gate-grad       GRU's grad_gh for the n gate without the factor r: results (grad_gh, and
                          grad_h0 through the recurrent GEMM);
  - final-step-lengths    h_n / c_n written at t = T - 1 regardless of lengths: results with ragged
                          lengths (h_n of shorter sequences never written), a pass without.
  (c-fragment-duplicate, partials-barrier and gate-grads-buffer are also run on the persistent path.)
and, specific to the persistent path (each passes on the per-step path, which has no grid barrier and
no slice):
  - grid-barrier-no-arrival  atomicAdd(counter, 0u): no CTA ever arrives, every barrier waits forever:
                          the emulator's deadlock finding (never a hang);
  - grid-barrier-early    the spin stops at target - 1 arrivals: the second-to-last CTA leaves the
                          barrier before the last has run the step and reads its h (NaN): results,
                          under the greedy order; under lock-step turns (schedule=rr) every CTA has
                          finished the step before anyone looks, and it passes (why greedy is the
                          default);
  - grid-barrier-double-arrival  atomicAdd(counter, 2u): the barrier opens at half the arrivals:
                          results and the counter check;
  - weight-slice-row      copy_weight_slice stores row r at row r ^ 1 of the slice (adjacent rows
                          swapped): results;
  - emulator-shared-swap  (in warp_emu.h) a co-resident block's shared memory not swapped back in
                          before it runs: it computes with another CTA's weight slice: results. This
                          shows that the per-CTA shared memory is what makes the real kernel pass.
and, in fp32-only builds (the SIMT GEMM; RNN_SIMT_MUTANTS):
  - simt-staging-barrier  the barrier before the partial stores, which alias other warps' staging,
                          deleted: the detector (waw). The fp32 results stay right: the emulator's
                          schedule lets every warp finish its K loop first;
  - simt-stage-syncwarp   the __syncwarp between a warp's staging stores and its reads deleted:
                          results (lanes read staging their neighbours have not written: NaN). This
                          also shows that the emulated __syncwarp is what makes the real kernel pass.

Cost: one harness build (~16 s on 2 cores), 11 fp16-only and 2 fp32-only mutant builds (~5 s each, 2
at a time), 0.01-0.5 s per case (persistent or not).
"""
from __future__ import annotations

import concurrent.futures
import pathlib
import re
import shutil

import pytest

from test_cuda_emulator import EMULATOR, ROOT, WRONG, build, build_mutants, check_planted_fault, run, run_clean

import cuda_tools as cuda

KERNELS = [ROOT / "csrc" / "cuda" / "rnn_kernels.cuh"]

pytestmark = pytest.mark.skipif(cuda.NVCC is None, reason="nvcc is not installed")


@pytest.fixture(scope="module")
def rnn_emulator(tmp_path_factory) -> pathlib.Path:
    return build(EMULATOR / "rnn_emulate.cpp", tmp_path_factory.mktemp("rnn") / "rnn_emulate")


# Hidden 16 k + r (ragged hidden tiles), odd hidden (unaligned loads), K = 70 (warp 0 takes two
# k-steps: the double-buffered operand loads), batches not a multiple of 8 and over one batch tile
# (32 rows at 4 tiles, 8 at 1), rnn.cu's tile choice and forced ones, T >= 3.
RNN_CASES = {
    "lstm-f16-b37-h70-two-batch-tiles": "cell=lstm dtype=f16 T=4 batch=37 hidden=70 input=24",
    "gru-f16-b5-h13-odd-one-tile": "cell=gru dtype=f16 T=3 batch=5 hidden=13 input=7",
    "lstm-f16-h21-reverse-ragged": "cell=lstm dtype=f16 T=4 batch=37 hidden=21 input=9 reverse=1 ragged=1",
    "gru-f16-b70-ragged-chunked": "cell=gru dtype=f16 T=4 batch=70 hidden=18 input=5 ragged=1 chunk=1",
    "gru-f16-forced-4-tiles-null-grads": "cell=gru dtype=f16 T=3 batch=3 hidden=24 tiles=4 null_grads=1",
    "lstm-bf16-1-tile-b13-chunked-ragged": "cell=lstm dtype=bf16 T=4 batch=13 hidden=19 tiles=1 chunk=1 ragged=1",
    "gru-bf16-b37-h21-reverse-ragged": "cell=gru dtype=bf16 T=4 batch=37 hidden=21 input=9 reverse=1 ragged=1",
    "lstm-bf16-inference-null-grads": "cell=lstm dtype=bf16 T=3 batch=6 hidden=30 training=0 null_grads=1",
    # the SIMT GEMM
    "lstm-f32-b37-h23-ragged": "cell=lstm dtype=f32 T=4 batch=37 hidden=23 ragged=1",
    "gru-f32-b9-reverse": "cell=gru dtype=f32 T=3 batch=9 hidden=17 reverse=1",
    "lstm-f64-b19-h18-reverse-ragged": "cell=lstm dtype=f64 T=3 batch=19 hidden=18 reverse=1 ragged=1",
    "gru-f64-b5-h5": "cell=gru dtype=f64 T=3 batch=5 hidden=5",
}


@pytest.mark.parametrize("case", RNN_CASES)
def test_rnn_step_kernels_emulated(rnn_emulator, case):
    run_clean(rnn_emulator, RNN_CASES[case])


# The persistent path: more than one CTA everywhere (so the grid barrier matters), along hidden
# (H > 16) and along batch (B over one batch tile); odd H; every dtype; reverse and ragged; both turn
# orders (greedy, the default, and schedule=rr).
RNN_PERSISTENT_CASES = {
    "lstm-f16-b37-h70-ten-ctas": "cell=lstm dtype=f16 T=4 batch=37 hidden=70 input=24",
    "gru-f16-b5-h21-odd-two-ctas": "cell=gru dtype=f16 T=3 batch=5 hidden=21 input=7",
    "lstm-f16-h21-reverse-ragged-rr": "cell=lstm dtype=f16 T=4 batch=37 hidden=21 input=9 reverse=1 ragged=1 schedule=rr",
    "gru-f16-forced-4-tiles-null-grads": "cell=gru dtype=f16 T=3 batch=3 hidden=24 tiles=4 null_grads=1",
    "lstm-bf16-1-tile-b13-ragged": "cell=lstm dtype=bf16 T=4 batch=13 hidden=19 tiles=1 ragged=1",
    "gru-bf16-b37-h21-reverse-ragged": "cell=gru dtype=bf16 T=4 batch=37 hidden=21 input=9 reverse=1 ragged=1",
    "lstm-bf16-inference-null-grads": "cell=lstm dtype=bf16 T=3 batch=6 hidden=30 training=0 null_grads=1",
    "lstm-f32-b37-h23-ragged": "cell=lstm dtype=f32 T=4 batch=37 hidden=23 ragged=1",
    "gru-f32-b9-h17-reverse-rr": "cell=gru dtype=f32 T=3 batch=9 hidden=17 reverse=1 schedule=rr",
    "lstm-f64-b19-h18-reverse-ragged": "cell=lstm dtype=f64 T=3 batch=19 hidden=18 reverse=1 ragged=1",
    "gru-f64-b5-h33": "cell=gru dtype=f64 T=3 batch=5 hidden=33",
}


@pytest.mark.parametrize("case", RNN_PERSISTENT_CASES)
def test_rnn_persistent_kernels_emulated(rnn_emulator, case):
    ran = run(rnn_emulator, f"{RNN_PERSISTENT_CASES[case]} path=persistent")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r" 0 of \d+ outputs wrong.*, 2 cooperative launches, [1-9]\d* spins, 0 findings", ran.stdout), \
        ran.stdout


def test_bad_case_is_refused(rnn_emulator):
    """A tile count rnn.cu does not instantiate (2 for fp16) is a bad case (exit 2), not a pass; so is
    a persistent case rnn.cu would not run persistent (several launches)."""
    assert run(rnn_emulator, "cell=lstm dtype=f16 tiles=2").returncode == 2
    assert run(rnn_emulator, "cell=lstm dtype=f16 batch=70 chunk=1 path=persistent").returncode == 2


# ---------------------------------------------------------------------------------------------
# Planted faults: (file, old, new, [(args, expected output or None for a pass)]). Each `old` occurs
# exactly once in rnn_kernels.cuh.

LSTM = "cell=lstm dtype=f16 T=3 batch=11 hidden=20"
GRU = "cell=gru dtype=f16 T=3 batch=11 hidden=21"
# Two CTAs along hidden (H = 20, 21), one batch tile of 32.
P_LSTM = f"{LSTM} path=persistent"
P_GRU = f"{GRU} path=persistent"
RNN_MUTANTS = {
    # lane 1 stores its accumulators to lane 0's columns: two writers of the same partials in one
    # barrier interval (the detector's waw), batch rows 2 and 3 of rows 0 and 8 never stored (NaN)
    "c-fragment-duplicate": ("rnn_kernels.cuh",
                             "DLK_HOST_DEVICE int tc_c_n(int lane, int e) { return 2 * (lane % 4) + e % 2; }",
                             "DLK_HOST_DEVICE int tc_c_n(int lane, int e) { return 2 * ((lane == 1 ? 0 : lane) % 4) + e % 2; }",
                             [(LSTM, r"waw: \d+"), (LSTM, WRONG), (GRU, WRONG), (P_LSTM, r"waw: \d+")]),
    "partials-barrier": ("rnn_kernels.cuh", "  __syncthreads();\n}\n\n// Runtime facts", "}\n\n// Runtime facts",
                         [(LSTM, WRONG), (GRU, WRONG), (P_GRU, WRONG)]),
    "forward-gate-index": ("rnn_kernels.cuh", "gh[g] = sum_partials<Tile>(partial, n, g * kHiddenTile + m);",
                           "gh[g] = sum_partials<Tile>(partial, n, (g ^ 1) * kHiddenTile + m);", [(LSTM, WRONG)]),
    "gate-grads-buffer": ("rnn_kernels.cuh", "GateGradRows<T>{ws.gate_grads_of(s + 1)",
                          "GateGradRows<T>{ws.gate_grads_of(s)", [(LSTM, WRONG), (GRU, WRONG), (P_LSTM, WRONG)]),
    "gru-n-gate-grad": ("rnn_kernels.cuh", "const Acc gh_grads[3] = {dr_pre, dz_pre, dn_pre * r};",
                        "const Acc gh_grads[3] = {dr_pre, dz_pre, dn_pre};", [(GRU, WRONG), (LSTM, None)]),
    "final-step-lengths": ("rnn_kernels.cuh",
                           "const bool final_step = p.reverse ? t == 0 : t == (p.lengths != nullptr ? p.lengths[b] - 1 : p.steps - 1);",
                           "const bool final_step = p.reverse ? t == 0 : t == p.steps - 1;",
                           [(f"{LSTM} ragged=1", WRONG), (f"{GRU} ragged=1", WRONG), (LSTM, None)]),
    # --- the persistent path's own (each passes on the per-step path)
    # no CTA ever arrives at the grid barrier: a deadlock the emulator reports
    "grid-barrier-no-arrival": ("rnn_kernels.cuh", "atomicAdd(counter, 1u);", "atomicAdd(counter, 0u);",
                                [(P_LSTM, r"deadlock: 2 of 2 co-resident blocks spin"), (P_GRU, r"deadlock"),
                                 (LSTM, None)]),
    # the barrier opens one arrival early: the second-to-last CTA reads the last one's unwritten h
    # (greedy turns); lock-step turns hide it (schedule=rr passes: why greedy is the default)
    "grid-barrier-early": ("rnn_kernels.cuh", "while (load_acquire_gpu(counter) < target)",
                           "while (load_acquire_gpu(counter) < target - 1)",
                           [(P_LSTM, WRONG), (P_GRU, WRONG), (f"{P_LSTM} schedule=rr", None), (LSTM, None)]),
    # each CTA arrives twice: the barrier opens at half the arrivals; the counter ends doubled
    "grid-barrier-double-arrival": ("rnn_kernels.cuh", "atomicAdd(counter, 1u);", "atomicAdd(counter, 2u);",
                                    [(P_LSTM, r"barrier counter"), (P_GRU, WRONG), (LSTM, None)]),
    # the weight slice's rows stored at the wrong offset (adjacent rows swapped)
    "weight-slice-row": ("rnn_kernels.cuh", "T* dst = slice + r * ld;", "T* dst = slice + (r ^ 1) * ld;",
                         [(P_LSTM, WRONG), (P_GRU, WRONG), (LSTM, None)]),
    # the emulator itself: co-resident blocks no longer get their own shared memory back (each runs on
    # whatever the previous block left: its weight slice, its partials)
    "emulator-shared-swap": ("warp_emu.h", "    if (!parked_.empty()) std::memcpy(smem_, parked_.data(), bytes_);\n",
                             "", [(P_LSTM, WRONG), (LSTM, None)]),
}


# The SIMT GEMM (fp32 / fp64) is not in the fp16-only mutant builds: these are built for fp32 only
# (-DDLK_EMULATE_F32_ONLY).
SIMT = "cell=lstm dtype=f32 T=3 batch=11 hidden=70"
RNN_SIMT_MUTANTS = {
    # the barrier between the K loop and the partial stores, which overwrite other warps' staging
    "simt-staging-barrier": ("rnn_kernels.cuh",
                             "    __syncthreads();  // every warp is done with its staging area before the partials overwrite it\n",
                             "", [(SIMT, r"waw: \d+")]),
    # the __syncwarp between a warp's staging stores and its reads of them
    "simt-stage-syncwarp": ("rnn_kernels.cuh",
                            "      simt_stage<Tile>(stage, w, batch_rows, k0, k_extent, lane);\n      __syncwarp();\n",
                            "      simt_stage<Tile>(stage, w, batch_rows, k0, k_extent, lane);\n", [(SIMT, WRONG)]),
}


def build_simt_mutant(directory: pathlib.Path, name: str, fault: tuple) -> pathlib.Path:
    """test_cuda_emulator.build_mutant for the fp32-only build of rnn_emulate.cpp."""
    target, old, new = fault[:3]
    directory.mkdir()
    for f in [*EMULATOR.iterdir(), *KERNELS]:
        if f.suffix in (".h", ".cpp", ".cuh"):
            shutil.copy(f, directory)
    path = directory / target
    text = path.read_text()
    assert text.count(old) == 1, f"{name}: the planted fault's anchor is not unique in {target}"
    path.write_text(text.replace(old, new))
    return build(directory / "rnn_emulate.cpp", directory / "rnn_emulate", "-DDLK_EMULATE_F32_ONLY")


@pytest.fixture(scope="module")
def rnn_mutants(tmp_path_factory) -> dict[str, pathlib.Path]:
    return build_mutants(tmp_path_factory.mktemp("rnn_mutants"), "rnn_emulate.cpp", KERNELS, RNN_MUTANTS)


@pytest.mark.parametrize("name", RNN_MUTANTS)
def test_rnn_planted_fault(rnn_mutants, name):
    check_planted_fault(rnn_mutants[name], name, RNN_MUTANTS[name][3])


@pytest.fixture(scope="module")
def rnn_simt_mutants(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("rnn_simt_mutants")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(build_simt_mutant, root / name, name, fault)
                   for name, fault in RNN_SIMT_MUTANTS.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", RNN_SIMT_MUTANTS)
def test_rnn_simt_planted_fault(rnn_simt_mutants, name):
    check_planted_fault(rnn_simt_mutants[name], name, RNN_SIMT_MUTANTS[name][3])
