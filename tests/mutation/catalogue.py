"""The mutation catalogue: realistic kernel bugs, planted one at a time by tests/mutation/run.py.

Each mutant replaces one exact piece of source (which must occur exactly once in its file, so a
drifted source fails loudly instead of mutating the wrong line) in the C++ reference (csrc/), a
Triton kernel (triton_kernels/) or the Python op layer (dlkernels/ops/, dlkernels/_native/).
They are the bugs kernel engineers make: off-by-one bounds, a dropped term in a backward,
swapped gates, an argument ignored along one axis or on one backend, a wrong launch-grid axis, a
skipped online-softmax rescale, wrong strides, lost NaN propagation. `issue` names the survivor
class of issue #17's seeded-bug audit a mutant reproduces (the seven bugs that got through).

tests/test_mutation_catalogue.py checks every entry against the current source in CI.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("pool2d", "conv2d", "batch_norm", "attention", "rnn")

# Tests run against each family's mutants, in this order (the targeted case tests first, so most
# mutants die within seconds under -x). Files that do not exist yet are skipped.
FAMILY_TESTS = {family: (f"tests/test_cases_{family}.py", f"tests/test_{family}.py") for family in FAMILIES}


@dataclass(frozen=True)
class Mutant:
    id: str
    family: str
    file: str  # relative to the repository root
    search: str  # must occur exactly once in `file`
    replace: str
    description: str  # the bug class, one line
    issue: str = ""  # the issue #17 survivor class it reproduces, if any

    @property
    def native(self) -> bool:
        """Whether the mutant is compiled into libdlk_cpu.so (the reference library needs a rebuild)."""
        return self.file.startswith("csrc/")

    def apply(self, text: str) -> str:
        """`text` with the mutation applied; ValueError unless the search string occurs exactly once."""
        count = text.count(self.search)
        if count != 1:
            raise ValueError(f"mutant {self.id}: search string occurs {count} times in {self.file}, expected once "
                             "(the source drifted: update the catalogue)")
        mutated = text.replace(self.search, self.replace)
        if mutated == text:
            raise ValueError(f"mutant {self.id}: the replacement leaves {self.file} unchanged")
        return mutated


MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------------------------ pool2d
    Mutant("pool2d-capi-dilation-w", "pool2d", "csrc/capi/pool2d_params.h",
           "p.dilation_h = int(dilation_h); p.dilation_w = int(dilation_w);",
           "p.dilation_h = int(dilation_h); p.dilation_w = int(dilation_h);",
           "ignored argument: the C ABI copies dilation_h into dilation_w (max pooling dilates W by H's factor)",
           issue="one axis stands for both: dilation along W ignored (pooling)"),
    Mutant("pool2d-triton-w-step", "pool2d", "triton_kernels/pool2d.py",
           "        w_step = dilation_w\n",
           "        w_step = dilation_h\n",
           "copy-paste: the Triton max-pool forward steps along W by dilation_h"),
    Mutant("pool2d-triton-ceil-divisor", "pool2d", "triton_kernels/pool2d.py",
           "    end = tl.minimum(begin + kernel, size + pad)\n",
           "    end = begin + kernel\n",
           "wrong count_include_pad divisor in ceil_mode tails: the window is not clipped at the right padding",
           issue="argument at its default: ceil_mode window past the right padding with count_include_pad=True"),
    Mutant("pool2d-cpu-nan", "pool2d", "csrc/cpu/pool2d.cpp",
           "if (v > best || is_nan(v)) {",
           "if (v > best) {",
           "missing NaN propagation: the C++ max pool skips NaN taps"),
    Mutant("pool2d-triton-channels-last-stride", "pool2d", "triton_kernels/pool2d.py",
           "        return ((outer * size_h + h) * size_w + w) * channels\n",
           "        return ((outer * size_w + h) * size_h + w) * channels\n",
           "wrong channels_last stride: the NHWC pixel offset swaps the H and W extents"),
    Mutant("pool2d-triton-adaptive-end", "pool2d", "triton_kernels/pool2d.py",
           "    end = ((o + 1) * size + out - 1) // out\n    return begin, end\n",
           "    end = ((o + 1) * size) // out\n    return begin, end\n",
           "off-by-one bound: the adaptive window end rounds down instead of up (inputs not divisible by outputs)"),
    Mutant("pool2d-native-padding-order", "pool2d", "dlkernels/_native/pool2d.py",
           "stride[0], stride[1], padding[0], padding[1], dilation[0]",
           "stride[0], stride[1], padding[1], padding[0], dilation[0]",
           "H/W mix-up: the ctypes layer passes (pad_w, pad_h) to the C ABI"),
    Mutant("pool2d-ops-ceil-rule", "pool2d", "dlkernels/ops/pool2d.py",
           "if ceil_mode and (out - 1) * stride >= size + pad:",
           "if ceil_mode and (out - 1) * stride > size + pad:",
           "off-by-one bound: ATen's ceil_mode rule keeps a last window that starts in the right padding"),

    # ------------------------------------------------------------------------------------ conv2d
    Mutant("conv2d-native-dilation-w", "conv2d", "dlkernels/_native/conv2d.py",
           "padding[0], padding[1], dilation[0], dilation[1], groups, channels_last,",
           "padding[0], padding[1], dilation[0], dilation[0], groups, channels_last,",
           "ignored argument: the ctypes layer passes dilation_h for both axes to the C++ reference",
           issue="one axis stands for both: dilation along W ignored (conv)"),
    Mutant("conv2d-triton-fwd-dilation-w", "conv2d", "triton_kernels/conv2d.py",
           "a = _gather(input_ptr, a_base, top, left, pix_mask, jr, js, c, c_mask, dilation_h, dilation_w,",
           "a = _gather(input_ptr, a_base, top, left, pix_mask, jr, js, c, c_mask, dilation_h, dilation_h,",
           "copy-paste: the Triton forward gathers W taps with dilation_h"),
    Mutant("conv2d-cpu-dgrad-dilation-w", "conv2d", "csrc/cpu/conv2d.cpp",
           "const int64_t tw = iw + p.pad_w - int64_t(s) * p.dilation_w;",
           "const int64_t tw = iw + p.pad_w - int64_t(s);",
           "ignored argument: the C++ data gradient drops dilation along W"),
    Mutant("conv2d-cpu-group-channel", "conv2d", "csrc/cpu/conv2d.cpp",
           "const int64_t first_channel = (k / group_out) * group_in;",
           "const int64_t first_channel = (k / group_in) * group_in;",
           "wrong group index: the C++ forward divides the filter index by the input group size (hidden when C == K)"),
    Mutant("conv2d-triton-krsc-stride", "conv2d", "triton_kernels/conv2d.py",
           "        return ((k * kernel_h + r) * kernel_w + s) * group_channels + c\n",
           "        return ((k * kernel_w + r) * kernel_h + s) * group_channels + c\n",
           "wrong channels_last stride: KRSC weight offsets swap the kernel extents (hidden by square kernels)"),
    Mutant("conv2d-triton-split-sum", "conv2d", "triton_kernels/conv2d.py",
           "    for _ in range(1, num_splits):\n",
           "    for _ in range(1, num_splits - 1):\n",
           "off-by-one bound: the split weight-gradient sum drops the last partial"),
    Mutant("conv2d-cpu-relu-nan", "conv2d", "csrc/include/dlk/activation.h",
           "  return y != y ? y : Acc(0);\n",
           "  return Acc(0);\n",
           "missing NaN propagation: the C++ fused ReLU epilogue turns NaN into 0"),
    Mutant("conv2d-ops-relu-grad", "conv2d", "dlkernels/ops/conv2d.py",
           "grad_output = grad_output.masked_fill(output <= 0, 0)",
           "grad_output = grad_output.masked_fill(output < 0, 0)",
           "off-by-one bound: the ReLU backward masks output < 0, so clamped (== 0) units pass gradient"),
    Mutant("conv2d-ops-same-padding", "conv2d", "dlkernels/ops/conv2d.py",
           "begin = tuple(t // 2 for t in total)",
           "begin = tuple(t - t // 2 for t in total)",
           "padding='same' puts the odd extra row/column first instead of last (even kernels only)"),
    Mutant("conv2d-ops-winograd-flip", "conv2d", "dlkernels/ops/conv2d.py",
           "weight.flip(2, 3).transpose(0, 1)",
           "weight.flip(2).transpose(0, 1)",
           "one axis stands for both: the Winograd data gradient flips the weight along H only"),

    # -------------------------------------------------------------------------------- batch_norm
    Mutant("batch_norm-triton-eps", "batch_norm", "triton_kernels/batch_norm.py",
           "eps = (tl.zeros([BLOCK_C], ACC_DTYPE) + eps).to(ACC_DTYPE)",
           "eps = (tl.zeros([BLOCK_C], ACC_DTYPE) + 1e-5).to(ACC_DTYPE)",
           "ignored argument: the Triton statistics kernel hard-codes eps = 1e-5",
           issue="argument at its default on some backends: eps hard-coded in the Triton statistics"),
    Mutant("batch_norm-triton-momentum", "batch_norm", "triton_kernels/batch_norm.py",
           "(1.0 - momentum) * running + momentum * mean, mask=ch_mask)",
           "momentum * running + (1.0 - momentum) * mean, mask=ch_mask)",
           "momentum applied to the wrong term of the running-mean update (Triton)"),
    Mutant("batch_norm-triton-welford-merge", "batch_norm", "triton_kernels/batch_norm.py",
           "m2_a + m2_b + delta * delta * count_a * b_share, count",
           "m2_a + m2_b, count",
           "dropped term: the Welford merge of split partials loses the between-chunk variance"),
    Mutant("batch_norm-triton-relu-grad-nan", "batch_norm", "triton_kernels/_activation.py",
           "    relu = tl.where(output != output, grad, 0.0)\n",
           "    relu = tl.zeros_like(grad)\n",
           "missing NaN propagation: the Triton ReLU backward blocks the gradient where the output is NaN"),
    Mutant("batch_norm-cpu-bessel", "batch_norm", "csrc/include/dlk/batch_norm.h",
           "biased_var * Acc(count) / Acc(count - 1)",
           "biased_var",
           "dropped term: the C++ running variance misses Bessel's correction (biased variance stored)"),
    Mutant("batch_norm-cpu-grad-mean-dy", "batch_norm", "csrc/cpu/batch_norm.cpp",
           "scale * (g - mean_dy - xhat * mean_dy_xhat)",
           "scale * (g - xhat * mean_dy_xhat)",
           "dropped term in a backward: the C++ input gradient misses -mean(dy)"),
    Mutant("batch_norm-ops-eval-eps", "batch_norm", "dlkernels/ops/batch_norm.py",
           "invstd = torch.rsqrt(running_var.detach().to(stat_dtype) + eps)",
           "invstd = torch.rsqrt(running_var.detach().to(stat_dtype) + 1e-5)",
           "ignored argument: eval mode hard-codes eps = 1e-5 (every backend of ours)"),

    # --------------------------------------------------------------------------------- attention
    Mutant("attention-cpu-skip-rescale", "attention", "csrc/cpu/attention.cpp",
           "      for (int d = 0; d < dim; ++d) out_row[d] *= correction;\n      row_sum[r] *= correction;\n",
           "",
           "skipped online-softmax rescale: the C++ reference never rescales earlier 64-key tiles",
           issue="no case crosses a tile boundary on CPU: C++ online-softmax rescale skipped"),
    Mutant("attention-ops-varlen-max-q", "attention", "dlkernels/ops/attention.py",
           'max_seqlen_q = _max_seqlen(op, "max_seqlen_q", max_seqlen_q, cu_seqlens_q)',
           'max_seqlen_q = _max_seqlen(op, "max_seqlen_q", max_seqlen_q, cu_seqlens_k)',
           "varlen max length taken from the wrong side: max_seqlen_q read from cu_seqlens_k",
           issue="varlen with equal maxima: the query max length taken from the key side"),
    Mutant("attention-triton-skip-rescale", "attention", "triton_kernels/attention.py",
           "        acc = acc * alpha[:, None]\n",
           "",
           "skipped online-softmax rescale: the Triton forward never rescales the accumulator"),
    Mutant("attention-triton-causal-shift", "attention", "triton_kernels/attention.py",
           "        return len_k - len_q\n",
           "        return len_q - len_k\n",
           "sign error: the bottom-right causal shift is len_q - len_k (hidden when len_q == len_k)"),
    Mutant("attention-cpu-dk-delta", "attention", "csrc/cpu/attention.cpp",
           "const Acc grad_score = prob * (grad_prob * factor - deltas[stat]);             // dS_ij",
           "const Acc grad_score = prob * grad_prob * factor;             // dS_ij",
           "dropped term in a backward: the C++ dK misses the softmax's -D_i term"),
    Mutant("attention-cpu-gqa-head", "attention", "csrc/cpu/attention.cpp",
           "  const int kv_head = h / (p.heads_q / p.heads_kv);\n  const Dropout<Acc> dropout(p);\n\n"
           "  std::vector<Acc> q(int64_t(rows) * dim), k(",
           "  const int kv_head = h % p.heads_kv;\n  const Dropout<Acc> dropout(p);\n\n"
           "  std::vector<Acc> q(int64_t(rows) * dim), k(",
           "wrong GQA head map: the C++ forward interleaves query heads over kv heads instead of grouping them"),
    Mutant("attention-triton-dkdv-dropout-scale", "attention", "triton_kernels/attention.py",
           "            dp_t = tl.where(keep, dp_t * dropout_scale, 0.0)\n",
           "            dp_t = tl.where(keep, dp_t, 0.0)\n",
           "dropped term in a backward: the Triton dK kernel forgets the dropout scale on dP"),

    # --------------------------------------------------------------------------------------- rnn
    Mutant("rnn-triton-grid-axes", "rnn", "triton_kernels/rnn.py",
           'return lambda meta: (triton.cdiv(hidden, meta["BLOCK_H"]), triton.cdiv(batch, meta["BLOCK_B"]))',
           'return lambda meta: (triton.cdiv(batch, meta["BLOCK_B"]), triton.cdiv(hidden, meta["BLOCK_H"]))',
           "wrong launch-grid axis: the Triton step kernels' grid puts batch tiles on the hidden axis",
           issue="no case crosses a tile boundary on CPU: Triton RNN launch-grid axes swapped"),
    Mutant("rnn-cpu-lstm-gate-swap", "rnn", "csrc/cpu/rnn.cpp",
           "const Acc i = sigmoid(to_acc(xp[j]) + gh[0]);\n        const Acc f = sigmoid(to_acc(xp[H + j]) + gh[1]);",
           "const Acc i = sigmoid(to_acc(xp[H + j]) + gh[1]);\n        const Acc f = sigmoid(to_acc(xp[j]) + gh[0]);",
           "swapped gates: the C++ LSTM reads the input and forget gates in (f, i) order"),
    Mutant("rnn-cpu-gru-bias-outside-r", "rnn", "csrc/cpu/rnn.cpp",
           "const Acc n = std::tanh(to_acc(xp[2 * H + j]) + r * hn);",
           "const Acc n = std::tanh(to_acc(xp[2 * H + j]) + r * gh[2] + b_hh[2 * H + j]);",
           "GRU b_hn outside the reset gate (the cuDNN-vs-paper variant): wrong whenever b_hh != 0"),
    Mutant("rnn-cpu-lstm-dc-carry", "rnn", "csrc/cpu/rnn.cpp",
           "const Acc dc_t = dc[bj] + dh_t * o * (Acc(1) - tanh_c * tanh_c);",
           "const Acc dc_t = dh_t * o * (Acc(1) - tanh_c * tanh_c);",
           "dropped term in a backward: the C++ LSTM BPTT loses the cell-state gradient carried from t + 1"),
    Mutant("rnn-triton-gru-z-convention", "rnn", "triton_kernels/rnn.py",
           "h = (1.0 - gate_z) * gate_n + gate_z * h_prev",
           "h = gate_z * gate_n + (1.0 - gate_z) * h_prev",
           "swapped gates: the Triton GRU update uses the paper's z convention instead of torch's"),
    Mutant("rnn-triton-lengths-bound", "rnn", "triton_kernels/rnn.py",
           "    valid = time < length\n",
           "    valid = time <= length\n",
           "off-by-one bound: the Triton step kernels treat step t == length as valid"),
    Mutant("rnn-ops-reverse-start", "rnn", "dlkernels/ops/rnn.py",
           "starts = (steps + 1 >= lengths.unsqueeze(0)).unsqueeze(2)",
           "starts = (steps >= lengths.unsqueeze(0)).unsqueeze(2)",
           "off-by-one bound: grad_w_hh of a reverse layer with lengths takes h_{t-1} from the wrong step"),
)


# Why each mutant that the last full run did not kill got through, and the case that would kill it
# (the README's table). Written after reading the run, keyed by mutant id.
SURVIVOR_NOTES: dict[str, str] = {
    "rnn-triton-grid-axes": "tests/test_rnn.py keeps hidden and batch <= 16, one 16x16 tile of the interpreter "
                            "config, so the swapped grid still covers it; needs a Triton case with hidden > 16 != "
                            "batch tiles (tests/test_cases_rnn.py was not committed at the run)",
    "batch_norm-triton-relu-grad-nan": "not run: triton_kernels/_activation.py was not yet a tracked file",
}


def by_id(mutant_id: str) -> Mutant:
    for mutant in MUTANTS:
        if mutant.id == mutant_id:
            return mutant
    raise KeyError(f"no mutant {mutant_id!r}; known: {', '.join(m.id for m in MUTANTS)}")


def select(family: str | None = None, ids: list[str] | None = None) -> list[Mutant]:
    """The mutants of one family and/or with the given ids (all of them when neither is given)."""
    if ids:
        chosen = [by_id(i) for i in ids]
    else:
        chosen = list(MUTANTS)
    if family is not None:
        if family not in FAMILIES:
            raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        chosen = [m for m in chosen if m.family == family]
    return chosen
