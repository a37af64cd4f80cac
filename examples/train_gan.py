"""Train a GAN from dlkernels.models: the MLP GAN on the digits, DCGAN (32x32) on upsampled digits, or WGAN-GP
(DCGAN generator + critic with the gradient penalty).

    python examples/train_gan.py --model mlp --steps 500
    python examples/train_gan.py --model wgan-gp

WGAN-GP's penalty needs a double backward through conv2d (+ its fused LeakyReLU). --double-backward ours (the
default, as in WGANGPCritic.gradient_penalty) differentiates through our ops (dlk::conv2d_backward has its own
derivative); torch computes the penalty term with torch's conv over the same weights.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Log, autocast, digits, parser  # noqa: E402

import dlkernels.models as M  # noqa: E402


def main():
    p = parser(__doc__.split("\n\n")[0], steps=200, batch=32)
    p.add_argument("--model", default="mlp", choices=["mlp", "dcgan", "wgan-gp"])
    p.add_argument("--double-backward", default="ours", choices=["ours", "torch"])
    args = p.parse_args()
    dev, kw = args.device, dict(impl=args.impl, backend=args.backend)
    if args.model == "mlp":
        (x, _), _ = digits(28, dev)
        G, D, nz = M.MLPGenerator(**kw).to(dev), M.MLPDiscriminator(**kw).to(dev), 100
    else:
        (x, _), _ = digits(32, dev)
        x = x.expand(-1, 3, -1, -1)
        G, nz = M.DCGANGenerator(32, nz=64, ngf=32, **kw).to(dev), 64
        D = (M.DCGANDiscriminator(32, ndf=32, **kw) if args.model == "dcgan" else M.WGANGPCritic(32, ndf=32, **kw))
        D = D.to(dev)
    betas = (0.5, 0.999) if args.model != "wgan-gp" else (0.0, 0.9)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=betas)
    log = Log(args)
    noise = (lambda n: torch.randn(n, nz, device=dev)) if args.model == "mlp" else \
        (lambda n: torch.randn(n, nz, 1, 1, device=dev))
    for step in range(args.steps):
        real = x[torch.randint(0, len(x), (args.batch,), device=dev)].contiguous()
        with autocast(args):
            fake = G(noise(args.batch))
        if args.model == "wgan-gp":
            d_loss = D(fake.detach().float()).mean() - D(real).mean() + \
                D.gradient_penalty(real, fake.float(), double_backward=args.double_backward)
            opt_d.zero_grad()
            M.wgan_gp_penalty_backward(d_loss)
            opt_d.step()
            g_loss = -D(fake.float()).mean()
        else:
            ones, zeros = torch.ones(args.batch, device=dev), torch.zeros(args.batch, device=dev)
            with autocast(args):
                d_loss = F.binary_cross_entropy(D(real).float().view(-1), ones) + \
                    F.binary_cross_entropy(D(fake.detach()).float().view(-1), zeros)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            with autocast(args):
                g_loss = F.binary_cross_entropy(D(fake).float().view(-1), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        log(step, d_loss=d_loss.item(), g_loss=g_loss.item())


if __name__ == "__main__":
    main()
