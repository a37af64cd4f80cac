"""Compile, for real GPU targets, every kernel specialisation one op file's launchers produce.

Run by test_triton_compile.py as `python triton_compile_worker.py OP SHARD NUM_SHARDS`, in a process
without TRITON_INTERPRET: the interpreter never runs Triton's GPU compiler, so it misses failures
that only real compilation hits. No GPU is needed. Launches are intercepted and recorded instead of
run, so the specialisations are exactly those the launchers would ask Triton for, with Triton's
own argument specialisation (dtypes, divisibility by 16, ints equal to 1). Prints one JSON line per
(specialisation, target).
"""
import itertools
import json
import os
import sys

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, create_function_from_signature

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TARGETS = {"sm_90": GPUTarget("cuda", 90, 32), "sm_80": GPUTarget("cuda", 80, 32)}
# Specialisation does not depend on the architecture, so one backend binds the arguments for all.
BACKEND = make_backend(TARGETS["sm_90"])
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LAUNCHES = {}  # a key describing the specialisation -> (kernel, signature, constexprs, attrs, options)
_swept = set()


def _record(self, *args, grid, warmup, **kwargs):
    # The first half of JITFunction.run, up to where it would compile for the current device.
    kwargs["debug"] = kwargs.get("debug", self.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    binder = create_function_from_signature(self.signature, self.params, BACKEND)
    bound_args, specialization, options = binder(*args, **kwargs)
    _, signature, constexprs, attrs = self._pack_args(BACKEND, kwargs, bound_args, specialization, options)
    options = {k: v for k, v in kwargs.items() if k not in self.arg_names}
    LAUNCHES.setdefault(_describe(self, signature, constexprs, attrs, options),
                        (self, signature, constexprs, attrs, options))


def _describe(kernel, signature, constexprs, attrs, options):
    """E.g. "k(x_ptr: *fp16 divisibility=16, n: i32, BLOCK=512; num_warps=4, ...)"."""
    args = [f"{name}={constexprs[(i,)]}" if (i,) in constexprs else " ".join(
        [f"{name}: {kind}"] + [f"{attr.removeprefix('tt.')}={value}" for attr, value in attrs.get((i,), [])])
        for i, (name, kind) in enumerate(signature.items())]
    settings = [f"{k}={v}" for k, v in options.items() if k not in ("debug", "instrumentation_mode")]
    # Parts of tuple arguments, which the list above leaves out.
    nested = [f"{path}={value}" for path, value in [*constexprs.items(), *attrs.items()] if len(path) > 1 and value]
    return f"{kernel.__name__}({', '.join(args + nested)}; {', '.join(settings)})"


def _tune(self, *args, **kwargs):
    # Every config at a kernel's first launch, only the first config after that: each config
    # multiplies the compilations, and it is the launchers' flags that pick the code paths.
    configs = self.configs[:1] if self.fn in _swept else self.configs
    _swept.add(self.fn)
    for config in configs:
        self.fn.run(*args, **kwargs, **config.all_kwargs())


def _pool2d():
    from dlkernels.triton_kernels.pool2d import pool2d_backward, pool2d_forward

    def both(x, mode, channels_last):
        size = [(s + 2 * 1 - 3) // 2 + 1 for s in x.shape[2:]]  # 3x3 window, stride 2, padding 1
        out, idx = pool2d_forward(x, mode, (3, 3), (2, 2), (1, 1), (1, 1), size, True, None, channels_last)
        pool2d_backward(out, idx, mode, x.shape[2:], (3, 3), (2, 2), (1, 1), (1, 1), True, None, channels_last)

    for dtype in DTYPES:
        for channels_last in (True, False):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            for mode in (0, 1, 2):
                # 32 channels are divisible by 16 (vector loads in channels_last); fp32 also sees 3.
                for channels in (32, 3) if dtype == torch.float32 else (32,):
                    both(torch.empty(2, channels, 8, 8, dtype=dtype, memory_format=fmt), mode, channels_last)
                if dtype == torch.float32:  # 2**19 channels: a tile of slack passes 2**31, so INDEX_64
                    both(torch.empty(1, 2**19, 1, 1, dtype=dtype, memory_format=fmt), mode, channels_last)


def _batch_norm():
    from dlkernels.triton_kernels import batch_norm as bn

    def calls(x, channels_last, a=True, b=True, c=True, d=True):
        # Every kernel gets every combination of its flags when a, b, c, d do.
        stat = lambda on: torch.ones(x.shape[1], dtype=bn._stat_dtype(x.dtype)) if on else None
        mean, invstd = bn.batch_norm_stats(x, stat(a), stat(b), 0.1, 1e-5, channels_last)
        out = bn.batch_norm_apply(x, mean, invstd, stat(a), stat(b), x if c else None, d, channels_last)
        sums = bn.batch_norm_backward_reduce(x, out, x, mean, invstd, d, channels_last)
        bn.batch_norm_backward_apply(x, out, x, mean, invstd, stat(a), *sums, training=b, activation=d,
                                     want_grad_residual=c, channels_last=channels_last)

    for dtype in DTYPES:
        for channels_last in (True, False):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            # On a CPU device the split reductions aim at 8 programs, so this shape gets several
            # chunks (num_chunks not 1, as on a GPU) in channels_last and one chunk in NCHW.
            x = torch.empty(4, 32, 16, 16, dtype=dtype, memory_format=fmt)
            if dtype != torch.float32:  # every flag combination for fp32 only, to bound the count
                calls(x, channels_last)
                calls(x, channels_last, False, False, False, False)
                continue
            for flags in itertools.product((False, True), repeat=4):
                calls(x, channels_last, *flags)
            # C and S not divisible by 16, several chunks in NCHW; one value per channel (a count of 1
            # must not turn into a constexpr); then 2**18 channels for INDEX_64.
            for shape in ((2, 3, 127, 129), (1, 4, 1, 1), (2, 2**18, 1, 1)):
                calls(torch.empty(shape, dtype=dtype, memory_format=fmt), channels_last)


def _conv2d():
    from dlkernels.triton_kernels.conv2d import conv2d_backward_input, conv2d_backward_weight, conv2d_forward

    def calls(x, out_channels, kernel, stride, groups, channels_last, bias=True, residual=True, relu=True,
              tf32=False):
        # Forward, dgrad and wgrad of one convolution with padding 1.
        batch, channels, height, width = x.shape
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        size = [(s + 2 - kernel) // stride + 1 for s in (height, width)]
        weight = torch.empty(out_channels, channels // groups, kernel, kernel, dtype=x.dtype, memory_format=fmt)
        out = torch.empty(batch, out_channels, *size, dtype=x.dtype, memory_format=fmt)
        geometry = ((stride, stride), (1, 1), (1, 1), groups)  # stride, padding, dilation, groups
        conv2d_forward(x, weight, torch.empty(out_channels, dtype=x.dtype) if bias else None,
                       out if residual else None, *geometry, size, relu, channels_last, tf32)
        conv2d_backward_input(out, weight, (height, width), *geometry, channels_last, tf32)
        conv2d_backward_weight(out, x, (kernel, kernel), *geometry, channels_last, tf32)

    for dtype in DTYPES:
        for channels_last in (True, False):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = torch.empty(2, 32, 8, 8, dtype=dtype, memory_format=fmt)
            calls(x, 32, 3, 1, 1, channels_last)  # tap-major steps, every epilogue term
            calls(x, 32, 3, 2, 2, channels_last, False, False, False)  # strided (phased dgrad), grouped
            calls(x, 32, 3, 1, 32, channels_last)  # depthwise
            # Few channels per group: flattened (tap, channel) steps.
            calls(torch.empty(2, 3, 8, 8, dtype=dtype, memory_format=fmt), 16, 3, 2, 1, channels_last)
            # 1x1 with 8192 output pixels: the wgrad reduction is split (sum kernel), also depthwise.
            wide = torch.empty(2, 32, 64, 64, dtype=dtype, memory_format=fmt)
            calls(wide, 32, 1, 1, 1, channels_last, False, False, False)
            calls(wide, 32, 1, 1, 32, channels_last, False, False, False)
            if dtype != torch.float32:  # every flag combination, TF32 and odd sizes for fp32 only
                continue
            for flags in itertools.product((False, True), repeat=3):
                calls(x, 32, 3, 1, 1, channels_last, *flags)
                calls(x, 32, 3, 1, 32, channels_last, *flags)
            calls(x, 32, 3, 1, 1, channels_last, tf32=True)
            calls(torch.empty(2, 24, 7, 9, dtype=dtype, memory_format=fmt), 40, 3, 1, 1, channels_last)
            # 2**19 channels: a tile of slack passes 2**31, so INDEX_64 (GEMM and depthwise).
            huge = torch.empty(1, 2**19, 1, 1, dtype=dtype, memory_format=fmt)
            calls(huge, 16, 1, 1, 1, channels_last)
            calls(huge, 2**19, 1, 1, 2**19, channels_last)


def _conv2d_winograd():
    from dlkernels.triton_kernels.conv2d_winograd import conv2d_winograd, winograd_transform_weight

    def calls(x, out_channels, tile, channels_last, bias=True, residual=True, relu=True, tf32=False):
        # The weight transform and the forward of one 3x3 convolution with padding 1.
        batch, channels, height, width = x.shape
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.empty(out_channels, channels, 3, 3, dtype=x.dtype, memory_format=fmt)
        out = torch.empty(batch, out_channels, height, width, dtype=x.dtype, memory_format=fmt)
        transformed = winograd_transform_weight(weight, tile, channels_last)
        conv2d_winograd(x, transformed, torch.empty(out_channels, dtype=x.dtype) if bias else None,
                        out if residual else None, (1, 1), (height, width), tile, relu, channels_last, tf32)

    for dtype in DTYPES:
        for channels_last in (True, False):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = torch.empty(2, 32, 8, 8, dtype=dtype, memory_format=fmt)
            for tile in (2, 4):
                calls(x, 32, tile, channels_last)  # every epilogue term
                calls(x, 32, tile, channels_last, False, False, False)
                if dtype != torch.float32:  # every flag combination, TF32 and odd sizes for fp32 only
                    continue
                for flags in itertools.product((False, True), repeat=3):
                    calls(x, 32, tile, channels_last, *flags)
                calls(x, 32, tile, channels_last, tf32=True)
                calls(torch.empty(2, 24, 7, 9, dtype=dtype, memory_format=fmt), 40, tile, channels_last)
    # INDEX_64: a transformed weight of more than 2**31 elements (allocated lazily, never touched).
    for channels_last in (True, False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.empty(1, 1024, 2, 2, dtype=torch.float16, memory_format=fmt)
        huge = torch.empty(16, 2**31 // (16 * 1024) + 1, 1024, dtype=torch.float16)
        conv2d_winograd(x, huge, None, None, (1, 1), (2, 2), 2, False, channels_last, False)
        winograd_transform_weight(torch.empty(2**31 // (36 * 1024) + 1, 1024, 3, 3, dtype=torch.float16,
                                              memory_format=fmt), 4, channels_last)


def _attention():
    from dlkernels.triton_kernels import attention
    from dlkernels.triton_kernels.attention import attention_backward, attention_forward

    def calls(dtype, head_dim=64, heads=(4, 2), causal=False, bottom_right=True, bias=False, dropout_p=0.0,
              varlen=False, tf32=False):
        # Forward and backward of one problem: batch 2, 80 queries, 96 keys (packed: 2 sequences of each).
        batch, seqlen_q, seqlen_k = 2, 80, 96
        if varlen:
            q = torch.empty(batch * seqlen_q, heads[0], head_dim, dtype=dtype)
            k, v = (torch.empty(batch * seqlen_k, heads[1], head_dim, dtype=dtype) for _ in range(2))
            cu_seqlens = [torch.tensor([0, seqlen, 2 * seqlen], dtype=torch.int32) for seqlen in (seqlen_q, seqlen_k)]
        else:  # the (B, N, H, D) -> (B, H, N, D) view MultiheadAttention produces
            q = torch.empty(batch, seqlen_q, heads[0], head_dim, dtype=dtype).transpose(1, 2)
            k, v = (torch.empty(batch, seqlen_k, heads[1], head_dim, dtype=dtype).transpose(1, 2) for _ in range(2))
            cu_seqlens = [None, None]
        # A (Hq, Nk) bias broadcast over batch and queries: strides 0 as dlkernels passes it.
        bias = (torch.empty(1, heads[0], 1, seqlen_k, dtype=dtype).expand(batch, heads[0], seqlen_q, seqlen_k)
                if bias else None)
        seed = torch.tensor([-(2**62) + 12345]) if dropout_p > 0 else None  # the op's int64 seed tensor
        args = (bias, *cu_seqlens, seqlen_q, seqlen_k, head_dim**-0.5, causal, bottom_right, dropout_p, seed, tf32)
        out, lse = attention_forward(q, k, v, *args)
        attention_backward(out, q, k, v, out, lse, *args)

    for dtype in (torch.float16, torch.bfloat16, torch.float32):  # float64 is the CPU reference's only
        calls(dtype)  # dense, GQA
        calls(dtype, causal=True, bias=True, dropout_p=0.1)  # bottom-right causal band, every term
        calls(dtype, head_dim=96, heads=(2, 2), causal=True, bottom_right=False, dropout_p=0.6, varlen=True)
        if dtype != torch.float16:  # the other head dims and TF32 for one dtype each, to bound the count
            continue
        for head_dim in (32, 128, 256):
            calls(dtype, head_dim=head_dim, causal=True)
    calls(torch.float32, tf32=True)

    # The tensor-descriptor (TMA) forward, which the launcher takes only for CUDA tensors on Hopper,
    # so forced here: every config once more (descriptor loads pipeline differently), every dtype with
    # and without the masked terms, the other power-of-two head dims. It compiles for sm_80 as well,
    # where Triton turns descriptors back into pointer loads, but the launcher never picks it there.
    attention.FORCE_TMA = True
    _swept.discard(attention._attn_fwd_kernel.fn)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        calls(dtype)
        calls(dtype, causal=True, bias=True, dropout_p=0.1)
    for head_dim in (32, 128, 256):
        calls(torch.float16, head_dim=head_dim, causal=True)
    calls(torch.float32, tf32=True)
    attention.FORCE_TMA = None


def _rnn():
    from dlkernels.triton_kernels.rnn import rnn_layer_backward, rnn_layer_forward

    def calls(cell, dtype, batch, hidden, bias=True, lengths=True, reverse=True, training=True, grads=True):
        # Forward, then backward when training, of a two-step layer; every flag on by default.
        lstm = cell == "lstm"
        width = (4 if lstm else 3) * hidden
        state = torch.empty(batch, hidden, dtype=dtype)
        c0 = state if lstm else None
        lens = torch.ones(batch, dtype=torch.int32) if lengths else None
        h_all, c_all, _, _, saved = rnn_layer_forward(
            cell, torch.empty(2, batch, width, dtype=dtype), torch.empty(width, hidden, dtype=dtype),
            torch.empty(width, dtype=dtype) if bias and not lstm else None, state, c0, lens, reverse, training)
        if training:
            rnn_layer_backward(cell, torch.empty(2, batch, hidden, dtype=dtype) if grads else None,
                               state if grads else None, state if grads and lstm else None,
                               torch.empty(width, hidden, dtype=dtype), state, c0, h_all, c_all, saved, lens, reverse)

    for dtype in DTYPES:
        for cell in ("lstm", "gru"):
            calls(cell, dtype, 4, 32)
            calls(cell, dtype, 4, 32, False, False, False, True, False)
            if dtype != torch.float32:  # every flag combination and odd sizes for fp32 only
                continue
            for flags in itertools.product((False, True), repeat=5):
                calls(cell, dtype, 4, 32, *flags)
            calls(cell, dtype, 3, 24)  # sizes not divisible by 16
            calls(cell, dtype, 1, 1)  # batch and hidden of 1 become constexprs
    # INDEX_64: W_hh (4H, H) of more than 2**31 elements (allocated lazily, never touched).
    calls("lstm", torch.float16, 1, 23200)


EXERCISE = {"pool2d": _pool2d, "batch_norm": _batch_norm, "conv2d": _conv2d,
            "conv2d_winograd": _conv2d_winograd, "attention": _attention,
            "rnn": _rnn}


def main(op, shard, num_shards):
    JITFunction.run = _record
    Autotuner.run = _tune
    if op not in EXERCISE:
        if shard == 0:
            print(json.dumps({"error": f"no launcher calls for triton_kernels/{op}.py: add them to EXERCISE in "
                                       f"{os.path.basename(__file__)}"}))
        return
    EXERCISE[op]()
    for key in sorted(LAUNCHES)[shard::num_shards]:
        kernel, signature, constexprs, attrs, options = LAUNCHES[key]
        for arch, target in TARGETS.items():
            result = {"kernel": kernel.__name__, "spec": key, "arch": arch}
            try:
                triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options)
            except Exception as error:  # any compiler failure is what the test reports
                result["error"] = f"{type(error).__name__}: {str(error)[-2000:]}"
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
