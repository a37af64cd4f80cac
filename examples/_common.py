"""Shared bits of the example scripts: arguments, device, data (scikit-learn's 8x8 digits, or synthetic)."""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def parser(description: str, steps: int, batch: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--backend", default="auto", help='"auto", "cuda", "triton", "reference" (the C++ reference) or "torch"')
    p.add_argument("--impl", default="dlkernels", choices=["dlkernels", "torch"], help="our ops or the torch twin")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 runs under autocast on a GPU")
    p.add_argument("--log-every", type=int, default=10)
    return p


def digits(size: int = 28, device="cpu"):
    """(train_x, train_y), (test_x, test_y): scikit-learn's 8x8 digits upsampled to size x size in [-1, 1], or
    random images with random labels when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1797, 1, size, size, generator=g) * 2 - 1
        y = torch.randint(0, 10, (1797,), generator=g)
    else:
        data = load_digits()
        x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        y = torch.tensor(data.target)
    permutation = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[permutation].to(device), y[permutation].to(device)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def autocast(args):
    enabled = args.dtype == "bfloat16" and args.device.startswith("cuda")
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)


class Log:
    def __init__(self, args):
        self.args, self.start = args, time.time()

    def __call__(self, step: int, **values) -> None:
        if step % self.args.log_every == 0 or step == self.args.steps - 1:
            text = " ".join(f"{k} {v:.4f}" for k, v in values.items())
            print(f"step {step:5d} {text} ({time.time() - self.start:.1f}s)", flush=True)
