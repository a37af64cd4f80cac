"""Each model's small configuration (tests, CPU correctness matrix), full configuration (GPU benchmark) and inputs.

SPECS[name].make(size, impl=..., backend=...) builds the model; SPECS[name].inputs(size, batch, dtype, device)
returns the positional inputs of forward() (floating inputs in `dtype`). size is "small" (seconds on a CPU, the
Triton interpreter included unless `slow_interpreter`) or "full" (the issue's sizes, for a GPU).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from dlkernels import models as M


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    family: str                    # cnn, rnn, gan, transformer, diffusion
    table_row: str                 # key of MODEL_TABLE
    builders: dict                 # size -> callable(impl=..., backend=...) -> nn.Module
    input_fn: Callable             # (size, batch, dtype, device, generator) -> tuple of inputs
    slow_interpreter: bool = False  # the small config still takes long in Triton's interpreter
    channels_last: bool = False    # a CNN whose image input can be channels_last

    def make(self, size: str = "small", **kwargs):
        return self.builders[size](**kwargs)

    def inputs(self, size: str = "small", batch: int = 2, dtype=torch.float32, device="cpu", seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        return tuple(t.to(device) for t in self.input_fn(size, batch, dtype, generator))


def _image(channels: int, small: int, full: int):
    def make(size, batch, dtype, g):
        side = small if size == "small" else full
        return (torch.randn(batch, channels, side, side, generator=g, dtype=torch.float64).to(dtype),)
    return make


def _noise(dim: int, image: bool = False):
    def make(size, batch, dtype, g):
        shape = (batch, dim, 1, 1) if image else (batch, dim)
        return (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype),)
    return make


def _tokens(vocab_small: int, vocab_full: int, length_small: int, length_full: int, seq_first: bool):
    def make(size, batch, dtype, g):
        vocab, length = (vocab_small, length_small) if size == "small" else (vocab_full, length_full)
        shape = (length, batch) if seq_first else (batch, length)
        return (torch.randint(0, vocab, shape, generator=g),)
    return make


def _bert_inputs(size, batch, dtype, g):
    vocab, length = (50, 8) if size == "small" else (30522, 128)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids, mask


def _image_and_t(channels: int, small: int, full: int):
    def make(size, batch, dtype, g):
        side = small if size == "small" else full
        x = torch.randn(batch, channels, side, side, generator=g, dtype=torch.float64).to(dtype)
        return x, torch.randint(0, 1000, (batch,), generator=g)
    return make


def _spec(name, family, row, small, full, inputs, **flags):
    return Spec(name, family, row, {"small": small, "full": full}, inputs, **flags)


_cnn = dict(channels_last=True)
SPECS: dict[str, Spec] = {s.name: s for s in [
    _spec("MnistCNN", "cnn", "MnistCNN", lambda **k: M.MnistCNN(**k), lambda **k: M.MnistCNN(**k),
          _image(1, 28, 28), **_cnn),
    _spec("CifarBNCNN", "cnn", "CifarBNCNN", lambda **k: M.CifarBNCNN(widths=(8, 16, 32), hidden=64, **k),
          lambda **k: M.CifarBNCNN(**k), _image(3, 32, 32), **_cnn),
    _spec("LeNet5", "cnn", "LeNet5", lambda **k: M.LeNet5(**k), lambda **k: M.LeNet5(**k), _image(1, 32, 32), **_cnn),
    _spec("LeNet5-relu-28", "cnn", "LeNet5", lambda **k: M.LeNet5(image_size=28, activation="relu", **k),
          lambda **k: M.LeNet5(image_size=28, activation="relu", **k), _image(1, 28, 28), **_cnn),
    _spec("AlexNet", "cnn", "AlexNet", lambda **k: M.AlexNet(num_classes=10, width_mult=1 / 8, hidden=64, **k),
          lambda **k: M.AlexNet(**k), _image(3, 64, 224), **_cnn),
    *[_spec(f"{name}", "cnn", "VGG-11/16-BN" if name.endswith("bn") else "VGG-11/16",
            (lambda f: lambda **k: f(num_classes=10, width_mult=1 / 16, hidden=32, **k))(fn),
            (lambda f: lambda **k: f(**k))(fn), _image(3, 64, 224), slow_interpreter=name.startswith("vgg16"), **_cnn)
      for name, fn in [("vgg11", M.vgg11), ("vgg11_bn", M.vgg11_bn), ("vgg16", M.vgg16), ("vgg16_bn", M.vgg16_bn)]],
    _spec("GoogLeNet", "cnn", "GoogLeNet", lambda **k: M.googlenet(num_classes=10, width_mult=1 / 8, **k),
          lambda **k: M.googlenet(**k), _image(3, 64, 224), slow_interpreter=True, **_cnn),
    *[_spec(name, "cnn", "ResNet-18/34/50", (lambda f: lambda **k: f(num_classes=10, width_mult=1 / 8, **k))(fn),
            (lambda f: lambda **k: f(**k))(fn), _image(3, 64, 224), slow_interpreter=name != "resnet18", **_cnn)
      for name, fn in [("resnet18", M.resnet18), ("resnet34", M.resnet34), ("resnet50", M.resnet50)]],
    _spec("RowLSTM", "rnn", "RowLSTM / RowGRU", lambda **k: M.RowLSTM(hidden_size=32, **k),
          lambda **k: M.RowLSTM(**k), _image(1, 28, 28)),
    _spec("RowGRU", "rnn", "RowLSTM / RowGRU", lambda **k: M.RowGRU(hidden_size=32, **k),
          lambda **k: M.RowGRU(**k), _image(1, 28, 28)),
    _spec("CharLSTM", "rnn", "CharLSTM", lambda **k: M.CharLSTM(vocab_size=32, embedding_dim=16, hidden_size=32, **k),
          lambda **k: M.CharLSTM(**k), _tokens(32, 128, 8, 128, seq_first=True)),
    _spec("MLPGenerator", "gan", "MLP GAN (G and D)", lambda **k: M.MLPGenerator(**k), lambda **k: M.MLPGenerator(**k),
          _noise(100)),
    _spec("MLPDiscriminator", "gan", "MLP GAN (G and D)", lambda **k: M.MLPDiscriminator(**k),
          lambda **k: M.MLPDiscriminator(**k), _image(1, 28, 28)),
    *[_spec(f"DCGAN{size}-G", "gan", "DCGAN G (64, 32)",
            (lambda s: lambda **k: M.DCGANGenerator(s, nz=8, ngf=4, **k))(size),
            (lambda s: lambda **k: M.DCGANGenerator(s, **k))(size),
            (lambda s: lambda size_, batch, dtype, g: _noise(8 if size_ == "small" else 100, True)(size_, batch,
                                                                                                 dtype, g))(size),
            slow_interpreter=size == 64)
      for size in (64, 32)],
    *[_spec(f"DCGAN{size}-D", "gan", "DCGAN D (64, 32)", (lambda s: lambda **k: M.DCGANDiscriminator(s, ndf=4, **k))(size),
            (lambda s: lambda **k: M.DCGANDiscriminator(s, **k))(size), _image(3, size, size),
            slow_interpreter=size == 64, **_cnn)
      for size in (64, 32)],
    _spec("WGANGPCritic", "gan", "WGAN-GP critic", lambda **k: M.WGANGPCritic(32, ndf=4, **k),
          lambda **k: M.WGANGPCritic(64, **k), _image(3, 32, 64), **_cnn),
    _spec("TransformerLM", "transformer", "TransformerLM",
          lambda **k: M.TransformerLM(ntoken=50, d_model=64, nhead=2, d_hid=64, nlayers=2, dropout=0.0, **k),
          lambda **k: M.TransformerLM(ntoken=33278, d_model=512, nhead=8, d_hid=2048, nlayers=6, dropout=0.0, **k),
          _tokens(50, 33278, 8, 256, seq_first=True)),
    _spec("GPT", "transformer", "GPT",
          lambda **k: M.GPT(vocab_size=50, block_size=16, n_layer=2, n_head=2, d_model=64, **k),
          lambda **k: M.GPT(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, d_model=768, **k),
          _tokens(50, 50304, 8, 1024, seq_first=False)),
    _spec("BERT", "transformer", "BERT",
          lambda **k: M.BERT(vocab_size=50, max_len=16, n_layer=2, n_head=2, d_model=64, d_ff=64, **k),
          lambda **k: M.BERT(vocab_size=30522, max_len=512, n_layer=12, n_head=12, d_model=768, d_ff=3072, **k),
          _bert_inputs),
    _spec("ViT", "transformer", "ViT",
          lambda **k: M.ViT(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=64,
                            num_classes=10, **k),
          lambda **k: M.ViT(**k), _image(3, 32, 224), **_cnn),
    _spec("ConvDenoiser", "diffusion", "ConvDenoiser", lambda **k: M.ConvDenoiser(d=8, **k),
          lambda **k: M.ConvDenoiser(d=64, **k), _image_and_t(1, 12, 28), **_cnn),
    _spec("UNet", "diffusion", "DDPM UNet",
          lambda **k: M.UNet(channels=1, base=16, mults=(1, 2), attn_levels=(1,), groups=4, **k),
          lambda **k: M.UNet(channels=3, base=64, mults=(1, 2, 2, 2), attn_levels=(2,), groups=32, **k),
          _image_and_t(1, 8, 32), **_cnn),
]}


def outputs(result) -> list[torch.Tensor]:
    """The floating tensors a forward returned (logits, GoogLeNet's aux logits, an RNN's states...)."""
    if isinstance(result, torch.Tensor):
        return [result] if result.is_floating_point() else []
    if result is None:
        return []
    return [t for item in result for t in outputs(item)]


def loss_of(result, generator_seed: int = 1) -> torch.Tensor:
    """A scalar touching every output: sum(out * r) with fixed random r per output (a deterministic probe that
    gives every parameter a gradient)."""
    g = torch.Generator().manual_seed(generator_seed)
    total = 0
    for out in outputs(result):
        r = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device=out.device, dtype=out.dtype)
        total = total + (out * r).sum()
    return total
