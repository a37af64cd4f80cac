"""Train a CNN from dlkernels.models on the 8x8 digits upsampled to 28x28 (or 32x32 RGB for the CIFAR-style and
torchvision-layout models, fed the digit in every channel).

    python examples/train_cnn.py --model MnistCNN --steps 200
    python examples/train_cnn.py --model resnet18 --backend triton --channels-last
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Log, autocast, digits, parser  # noqa: E402

import dlkernels.models as M  # noqa: E402

MODELS = {"MnistCNN": (lambda **k: M.MnistCNN(**k), 28, 1), "LeNet5": (lambda **k: M.LeNet5(image_size=28, **k), 28, 1),
          "CifarBNCNN": (lambda **k: M.CifarBNCNN(**k), 32, 3),
          "resnet18": (lambda **k: M.resnet18(num_classes=10, **k), 32, 3),
          "vgg11_bn": (lambda **k: M.vgg11_bn(num_classes=10, hidden=256, **k), 32, 3)}


def main():
    p = parser(__doc__.split("\n\n")[0], steps=200, batch=32)
    p.add_argument("--model", default="MnistCNN", choices=list(MODELS))
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    make, size, channels = MODELS[args.model]
    model = make(impl=args.impl, backend=args.backend).to(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    (x, y), (x_test, y_test) = digits(size, args.device)
    x, x_test = x.expand(-1, channels, -1, -1), x_test.expand(-1, channels, -1, -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    log = Log(args)
    for step in range(args.steps):
        index = torch.randint(0, len(y), (args.batch,), device=args.device)
        with autocast(args):
            loss = F.cross_entropy(model(x[index].contiguous(memory_format=fmt)), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log(step, loss=loss.item())
    model.eval()
    with torch.no_grad(), autocast(args):
        accuracy = (model(x_test.contiguous(memory_format=fmt)).argmax(1) == y_test).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
