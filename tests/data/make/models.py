"""Hand-built torch models for the reference-parity suite (no torchvision).

The layer shapes follow the published architectures (VGG-11 with batch norm,
ResNet-18, MobileNetV3-small, DenseNet-121); classifier heads, Conv1d nets,
even-kernel Conv2d, recurrent and attention models cover the cases where the
reference treats layers specially. Weights are set from ``numpy``'s
``default_rng([seed, index])`` per parameter, never from torch's global
generator, so the reference's environment and the test's build the same
numbers: ``init='uniform'`` draws U(−b, b) with b = 1/√fan_in (the scale of
torch's default initialisation), ``init='t'`` draws Student-t with 3 degrees
of freedom scaled to the same variance (heavy tails, so the power-law fits see
real tails).

Used by ``tests/data/make/make_compat_golden.py`` (under the reference's
interpreter) and by ``tests/test_compat_golden.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SEED = 20261201


def set_weights(model: nn.Module, init: str = "uniform", seed: int = SEED) -> nn.Module:
    """Overwrite every parameter of ``model`` from ``default_rng([seed, i])`` (i = parameter index)."""
    with torch.no_grad():
        for i, (_, p) in enumerate(model.named_parameters()):
            shape = tuple(p.shape)
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            rng = np.random.default_rng([seed, i])
            if init == "uniform":
                values = rng.uniform(-bound, bound, size=shape)
            elif init == "t":
                values = rng.standard_t(3, size=shape) * (bound / math.sqrt(3.0))
            else:
                raise ValueError(f"unknown init {init!r}")
            p.copy_(torch.from_numpy(values.astype(np.float32)))
    return model


def mlp(classes: int) -> nn.Module:
    """A three-layer perceptron with a ``classes``-way head."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, classes))


def vgg11_bn(classes: int = 10) -> nn.Module:
    """VGG-11 with batch norm: torchvision's feature layers; the CIFAR-size classifier (512 → 512 → 512 → classes).

    torchvision's 25088×4096 first classifier layer is left out to keep the
    test fast: it is a plain dense layer with thousands of eigenvalues, the
    case both tools already agree on.
    """
    layers: list[nn.Module] = []
    c = 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
            c = int(v)
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(),
                         nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                       nn.Linear(512, classes)))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)


def resnet18(classes: int = 1000) -> nn.Module:
    """ResNet-18: 7×7 stem, four stages of two basic blocks (64, 128, 256, 512), 1×1 downsamples, fc."""
    m = nn.Module()
    m.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(64)
    c = 64
    for k, width in enumerate((64, 128, 256, 512), start=1):
        stride = 1 if k == 1 else 2
        setattr(m, f"layer{k}", nn.Sequential(_Basic(c, width, stride), _Basic(width, width, 1)))
        c = width
    m.fc = nn.Linear(512, classes)
    return m


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def mobilenet_v3_small(classes: int = 1000) -> nn.Module:
    """MobileNetV3-small: stem, eleven inverted-residual blocks (depthwise convs, squeeze-excitation), classifier."""
    conf = [(16, 3, 16, 16, True), (16, 3, 72, 24, False), (24, 3, 88, 24, False), (24, 5, 96, 40, True),
            (40, 5, 240, 40, True), (40, 5, 240, 40, True), (40, 5, 120, 48, True), (48, 5, 144, 48, True),
            (48, 5, 288, 96, True), (96, 5, 576, 96, True), (96, 5, 576, 96, True)]
    feats: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())]
    for cin, k, exp, cout, se in conf:
        block: list[nn.Module] = []
        if exp != cin:
            block.append(nn.Sequential(nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), nn.Hardswish()))
        block.append(nn.Sequential(nn.Conv2d(exp, exp, k, 1, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp)))
        if se:
            sq = _divisible(exp // 4)
            block.append(nn.Sequential(nn.Conv2d(exp, sq, 1), nn.ReLU(), nn.Conv2d(sq, exp, 1), nn.Hardsigmoid()))
        block.append(nn.Sequential(nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)))
        feats.append(nn.Sequential(*block))
    feats.append(nn.Sequential(nn.Conv2d(96, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish()))
    return nn.Sequential(nn.Sequential(*feats), nn.Flatten(),
                         nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, classes)))


def densenet121(classes: int = 1000) -> nn.Module:
    """DenseNet-121: growth 32, blocks of 6, 12, 24, 16 layers (1×1 then 3×3 convs), halving transitions."""
    feats: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c = 64
    for b, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            feats.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 128, 1, bias=False),
                                       nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 32, 3, 1, 1, bias=False)))
            c += 32
        if b < 3:
            feats.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False)))
            c //= 2
    return nn.Sequential(nn.Sequential(*feats), nn.BatchNorm2d(c), nn.Flatten(), nn.Linear(c, classes))


def conv1d_net() -> nn.Module:
    """Conv1d layers with kernels below 8 (3, 5) and from 8 up (8, 9, 12), and a dense head."""
    return nn.Sequential(nn.Conv1d(16, 32, 3), nn.Conv1d(32, 48, 5), nn.Conv1d(48, 64, 8), nn.Conv1d(64, 40, 9),
                         nn.Conv1d(40, 96, 12), nn.Flatten(), nn.Linear(96, 24))


def even_conv2d() -> nn.Module:
    """Conv2d with even receptive fields (2×2, 4×4, 3×2) with fewer and more outputs than inputs, and odd ones."""
    return nn.Sequential(nn.Conv2d(64, 32, 2), nn.Conv2d(32, 64, 2), nn.Conv2d(64, 48, 4), nn.Conv2d(48, 24, (3, 2)),
                         nn.Conv2d(24, 16, 3), nn.Conv2d(16, 40, (1, 2)))


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(300, 48)
        self.lstm = nn.LSTM(48, 64, num_layers=2)
        self.gru = nn.GRU(64, 32)
        self.head = nn.Linear(32, 12)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(96, 4)
        self.cross = nn.MultiheadAttention(64, 8, kdim=40, vdim=24)
        self.ff = nn.Linear(96, 192)
        self.out = nn.Linear(192, 17)


def recurrent() -> nn.Module:
    """Embedding, 2-layer LSTM, GRU and a 12-way head (recurrent weights have no ``weight`` attribute)."""
    return _Recurrent()


def attention() -> nn.Module:
    """Two ``nn.MultiheadAttention`` modules (one with separate k/v sizes) and dense layers."""
    return _Attention()


BUILDERS = {
    **{f"mlp{k}": (lambda k=k: mlp(k)) for k in (8, 9, 10, 16, 19, 20)},
    "vgg11_bn": vgg11_bn, "resnet18": resnet18, "mobilenet_v3_small": mobilenet_v3_small,
    "densenet121": densenet121, "conv1d": conv1d_net, "even_conv2d": even_conv2d,
    "recurrent": recurrent, "attention": attention,
}
#: (model name, init) pairs in the golden files; the large architectures also with Student-t weights.
CASES = [(name, "uniform") for name in BUILDERS] + [
    (name, "t") for name in ("mlp10", "mlp16", "vgg11_bn", "resnet18", "mobilenet_v3_small", "densenet121",
                             "conv1d", "even_conv2d", "attention")
]

#: (model name, init) pairs whose randomize=True spread of the reference is stored.
SPREAD_CASES = [("vgg11_bn", "t"), ("mlp10", "t"), ("even_conv2d", "t")]


def build(name: str, init: str = "uniform", seed: int = SEED) -> nn.Module:
    """The model ``name`` of :data:`BUILDERS` with its weights set by :func:`set_weights`."""
    torch.manual_seed(0)  # only construction order; every parameter is then overwritten
    return set_weights(BUILDERS[name]().eval(), init, seed)
