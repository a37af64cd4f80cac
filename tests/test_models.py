"""dlkernels.models against their torch.nn twins (same state_dict), convert(), real learning, examples.

Tolerances. On backend "reference" (the C++ reference) both models run in float64 and every output, parameter gradient,
buffer and parameter after an optimizer step must agree to 1e-9 relative to the tensor's largest magnitude (exact
ops in float64 differ only in summation order, ~1e-15; deep BatchNorm stacks on batches of two amplify that by a
few orders), plus 1e-13 absolute for gradients that are zero in exact arithmetic (a conv bias that feeds a
BatchNorm). Optimizer: SGD with momentum and weight decay, linear in the gradients (Adam's first step,
lr * g / (|g| + eps), would turn that 1e-17 noise of a zero gradient into a +-lr difference).
On backend "triton" (Triton's CPU interpreter) the models run in float32, since the RNN and attention kernels have
no float64 Triton path, under the 2x rule of the op tests: our error against the float64 twin may be at most twice
the float32 twin's own error plus a floor of 1e-5 of the tensor's largest magnitude.

The Triton interpreter costs seconds per kernel launch on a 2-core CPU, so the Triton matrix runs the models whose
small configuration finishes in seconds (TRITON_MODELS, ~75 s together), marks five CNNs that take 30-100 s there
slow, and runs the largest CNNs (VGG-16 (+BN), GoogLeNet, ResNet-34/50, DCGAN 64) on the C++ reference only, their
layers being the same ops the Triton matrix and the op tests cover.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import dlkernels
from dlkernels import models as M
from dlkernels.models.registry import SPECS, loss_of, outputs

from helpers import HAS_CUDA

ROOT = Path(__file__).resolve().parents[1]
CPU_RTOL = 1e-9
CPU_ATOL = 1e-13  # for gradients that are zero in exact arithmetic (a conv bias feeding BatchNorm): ~1e-17 noise
TRITON_FLOOR = 1e-5
# Small configurations the Triton interpreter runs in seconds each (about 75 s together on 2 cores) ...
TRITON_MODELS = ["LeNet5", "LeNet5-relu-28", "AlexNet", "RowLSTM", "RowGRU", "CharLSTM", "MLPGenerator",
                 "MLPDiscriminator", "DCGAN32-G", "DCGAN32-D", "WGANGPCritic", "TransformerLM", "GPT", "BERT", "ViT",
                 "ConvDenoiser", "UNet"]
# ... and those that take 30-90 s each there (marked slow).
TRITON_SLOW_MODELS = ["MnistCNN", "CifarBNCNN", "vgg11", "vgg11_bn", "resnet18"]
needs_interpreter = pytest.mark.skipif(HAS_CUDA, reason="Triton's CPU interpreter is off when a GPU is present")


def _pair(spec, backend: str, dtype: torch.dtype):
    torch.manual_seed(0)
    twin = spec.make(impl="torch").to(dtype)
    ours = spec.make(impl="dlkernels", backend=backend).to(dtype)
    ours.load_state_dict(twin.state_dict())
    return twin, ours


def _run(model, inputs, seed: int = 1):
    torch.manual_seed(seed)  # the same dropout masks in both models
    return model(*inputs)


def _state(model) -> dict:
    """Parameters, their gradients and the floating buffers, by name."""
    state = {name: p.detach().clone() for name, p in model.named_parameters()}
    state.update({f"{name}.grad": p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    state.update({name: b.clone() for name, b in model.named_buffers() if b.is_floating_point()})
    return state


def _close_fp64(actual: dict, expected: dict, what: str) -> None:
    assert actual.keys() == expected.keys(), f"{what}: different tensors"
    for name, e in expected.items():
        a = actual[name]
        scale = e.abs().max().item() if e.numel() else 0.0
        error = (a - e).abs().max().item() if e.numel() else 0.0
        assert error <= CPU_RTOL * scale + CPU_ATOL, f"{what} {name}: max error {error:.3g} (scale {scale:.3g})"


def _close_2x(actual: dict, low: dict, exact: dict, what: str) -> None:
    """ours (float32) vs the float64 twin, against twice the float32 twin's own error."""
    assert actual.keys() == exact.keys(), f"{what}: different tensors"
    for name, e in exact.items():
        if not e.numel():
            continue
        scale = e.abs().max().item()
        ours = (actual[name].double() - e).abs().max().item()
        torch_error = (low[name].double() - e).abs().max().item()
        assert ours <= 2 * torch_error + TRITON_FLOOR * scale, \
            f"{what} {name}: error {ours:.3g} > 2 x torch's {torch_error:.3g} + floor (scale {scale:.3g})"


def _outputs(result) -> dict:
    return {f"output{i}": t.detach() for i, t in enumerate(outputs(result))}


def _forward_backward_step(model, inputs, steps: int = 2):
    """Outputs, gradients and buffers, then the parameters after `steps` SGD steps (momentum, weight decay)."""
    result = _run(model, inputs)
    loss_of(result).backward()
    first = {**_outputs(result), **_state(model)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    optimizer.step()
    for step in range(1, steps):
        optimizer.zero_grad()
        loss_of(_run(model, inputs, seed=1 + step), generator_seed=2 + step).backward()
        optimizer.step()
    stepped = {name: p.detach().clone() for name, p in model.named_parameters()}
    return first, stepped


@pytest.mark.parametrize("name", list(SPECS))
def test_matches_twin_cpu_float64(name):
    spec = SPECS[name]
    twin, ours = _pair(spec, "reference", torch.float64)
    inputs = spec.inputs(dtype=torch.float64)
    expected, expected_step = _forward_backward_step(twin, inputs)
    actual, actual_step = _forward_backward_step(ours, inputs)
    _close_fp64(actual, expected, f"{name} forward/backward")
    _close_fp64(actual_step, expected_step, f"{name} after two SGD steps")


@needs_interpreter
@pytest.mark.parametrize("name", TRITON_MODELS + [pytest.param(n, marks=pytest.mark.slow) for n in TRITON_SLOW_MODELS])
def test_matches_twin_triton(name):
    spec = SPECS[name]
    twin64, _ = _pair(spec, "reference", torch.float64)
    twin32, ours = _pair(spec, "triton", torch.float32)
    exact, exact_step = _forward_backward_step(twin64, spec.inputs(dtype=torch.float64), steps=1)
    low, low_step = _forward_backward_step(twin32, spec.inputs(dtype=torch.float32), steps=1)
    actual, actual_step = _forward_backward_step(ours, spec.inputs(dtype=torch.float32), steps=1)
    _close_2x(actual, low, exact, f"{name} forward/backward")
    _close_2x(actual_step, low_step, exact_step, f"{name} after one SGD step")


@pytest.mark.parametrize("name", ["MnistCNN", "CifarBNCNN", "vgg16_bn", "GoogLeNet", "resnet50", "RowLSTM",
                                  "DCGAN64-G", "DCGAN64-D", "TransformerLM", "ViT", "ConvDenoiser"])
def test_convert_twin_matches_model(name):
    """dlkernels.convert() of the torch twin computes what the dlkernels model computes."""
    spec = SPECS[name]
    twin, ours = _pair(spec, "reference", torch.float64)
    converted = dlkernels.convert(copy.deepcopy(twin), backend="reference")
    assert list(converted.state_dict()) == list(twin.state_dict())
    swapped = [m for m in converted.modules() if type(m).__module__.startswith("dlkernels.nn")]
    assert swapped, "convert() swapped nothing"
    inputs = spec.inputs(dtype=torch.float64)
    _close_fp64(_outputs(_run(converted, inputs)), _outputs(_run(ours, inputs)), f"convert({name})")


# The op families each dlkernels model must run (seen as our custom ops' nodes in the autograd graph).
_CONV, _MAX, _AVG, _ADAPT, _BN, _ATTN, _RNN = "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", \
    "batch_norm", "attention", ("rnn", "lstm", "gru")
EXPECTED_OPS = {
    "MnistCNN": [_CONV, _MAX], "CifarBNCNN": [_CONV, _BN, _MAX], "LeNet5": [_CONV, _AVG], "LeNet5-relu-28": [_CONV, _AVG],
    "AlexNet": [_CONV, _MAX, _ADAPT], **{n: [_CONV, _MAX, _ADAPT] for n in ("vgg11", "vgg16")},
    **{n: [_CONV, _BN, _MAX, _ADAPT] for n in ("vgg11_bn", "vgg16_bn", "GoogLeNet", "resnet18", "resnet34", "resnet50")},
    "RowLSTM": [_RNN], "RowGRU": [_RNN], "CharLSTM": [_RNN], "MLPGenerator": [], "MLPDiscriminator": [],
    "DCGAN64-G": ["conv_transpose2d", _BN], "DCGAN32-G": ["conv_transpose2d", _BN], "DCGAN64-D": [_CONV, _BN], "DCGAN32-D": [_CONV, _BN],
    "WGANGPCritic": [_CONV], "TransformerLM": [_ATTN], "GPT": [_ATTN], "BERT": [_ATTN], "ViT": [_CONV, _ATTN],
    "ConvDenoiser": [_CONV], "UNet": [_CONV, _ATTN]}


def _graph_ops(result) -> set[str]:
    """Names of the autograd nodes behind every output."""
    seen, names, stack = set(), set(), [t.grad_fn for t in outputs(result)]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__.lower())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name", list(SPECS))
def test_runs_our_ops(name):
    """The dlkernels model really runs our kernels (no silent torch fallback, e.g. an attention head dim the flash
    kernels lack) and the twin runs none."""
    spec = SPECS[name]
    twin, ours = _pair(spec, "reference", torch.float32)
    ours_ops = {n for n in _graph_ops(_run(ours, spec.inputs())) if "dlk" in n}
    assert not {n for n in _graph_ops(_run(twin, spec.inputs())) if "dlk" in n}
    for family in EXPECTED_OPS[name]:
        keys = family if isinstance(family, tuple) else (family,)
        assert any(f"dlk_{key}" in n for n in ours_ops for key in keys), f"{name}: no {family} op in {ours_ops}"
    assert bool(ours_ops) == bool(EXPECTED_OPS[name])


# torchvision's parameter counts and a sample of its state_dict keys (torchvision cannot be installed beside our
# torch here, so these are written from torchvision's architecture definitions; the counts are the documented ones).
TORCHVISION = {
    "resnet18": (M.resnet18, 11_689_512, 122, ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight",
                                                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                                                "layer4.1.bn2.num_batches_tracked", "fc.bias"]),
    "resnet34": (M.resnet34, 21_797_672, 218, ["layer3.5.conv2.weight", "layer4.2.bn2.bias", "fc.weight"]),
    "resnet50": (M.resnet50, 25_557_032, 320, ["layer1.0.conv3.weight", "layer1.0.bn3.running_mean",
                                                "layer1.0.downsample.1.weight", "layer3.5.bn2.weight",
                                                "layer4.2.bn3.num_batches_tracked", "fc.weight"]),
    "vgg11": (M.vgg11, 132_863_336, 22, ["features.0.weight", "features.18.bias", "classifier.0.weight",
                                          "classifier.3.weight", "classifier.6.bias"]),
    "vgg11_bn": (M.vgg11_bn, 132_868_840, 62, ["features.1.running_mean", "features.25.weight",
                                                "features.26.num_batches_tracked", "classifier.6.weight"]),
    "vgg16": (M.vgg16, 138_357_544, 32, ["features.2.weight", "features.28.bias", "classifier.6.weight"]),
    "vgg16_bn": (M.vgg16_bn, 138_365_992, 97, ["features.40.weight", "features.41.running_var",
                                                "classifier.0.bias"]),
    "alexnet": (M.AlexNet, 61_100_840, 16, ["features.0.weight", "features.3.weight", "features.10.bias",
                                             "classifier.1.weight", "classifier.6.bias"]),
    "googlenet": (M.googlenet, 13_004_888, 364, ["conv1.conv.weight", "conv1.bn.running_var",
                                                  "inception3a.branch2.1.conv.weight",
                                                  "inception5b.branch4.1.bn.num_batches_tracked",
                                                  "aux1.conv.conv.weight", "aux1.fc1.weight", "aux2.fc2.bias",
                                                  "fc.weight"]),
    "vit_b_16": (M.ViT, 86_567_656, None, ["class_token", "conv_proj.weight", "encoder.pos_embedding",
                                           "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
                                           "encoder.layers.encoder_layer_11.mlp.3.bias", "encoder.ln.weight",
                                           "heads.head.weight"]),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_layout(name):
    make, count, keys, sample = TORCHVISION[name]
    with torch.device("meta"):  # full size without allocating
        ours, twin = make(), make(impl="torch")
    assert list(ours.state_dict()) == list(twin.state_dict())
    assert sum(p.numel() for p in twin.parameters()) == count
    assert keys is None or len(twin.state_dict()) == keys
    assert set(sample) <= set(twin.state_dict())


def test_model_table_covers_every_model():
    rows = {spec.table_row for spec in SPECS.values()}
    assert rows == set(M.MODEL_TABLE)
    assert "| ResNet-18/34/50 |" in M.model_table_markdown()


def test_model_table_prints():
    result = subprocess.run([sys.executable, "-m", "dlkernels.models"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "| GoogLeNet |" in result.stdout, result.stderr


def test_bench_module_builds_cases():
    """dlkernels.bench.models: a correctness-matrix row (ours vs torch, relative error) and the full cases' list."""
    from dlkernels.bench import models as bench
    case = next(c for c in bench.SMALL_CASES if c.op == "LeNet5" and c.layout == "channels_last")
    for direction in ("fwd", "train"):
        exact = bench.build(case, "torch", direction, "cpu", compute_dtype="float64")()
        ours = bench.build(case, "reference", direction, "cpu")()
        assert (ours.double() - exact).abs().max() < 1e-5
    names = {c.op for c in bench.CASES}
    assert names == set(SPECS)
    assert {c.kwargs["batch"] for c in bench.CASES if c.op == "resnet50"} == {1, 64}
    assert bench.directions_for(next(c for c in bench.CASES if c.kwargs["batch"] == 1)) == ("fwd",)


def test_bench_compiles_our_models_in_both_modes(monkeypatch):
    """The GPU rows of our models under torch.compile: the dlkernels model (on the row's backend) goes to
    torch.compile with the row's mode (recorded here, not compiled: that needs the GPU run)."""
    from dlkernels.bench import models as bench
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append((model, kw)) or model)
    case = next(c for c in bench.SMALL_CASES if c.op == "LeNet5")
    assert set(bench.COMPILED_VARIANTS.values()) == {(b, m) for b in ("cuda", "triton")
                                                     for m in ("max-autotune", "reduce-overhead")}
    monkeypatch.setitem(bench.COMPILED_VARIANTS, "reference_compile_reduce_overhead", ("reference", "reduce-overhead"))
    out = bench.build(case, "reference_compile_reduce_overhead", "fwd", "cpu")()
    (model, options), = compiled
    assert options == {"mode": "reduce-overhead"}
    assert any(type(m).__module__.startswith("dlkernels.nn") for m in model.modules())  # ours, not the twin
    exact = bench.build(case, "torch", "fwd", "cpu", compute_dtype="float64")()
    assert (out.double() - exact).abs().max() < 1e-5


def test_impl_is_checked():
    with pytest.raises(ValueError, match="impl"):
        M.MnistCNN(impl="cudnn")


# ----------------------------------------------------------------------------- double backward (WGAN-GP)
def test_wgan_gp_double_backward():
    """The gradient penalty differentiates the backward of our conv2d (dlk::conv2d_backward has a derivative): the
    default double_backward='ours' and 'torch' both give the torch twin's gradients and SGD step."""
    spec = SPECS["WGANGPCritic"]
    twin, ours = _pair(spec, "reference", torch.float64)
    real, = spec.inputs(dtype=torch.float64)
    fake, = spec.inputs(dtype=torch.float64, seed=1)

    def critic_step(model, **double_backward):
        """Gradients of one critic loss, then the parameters after an SGD step on them."""
        torch.manual_seed(5)
        model.zero_grad()
        penalty = model.gradient_penalty(real, fake, **double_backward)
        M.wgan_gp_penalty_backward(model(fake).mean() - model(real).mean() + penalty)
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9).step()
        return grads, {n: p.detach().clone() for n, p in model.named_parameters()}

    expected_grads, expected_step = critic_step(twin, double_backward="torch")
    assert all(g.abs().max() > 0 for g in expected_grads.values())
    start = copy.deepcopy(ours.state_dict())
    for option in ({}, {"double_backward": "torch"}):
        ours.load_state_dict(start)
        grads, stepped = critic_step(ours, **option)
        _close_fp64(grads, expected_grads, f"WGAN-GP gradients {option or '(default: ours)'}")
        _close_fp64(stepped, expected_step, f"WGAN-GP SGD step {option or '(default: ours)'}")


def test_gan_discriminators_fuse_leaky_relu():
    """DCGAN's discriminator and the WGAN-GP critic run each LeakyReLU(0.2) fused into the conv or BN before it (an
    Identity in its place), with the twin's state_dict keys."""
    for name in ("DCGAN32-D", "WGANGPCritic"):
        twin, ours = _pair(SPECS[name], "reference", torch.float64)
        assert list(ours.state_dict()) == list(twin.state_dict())
        assert not [m for m in ours.modules() if isinstance(m, torch.nn.LeakyReLU)], name
        for fused, leaky in zip(ours.main, twin.main[1:]):
            if isinstance(leaky, torch.nn.LeakyReLU):
                assert (fused.activation, fused.negative_slope) == ("leaky_relu", 0.2), (name, fused)
        assert sum(isinstance(m, torch.nn.LeakyReLU) for m in twin.modules()) == \
            sum(getattr(m, "activation", None) == "leaky_relu" for m in ours.modules()) > 0


# ----------------------------------------------------------------------------- real learning
def _digits(size: int = 28):
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    y = torch.tensor(data.target)
    permutation = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[permutation], y[permutation]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])  # 397 held out


def _train_classifier(model, steps: int, batch: int, lr: float, size: int = 28) -> float:
    (x, y), (x_test, y_test) = _digits(size)
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(y), (batch,), generator=g)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(x_test[i:i + 200]).argmax(1) for i in range(0, len(y_test), 200)])
    return (predictions == y_test).float().mean().item()


@pytest.mark.slow
def test_mnist_cnn_learns_digits():
    torch.set_num_threads(2)
    accuracy = _train_classifier(M.MnistCNN(backend="reference"), steps=100, batch=16, lr=1e-3)
    assert accuracy >= 0.90, accuracy


def test_lenet5_learns_digits():
    accuracy = _train_classifier(M.LeNet5(image_size=28, backend="reference"), steps=300, batch=32, lr=3e-3)
    assert accuracy >= 0.90, accuracy


def test_row_lstm_learns_digits():
    accuracy = _train_classifier(M.RowLSTM(backend="reference"), steps=300, batch=32, lr=3e-3)
    assert accuracy >= 0.90, accuracy


def test_mlp_gan_losses_move():
    """Discriminator loss falls below log(4) (it tells real from fake), the generator's loss responds."""
    (x, _), _ = _digits()
    g_model, d_model = M.MLPGenerator(backend="reference"), M.MLPDiscriminator(backend="reference")
    opt_g = torch.optim.Adam(g_model.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_model.parameters(), 2e-4, betas=(0.5, 0.999))
    d_losses, g_losses = [], []
    for step in range(60):
        real = x[torch.randint(0, len(x), (32,))]
        fake = g_model(torch.randn(32, 100))
        d_loss = F.binary_cross_entropy(d_model(real), torch.ones(32, 1)) + \
            F.binary_cross_entropy(d_model(fake.detach()), torch.zeros(32, 1))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy(d_model(fake), torch.ones(32, 1))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        d_losses.append(d_loss.item())
        g_losses.append(g_loss.item())
    assert sum(d_losses[-10:]) / 10 < 2 * 0.6931 - 0.1  # below chance (log 4)
    assert sum(g_losses[-10:]) / 10 > sum(g_losses[:5]) / 5  # the generator's job got harder


def test_conv_denoiser_loss_falls():
    (x, _), _ = _digits(12)
    model = M.DDPM(M.ConvDenoiser(d=16, backend="reference"))
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    losses = []
    for _ in range(80):
        loss = model.loss(x[torch.randint(0, len(x), (32,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_ddpm_unet_loss_and_sampling():
    spec = SPECS["UNet"]
    twin, ours = _pair(spec, "reference", torch.float64)
    twin_ddpm, ours_ddpm = M.DDPM(twin).double(), M.DDPM(ours).double()
    assert list(ours_ddpm.state_dict()) == list(twin_ddpm.state_dict())
    x0, _ = spec.inputs(dtype=torch.float64)
    t = torch.tensor([3, 700])
    noise = torch.randn_like(x0)
    assert torch.allclose(ours_ddpm.loss(x0, t, noise), twin_ddpm.loss(x0, t, noise), rtol=1e-10)
    samples = [m.sample((2, 1, 8, 8), steps=3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
               for m in (ours_ddpm, twin_ddpm)]
    torch.testing.assert_close(samples[0], samples[1], rtol=1e-9, atol=1e-12)
    assert torch.isfinite(samples[0]).all()


# ----------------------------------------------------------------------------- examples
EXAMPLES = [("train_cnn", "MnistCNN"), ("train_rnn", "RowLSTM"), ("train_rnn", "CharLSTM"), ("train_gan", "mlp"),
            ("train_gan", "wgan-gp"), ("train_transformer", "gpt"), ("train_transformer", "bert"),
            ("train_diffusion", "unet"), ("train_ddp", "MnistCNN")]


def test_every_example_is_tested():
    assert {p.stem for p in (ROOT / "examples").glob("train_*.py")} == {script for script, _ in EXAMPLES}


@pytest.mark.parametrize("script,model", EXAMPLES, ids=[f"{s}-{m}" for s, m in EXAMPLES])
def test_example_runs(script, model):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, str(ROOT / "examples" / f"{script}.py"), "--steps", "2", "--backend", "reference",
               "--model", model]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step" in result.stdout
