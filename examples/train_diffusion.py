"""Train a diffusion model from dlkernels.models on the digits: the ConvDenoiser or the small DDPM UNet with the
DDPM loss, then draw a few samples.

    python examples/train_diffusion.py --model unet --steps 500 --sample-steps 1000
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Log, autocast, digits, parser  # noqa: E402

import dlkernels.models as M  # noqa: E402


def main():
    p = parser(__doc__.split("\n\n")[0], steps=200, batch=32)
    p.add_argument("--model", default="unet", choices=["denoiser", "unet"])
    p.add_argument("--sample-steps", type=int, default=None, help="sampling chain length (default: --steps' 1000 "
                                                                       "on GPU, 5 on CPU)")
    args = p.parse_args()
    dev, kw, log = args.device, dict(impl=args.impl, backend=args.backend), Log(args)
    (x, _), _ = digits(16, dev)
    net = M.ConvDenoiser(d=32, **kw) if args.model == "denoiser" else \
        M.UNet(channels=1, base=32, mults=(1, 2), attn_levels=(1,), groups=8, **kw)
    ddpm = M.DDPM(net).to(dev)
    optimizer = torch.optim.Adam(ddpm.parameters(), lr=2e-3)
    for step in range(args.steps):
        with autocast(args):
            loss = ddpm.loss(x[torch.randint(0, len(x), (args.batch,), device=dev)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log(step, loss=loss.item())
    chain = args.sample_steps or (1000 if dev.startswith("cuda") else 5)
    ddpm.eval()
    samples = ddpm.sample((4, 1, 16, 16), steps=chain, device=dev)
    print(f"sampled {tuple(samples.shape)} through {chain} steps: mean {samples.mean().item():.3f}, "
          f"std {samples.std().item():.3f}")


if __name__ == "__main__":
    main()
