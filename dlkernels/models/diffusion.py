"""Diffusion reference models: ConvDenoiser and a small DDPM UNet with the DDPM training loss and sampling loop.

Convolutions (with fused ReLU or fused residual add) and the self-attention core are ours; GroupNorm, SiLU, the
time-embedding MLP, nearest upsampling and the 1x1 attention projections' reshapes are torch's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlkernels.models._layers import Layers


class ConvDenoiser(nn.Module):
    """conv(1->d, 3x3, pad 1)-ReLU, conv(d->2d)-ReLU, conv(2d->1); output scaled by t/1000.
    forward(x (N, C, H, W), t (N,)) -> (N, C, H, W)."""

    def __init__(self, d: int = 32, channels: int = 1, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.net = nn.Sequential(*L.conv_relu(channels, d, 3, padding=1), *L.conv_relu(d, 2 * d, 3, padding=1),
                                 L.conv(2 * d, channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x) * (t.to(x.dtype) / 1000).view(-1, 1, 1, 1)


def timestep_embedding(t: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=t.device) / half)
    args = t.double()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).to(dtype)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-(dropout)-conv with the skip added in our conv's
    fused residual epilogue."""

    def __init__(self, L: Layers, in_ch: int, out_ch: int, time_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = L.conv(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = L.conv(out_ch, out_ch, 3, padding=1)
        self.skip = L.conv(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.fused = L.ours

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]
        h = self.dropout(F.silu(self.norm2(h)))
        skip = self.skip(x)
        return self.conv2(h, residual=skip) if self.fused else self.conv2(h) + skip


class AttnBlock(nn.Module):
    """Self-attention over the pixels of a low-resolution feature map (one head per head_dim channels)."""

    def __init__(self, L: Layers, channels: int, groups: int, head_dim: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = L.conv(channels, 3 * channels, 1)
        self.proj = L.conv(channels, channels, 1)
        self.heads = channels // head_dim
        self._L = L

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, 3, self.heads, channels // self.heads, height * width)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (N, heads, HW, head_dim)
        h = self._L.sdpa(q, k, v).transpose(-1, -2).reshape(batch, channels, height, width)
        return self.proj(h, residual=x) if self._L.ours else self.proj(h) + x


class UNet(nn.Module):
    """Small DDPM UNet: time embedding MLP, ResBlocks at each resolution, strided-conv downsampling, nearest +
    conv upsampling with skip concatenation, self-attention at the lowest resolution(s).
    forward(x (N, C, H, W), t (N,) int) -> predicted noise (N, C, H, W). H, W divisible by 2**(len(mults)-1)."""

    def __init__(self, channels: int = 1, base: int = 32, mults=(1, 2, 2), attn_levels=(2,), groups: int = 8,
                 dropout: float = 0.0, head_dim: int = 32, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.base, self.fused = base, L.ours
        time_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = L.conv(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        widths, ch = [base], base
        for level, mult in enumerate(mults):
            out = base * mult
            stage = nn.ModuleDict({"res": ResBlock(L, ch, out, time_dim, groups, dropout)})
            if level in attn_levels:
                stage["attn"] = AttnBlock(L, out, groups, head_dim)
            if level < len(mults) - 1:
                stage["downsample"] = L.conv(out, out, 3, stride=2, padding=1)
            self.down.append(stage)
            ch = out
            widths.append(ch)
        self.mid1 = ResBlock(L, ch, ch, time_dim, groups, dropout)
        self.mid_attn = AttnBlock(L, ch, groups, head_dim)
        self.mid2 = ResBlock(L, ch, ch, time_dim, groups, dropout)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            out = base * mult
            stage = nn.ModuleDict({"res": ResBlock(L, ch + widths[level + 1], out, time_dim, groups, dropout)})
            if level in attn_levels:
                stage["attn"] = AttnBlock(L, out, groups, head_dim)
            if level > 0:
                stage["upsample"] = L.conv(out, out, 3, padding=1)
            self.up.append(stage)
            ch = out
        self.out_norm = nn.GroupNorm(groups, ch)
        self.out_conv = L.conv(ch, channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.base, x.dtype))
        h = self.stem(x)
        skips = []
        for stage in self.down:
            h = stage["res"](h, temb)
            if "attn" in stage:
                h = stage["attn"](h)
            skips.append(h)
            if "downsample" in stage:
                h = stage["downsample"](h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for stage in self.up:
            h = stage["res"](torch.cat([h, skips.pop()], dim=1), temb)
            if "attn" in stage:
                h = stage["attn"](h)
            if "upsample" in stage:
                h = stage["upsample"](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))


class DDPM(nn.Module):
    """DDPM (Ho et al. 2020) around a noise-prediction network: linear beta schedule, the simple epsilon-MSE
    training loss and ancestral sampling. Buffers betas / alphas_cumprod are part of the state_dict."""

    def __init__(self, model: nn.Module, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        self.model, self.timesteps = model, timesteps
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())

    def loss(self, x0: Tensor, t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        if t is None:
            t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0) if noise is None else noise
        a = self.alphas_cumprod.to(x0.dtype)[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.model(x_t, t), noise)

    @torch.no_grad()
    def sample(self, shape, steps: int | None = None, generator: torch.Generator | None = None,
               device=None, dtype=torch.float32) -> Tensor:
        """Ancestral sampling from x_T ~ N(0, I) through t = T-1 ... 0 (the last `steps` of them if given, a
        quick partial chain for tests)."""
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        betas, abar = self.betas.to(dtype), self.alphas_cumprod.to(dtype)
        start = self.timesteps if steps is None else steps
        for i in reversed(range(start)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            eps = self.model(x, t)
            alpha = 1 - betas[i]
            mean = (x - betas[i] / (1 - abar[i]).sqrt() * eps) / alpha.sqrt()
            if i > 0:
                variance = betas[i] * (1 - abar[i - 1]) / (1 - abar[i])
                x = mean + variance.sqrt() * torch.randn(shape, generator=generator, device=device, dtype=dtype)
            else:
                x = mean
        return x
