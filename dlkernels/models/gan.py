"""GAN reference models: MLP GAN, DCGAN (64x64 and 32x32) and the WGAN-GP critic with its gradient penalty.

ConvTranspose2d, strided convs and BatchNorm (+ReLU) are ours; the DCGAN discriminator's and WGAN-GP critic's
LeakyReLU(0.2) runs fused into the conv or BatchNorm before it (an nn.Identity holds its place, as in convert()).
The MLP GAN's layers are torch's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dlkernels.nn as dnn
from dlkernels.models._layers import Layers


# ----------------------------------------------------------------------------- MLP GAN
class MLPGenerator(nn.Module):
    """100 -> 256-ReLU -> 512-ReLU -> 784-tanh, reshaped to (N, 1, 28, 28). Linear layers only: torch's ops."""

    def __init__(self, latent_dim: int = 100, image_shape=(1, 28, 28), *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__()
        Layers(impl, backend)  # validates impl; nothing here has a dlkernels op
        self.image_shape = tuple(image_shape)
        pixels = 1
        for n in image_shape:
            pixels *= n
        self.net = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(),
                                 nn.Linear(512, pixels), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """784 -> 512-LeakyReLU(0.2) -> 256-LeakyReLU(0.2) -> 1-sigmoid."""

    def __init__(self, image_shape=(1, 28, 28), *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        Layers(impl, backend)
        pixels = 1
        for n in image_shape:
            pixels *= n
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256),
                                 nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------- DCGAN
def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():  # the DCGAN paper's N(0, 0.02) weights, BN weight N(1, 0.02)
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _conv_transpose(L: Layers, *args) -> nn.Module:
    if L.ours:
        return dnn.ConvTranspose2d(*args, bias=False, backend=L.backend)
    return nn.ConvTranspose2d(*args, bias=False)


class DCGANGenerator(nn.Module):
    """z (N, nz, 1, 1) -> ConvTranspose2d + BN + ReLU stages -> ConvTranspose2d -> tanh, (N, nc, S, S), S = 64 or
    32 (the PyTorch DCGAN example's `main` Sequential). ConvTranspose2d and the fused BN+ReLU are ours."""

    def __init__(self, image_size: int = 64, nz: int = 100, ngf: int = 64, nc: int = 3, *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__()
        if image_size not in (32, 64):
            raise ValueError(f"DCGANGenerator: image_size 32 or 64, got {image_size}")
        L = Layers(impl, backend)
        mults = [8, 4, 2, 1] if image_size == 64 else [4, 2, 1]
        layers, channels = [], nz
        for i, mult in enumerate(mults):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            layers += [_conv_transpose(L, channels, ngf * mult, 4, stride, padding), *L.bn_relu(ngf * mult)]
            channels = ngf * mult
        layers += [_conv_transpose(L, channels, nc, 4, 2, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """(N, nc, S, S) -> strided conv + [BN] + LeakyReLU(0.2) stages -> conv 4x4 -> [sigmoid], (N,).

    batch_norm=False and sigmoid=False give the WGAN-GP critic (no BN, whose per-batch statistics would break the
    per-sample gradient penalty). Convs and BN are ours, with the LeakyReLU fused into the conv (first stage, or no
    BN) or the BN; the twin's nn.LeakyReLU is an nn.Identity in ours, so the state_dict keys are the same.
    """

    def __init__(self, image_size: int = 64, ndf: int = 64, nc: int = 3, batch_norm: bool = True,
                 sigmoid: bool = True, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        if image_size not in (32, 64):
            raise ValueError(f"DCGANDiscriminator: image_size 32 or 64, got {image_size}")
        L = Layers(impl, backend)
        mults = [1, 2, 4, 8] if image_size == 64 else [1, 2, 4]
        layers, channels = [], nc
        for i, mult in enumerate(mults):
            conv = (channels, ndf * mult, 4, 2, 1)
            if i > 0 and batch_norm:
                layers += [L.conv(*conv, bias=False), *L.bn_leaky_relu(ndf * mult, 0.2)]
            else:
                layers += L.conv_leaky_relu(*conv, negative_slope=0.2, bias=False)
            channels = ndf * mult
        layers.append(L.conv(channels, 1, 4, 1, 0, bias=False))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.main = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).view(-1)


class DoubleBackwardUnsupported(RuntimeError):
    """Our op's backward is not itself differentiable (needed by the WGAN-GP gradient penalty)."""


class WGANGPCritic(DCGANDiscriminator):
    """DCGAN's discriminator without sigmoid or BN, trained with the WGAN-GP gradient penalty.

    gradient_penalty(real, fake, double_backward=...) needs the gradient of the critic's input gradient, i.e. a
    double backward through conv2d. double_backward="ours" (the default) differentiates through our ops
    (dlk::conv2d_backward has its own derivative); should an op's backward lack one, wgan_gp_penalty_backward(loss)
    raises DoubleBackwardUnsupported naming it. "torch" computes the penalty term with torch's conv2d over the same
    parameters.
    """

    def __init__(self, image_size: int = 64, ndf: int = 64, nc: int = 3, *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__(image_size, ndf, nc, batch_norm=False, sigmoid=False, impl=impl, backend=backend)

    def forward_torch(self, x: Tensor) -> Tensor:
        """The same network with torch's functional ops (same parameters), fused activations included."""
        for m in self.main:
            if isinstance(m, nn.Conv2d):
                x = F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
                activation = getattr(m, "activation", None)  # our Conv2d's fused epilogue
                if activation == "leaky_relu":
                    x = F.leaky_relu(x, m.negative_slope)
                elif activation == "relu":
                    x = F.relu(x)
            else:
                x = m(x)
        return x.view(-1)

    def gradient_penalty(self, real: Tensor, fake: Tensor, weight: float = 10.0,
                         double_backward: str = "ours") -> Tensor:
        if double_backward not in ("torch", "ours"):
            raise ValueError(f"double_backward must be 'torch' or 'ours', got {double_backward!r}")
        alpha = torch.rand(real.shape[0], 1, 1, 1, dtype=real.dtype, device=real.device)
        mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
        score = self(mixed) if double_backward == "ours" else self.forward_torch(mixed)
        grad, = torch.autograd.grad(score.sum(), mixed, create_graph=True)
        penalty = weight * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        return penalty


def wgan_gp_penalty_backward(loss: Tensor) -> None:
    """loss.backward(), re-raising the missing double-backward formula of one of our ops clearly."""
    try:
        loss.backward()
    except RuntimeError as error:
        message = str(error)
        if "no autograd formula was registered" in message and "dlk" in message:
            op = message.split("backward through ")[-1].split(" but")[0]
            raise DoubleBackwardUnsupported(
                f"WGAN-GP gradient penalty: {op} (the backward of a dlkernels op) is not differentiable, so the "
                "penalty cannot be backpropagated through our kernels; use "
                "gradient_penalty(..., double_backward='torch')") from error
        raise
