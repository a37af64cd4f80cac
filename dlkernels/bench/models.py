"""Whole models (dlkernels.models) against their torch.nn twins: `python -m dlkernels.bench --ops models`.

Per model: inference at batch 1 ("fwd" only) and a training batch ("fwd" and "train": zero_grad, forward, loss,
backward, SGD-with-momentum step), in float32 and bfloat16 (the whole model cast), NCHW and channels_last for the
CNNs. Reference ("torch"): the impl="torch" twin, eager (cuDNN); further baseline "torch_compile":
torch.compile of the twin. Ours: the dlkernels model on each backend, with the twin's state_dict, eager and (GPU
rows of gpu_variants()) under torch.compile(mode="max-autotune") and mode="reduce-overhead" (CUDA graphs).

compute_dtype="float64" (the correctness matrix's reference) casts this case's parameters and inputs up.
Outputs are returned divided by their largest magnitude (fwd: the model's first output; train: every parameter's
gradient of the first step, concatenated), so the benchmark's max |ours - torch| column is a relative error.
Dropout runs with the same seed in every implementation on CPU (the correctness matrix); on a GPU the seed is not
reset between timed calls. The CPU correctness matrix (SMALL_CASES) runs the small configurations of the models
that Triton's interpreter finishes in seconds, in float32; tests/test_models.py covers every model.
"""
from __future__ import annotations

import torch

from dlkernels.bench import REFERENCE, Case
from dlkernels.models.registry import SPECS, outputs

FAMILY = "models"
DIRECTIONS = ("fwd", "train")
EXTRA_BASELINES = ("torch_compile",)
PRECISION_FLAGS = {"torch.backends.cudnn.allow_tf32": False, "torch.backends.cuda.matmul.allow_tf32": False}
BYTES_COUNTED = ("parameters read once and the input read once (fwd); parameters, gradients and momentum read and "
                 "written (train), activations not counted: a lower bound, not a roofline")

# Training batch per model (full size); batch 1 is the inference case.
TRAIN_BATCH = {"MnistCNN": 128, "CifarBNCNN": 128, "LeNet5": 128, "LeNet5-relu-28": 128, "AlexNet": 64, "vgg11": 32,
               "vgg11_bn": 32, "vgg16": 32, "vgg16_bn": 32, "GoogLeNet": 32, "resnet18": 64, "resnet34": 64,
               "resnet50": 64, "RowLSTM": 128, "RowGRU": 128, "CharLSTM": 32, "MLPGenerator": 128,
               "MLPDiscriminator": 128, "DCGAN64-G": 64, "DCGAN32-G": 64, "DCGAN64-D": 64, "DCGAN32-D": 64,
               "WGANGPCritic": 64, "TransformerLM": 20, "GPT": 8, "BERT": 32, "ViT": 32, "ConvDenoiser": 128,
               "UNet": 32}
# Rows of our models under torch.compile: row name -> (backend, compile mode).
COMPILED_VARIANTS = {f"{backend}_compile_{mode.replace('-', '_')}": (backend, mode)
                     for backend in ("cuda", "triton") for mode in ("max-autotune", "reduce-overhead")}
SMALL_MODELS = ["LeNet5", "AlexNet", "RowLSTM", "RowGRU", "CharLSTM", "MLPDiscriminator", "DCGAN32-G", "DCGAN32-D",
                "WGANGPCritic", "TransformerLM", "GPT", "BERT", "ViT", "ConvDenoiser"]


def _cases(size: str, names, dtypes, batches) -> list[Case]:
    cases = []
    for name in names:
        spec = SPECS[name]
        layouts = ("nchw", "channels_last") if spec.channels_last else ("nchw",)
        for batch, workload in batches(name):
            shape = tuple(spec.inputs(size, batch, torch.float32)[0].shape)
            for dtype in dtypes:
                for layout in layouts:
                    cases.append(Case(name, workload, shape, (("batch", batch), ("size", size)), dtype, layout))
    return cases


CASES = _cases("full", SPECS, ("float32", "bfloat16"),
               lambda name: [(1, "batch-1 inference"), (TRAIN_BATCH[name], "training batch")])
SMALL_CASES = _cases("small", SMALL_MODELS, ("float32",), lambda name: [(2, "training batch")])


def gpu_variants() -> tuple[str, ...]:
    """Our models compiled, for the backends this GPU has."""
    import dlkernels
    available = dlkernels.available_backends("cuda")
    return tuple(name for name, (backend, _) in COMPILED_VARIANTS.items() if backend in available)


def directions_for(case: Case) -> tuple[str, ...]:
    return ("fwd",) if case.kwargs["batch"] == 1 else DIRECTIONS


def summary_group(case: Case, direction: str) -> str:
    return f"{SPECS[case.op].family} {direction} {case.dtype}"


def ideal_bytes(case: Case, direction: str) -> int:
    spec = SPECS[case.op]
    with torch.device("meta"):
        parameters = sum(p.numel() for p in spec.make(case.kwargs["size"], impl="torch").parameters())
    elem = torch.empty(0, dtype=getattr(torch, case.dtype)).element_size()
    inputs = 1
    for n in case.shape:
        inputs *= n
    return elem * (parameters * (1 if direction == "fwd" else 6) + inputs)


def _normalized(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().float() if t.dtype != torch.float64 else t.detach()
    return t / t.abs().max().clamp_min(1e-30)


def build(case: Case, backend: str, direction: str, device, compute_dtype: str | None = None):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    spec, size, batch = SPECS[case.op], case.kwargs["size"], case.kwargs["batch"]
    dtype = getattr(torch, case.dtype)
    fmt = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    twin = spec.make(size, impl="torch")
    ours, compile_mode = COMPILED_VARIANTS.get(backend, (backend, None))
    if backend in (REFERENCE, "torch_compile"):
        model = twin
    else:
        model = spec.make(size, impl="dlkernels", backend=ours)
        model.load_state_dict(twin.state_dict())
    model = model.to(device=device, dtype=dtype, memory_format=fmt)
    inputs = spec.inputs(size, batch, dtype, device)
    if compute_dtype is not None:  # the matrix's reference: this case's parameters and inputs, cast
        dtype = getattr(torch, compute_dtype)
        model = model.to(dtype)
        inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    inputs = tuple(t.contiguous(memory_format=fmt) if t.dim() == 4 else t for t in inputs)
    run = (torch.compile(model) if backend == "torch_compile" else
           torch.compile(model, mode=compile_mode) if compile_mode is not None else model)
    on_cpu = torch.device(device).type == "cpu"

    def forward_once():
        if on_cpu:
            torch.manual_seed(1)  # the same dropout masks in every implementation
        return run(*inputs)

    if direction == "fwd":
        model.eval()

        def forward():
            with torch.no_grad():
                return _normalized(outputs(forward_once())[0])
        return forward

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    calls, probes = [0], []

    def loss_fn(result):
        """sum(out * r) over every output, r fixed random (drawn once, on the device)."""
        outs = outputs(result)
        if not probes:
            g = torch.Generator().manual_seed(1)
            probes.extend(torch.randn(o.shape, generator=g, dtype=torch.float64).to(device=o.device, dtype=o.dtype)
                          for o in outs)
        return sum((o * r).sum() for o, r in zip(outs, probes))

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(forward_once())
        loss.backward()
        calls[0] += 1
        first = calls[0] == 1
        grads = _normalized(torch.cat([p.grad.flatten().to(loss.dtype) for p in model.parameters()
                                       if p.grad is not None])) if first else None
        optimizer.step()
        return grads if first else loss.detach()
    return train_step
