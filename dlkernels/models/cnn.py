"""Convolutional reference models: MnistCNN, CifarBNCNN, LeNet-5, AlexNet, VGG-11/16 (+BN), GoogLeNet, ResNet-18/34/50.

AlexNet, VGG, GoogLeNet and ResNet use torchvision's module layout, so their state_dict keys are
torchvision's (`torchvision.models.resnet50().state_dict()` loads into `resnet50()` and into
`resnet50(impl="torch")`). `width_mult` (default 1) narrows every layer for tests; at 1 the parameter counts are
torchvision's.
"""
from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlkernels.models._layers import Layers, scaled


# ----------------------------------------------------------------------------- small CNNs
class MnistCNN(nn.Module):
    """conv(1->32, 3x3, pad 1)-ReLU, conv(32->64)-ReLU, max-pool 2, dropout 0.25, linear(64*14*14->128)-ReLU,
    dropout 0.5, linear(128->10). Input (N, 1, 28, 28)."""

    def __init__(self, num_classes: int = 10, image_size: int = 28, *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.features = nn.Sequential(*L.conv_relu(1, 32, 3, padding=1), *L.conv_relu(32, 64, 3, padding=1),
                                      L.max_pool(2), nn.Dropout(0.25))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * (image_size // 2) ** 2, 128), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class CifarBNCNN(nn.Module):
    """Three stages of [conv 3x3 same + ReLU, BatchNorm] x2 then max-pool 2 (widths 32, 64, 128); flatten,
    dropout 0.2, linear->1024-ReLU, dropout 0.2, linear->10. Conv+ReLU is one fused conv epilogue here."""

    def __init__(self, num_classes: int = 10, image_size: int = 32, widths=(32, 64, 128), hidden: int = 1024, *,
                 impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        layers, channels = [], 3
        for width in widths:
            for _ in range(2):
                layers += [*L.conv_relu(channels, width, 3, padding=1), L.bn(width)]
                channels = width
            layers.append(L.max_pool(2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(channels * side * side, hidden),
                                        nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5: conv(1->6, 5x5)-act, avg-pool 2, conv(6->16, 5x5)-act, avg-pool 2, 120-act, 84-act, 10.

    image_size 32 (the original) or 28 (padded by 2 in the first conv). activation "tanh" (the original; torch's
    tanh between our convs) or "relu" (fused into our conv epilogue).
    """

    def __init__(self, num_classes: int = 10, image_size: int = 32, activation: str = "tanh", *,
                 impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        if image_size not in (28, 32) or activation not in ("tanh", "relu"):
            raise ValueError("LeNet5: image_size 28 or 32, activation 'tanh' or 'relu'")
        L = Layers(impl, backend)
        relu = activation == "relu"

        def conv_act(*args, **kwargs):
            if relu:
                return L.conv_relu(*args, **kwargs)
            return [L.conv(*args, **kwargs), nn.Tanh()]

        act = nn.ReLU if relu else nn.Tanh
        self.features = nn.Sequential(*conv_act(1, 6, 5, padding=2 if image_size == 28 else 0), L.avg_pool(2),
                                      *conv_act(6, 16, 5), L.avg_pool(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(),
                                        nn.Linear(84, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------- AlexNet, VGG (torchvision layout)
class AlexNet(nn.Module):
    """torchvision.models.AlexNet's layout and keys (features.{0,3,6,8,10}, classifier.{1,4,6})."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, width_mult: float = 1.0, hidden: int = 4096,
                 *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        c = [scaled(n, width_mult) for n in (64, 192, 384, 256, 256)]
        self.features = nn.Sequential(
            *L.conv_relu(3, c[0], 11, stride=4, padding=2), L.max_pool(3, 2),
            *L.conv_relu(c[0], c[1], 5, padding=2), L.max_pool(3, 2),
            *L.conv_relu(c[1], c[2], 3, padding=1), *L.conv_relu(c[2], c[3], 3, padding=1),
            *L.conv_relu(c[3], c[4], 3, padding=1), L.max_pool(3, 2))
        self.avgpool = L.adaptive_avg_pool((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c[4] * 36, hidden), nn.ReLU(),
                                        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_CONFIGS = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
               "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]}


class VGG(nn.Module):
    """torchvision.models.VGG's layout and keys: features (conv[, bn], relu, ..., 'M' max-pool), avgpool (7x7),
    classifier. With batch_norm the ReLU fuses into our BatchNorm, else into our conv."""

    def __init__(self, config: str = "vgg16", batch_norm: bool = False, num_classes: int = 1000,
                 dropout: float = 0.5, width_mult: float = 1.0, hidden: int = 4096, *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        layers, channels = [], 3
        for v in VGG_CONFIGS[config]:
            if v == "M":
                layers.append(L.max_pool(2, 2))
                continue
            v = scaled(v, width_mult)
            if batch_norm:
                layers += [L.conv(channels, v, 3, padding=1), *L.bn_relu(v)]
            else:
                layers += L.conv_relu(channels, v, 3, padding=1)
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = L.adaptive_avg_pool((7, 7))
        self.classifier = nn.Sequential(nn.Linear(channels * 49, hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(hidden, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg11(**kwargs) -> VGG:
    return VGG("vgg11", False, **kwargs)


def vgg11_bn(**kwargs) -> VGG:
    return VGG("vgg11", True, **kwargs)


def vgg16(**kwargs) -> VGG:
    return VGG("vgg16", False, **kwargs)


def vgg16_bn(**kwargs) -> VGG:
    return VGG("vgg16", True, **kwargs)


# ----------------------------------------------------------------------------- GoogLeNet (torchvision layout)
GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU; ours: conv, then BatchNorm with the ReLU fused."""

    def __init__(self, L: Layers, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = L.conv(in_channels, out_channels, bias=False, **kwargs)
        self.bn = L.bn(out_channels, relu=True, eps=0.001)
        self.fused = L.ours

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return x if self.fused else F.relu(x)


class Inception(nn.Module):
    def __init__(self, L: Layers, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(L, in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(L, in_channels, ch3x3red, kernel_size=1),
                                     BasicConv2d(L, ch3x3red, ch3x3, kernel_size=3, padding=1))
        # torchvision's branch3 uses a 3x3 kernel where the paper has 5x5 (kept for its weights).
        self.branch3 = nn.Sequential(BasicConv2d(L, in_channels, ch5x5red, kernel_size=1),
                                     BasicConv2d(L, ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(L.max_pool(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(L, in_channels, pool_proj, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, L: Layers, in_channels: int, num_classes: int, width: int = 128, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(L, in_channels, width, kernel_size=1)
        self.fc1 = nn.Linear(width * 16, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)
        self.pool = L.adaptive_avg_pool((4, 4))

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    """Inception v1 in torchvision's layout and keys (aux_logits=True as torchvision.models.googlenet()).
    In training mode with aux_logits it returns GoogLeNetOutputs(logits, aux_logits2, aux_logits1)."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.2,
                 dropout_aux: float = 0.7, width_mult: float = 1.0, *, impl: str = "dlkernels",
                 backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        s = lambda *channels: [scaled(c, width_mult) for c in channels]  # noqa: E731
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(L, 3, *s(64), kernel_size=7, stride=2, padding=3)
        self.maxpool1 = L.max_pool(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(L, *s(64, 64), kernel_size=1)
        self.conv3 = BasicConv2d(L, *s(64, 192), kernel_size=3, padding=1)
        self.maxpool2 = L.max_pool(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(L, *s(192, 64, 96, 128, 16, 32, 32))
        self.inception3b = Inception(L, *s(256, 128, 128, 192, 32, 96, 64))
        self.maxpool3 = L.max_pool(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(L, *s(480, 192, 96, 208, 16, 48, 64))
        self.inception4b = Inception(L, *s(512, 160, 112, 224, 24, 64, 64))
        self.inception4c = Inception(L, *s(512, 128, 128, 256, 24, 64, 64))
        self.inception4d = Inception(L, *s(512, 112, 144, 288, 32, 64, 64))
        self.inception4e = Inception(L, *s(528, 256, 160, 320, 32, 128, 128))
        self.maxpool4 = L.max_pool(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(L, *s(832, 256, 160, 320, 32, 128, 128))
        self.inception5b = Inception(L, *s(832, 384, 192, 384, 48, 128, 128))
        if aux_logits:
            self.aux1 = InceptionAux(L, *s(512), num_classes, *s(128), dropout=dropout_aux)
            self.aux2 = InceptionAux(L, *s(528), num_classes, *s(128), dropout=dropout_aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = L.adaptive_avg_pool((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(*s(1024), num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def googlenet(**kwargs) -> GoogLeNet:
    return GoogLeNet(**kwargs)


# ----------------------------------------------------------------------------- ResNet (torchvision layout)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, L: Layers, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = L.conv(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = L.bn(planes, relu=True)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = L.conv(planes, planes, 3, padding=1, bias=False)
        self.bn2 = L.bn_add_relu(planes)
        self.downsample = downsample
        self.fused = L.ours

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = out if self.fused else self.relu(out)
        return Layers.add_relu(self.bn2, self.conv2(out), identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride in the 3x3 conv), as torchvision."""
    expansion = 4

    def __init__(self, L: Layers, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = L.conv(inplanes, planes, 1, bias=False)
        self.bn1 = L.bn(planes, relu=True)
        self.conv2 = L.conv(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = L.bn(planes, relu=True)
        self.conv3 = L.conv(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = L.bn_add_relu(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.fused = L.ours

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = out if self.fused else self.relu(out)
        out = self.bn2(self.conv2(out))
        out = out if self.fused else self.relu(out)
        return Layers.add_relu(self.bn3, self.conv3(out), identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet's layout, keys and initialisation; every block ends in BatchNormAddReLU2d
    (bn -> + identity -> relu in one pass), every other BatchNorm fuses its ReLU."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000, width_mult: float = 1.0, *,
                 impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self._L = L
        self.inplanes = scaled(64, width_mult)
        self.conv1 = L.conv(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = L.bn(self.inplanes, relu=True)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = L.max_pool(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, scaled(64, width_mult), layers[0])
        self.layer2 = self._make_layer(block, scaled(128, width_mult), layers[1], stride=2)
        self.layer3 = self._make_layer(block, scaled(256, width_mult), layers[2], stride=2)
        self.layer4 = self._make_layer(block, scaled(512, width_mult), layers[3], stride=2)
        self.avgpool = L.adaptive_avg_pool((1, 1))
        self.fc = nn.Linear(scaled(512, width_mult) * block.expansion, num_classes)
        del self._L
        self.fused = L.ours
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        L = self._L
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(L.conv(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                       L.bn(planes * block.expansion))
        layers = [block(L, self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(L, self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(x))
        x = self.maxpool(x if self.fused else self.relu(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
