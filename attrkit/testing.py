"""Tiny models with known answers, for the tests and the book alike.

* :class:`ToyModel` — the 3-3-2 ReLU network with fixed weights from the
  getting-started tour (``lin1 -> relu -> lin2``).
* :class:`LinearModel` — ``x @ w + b``: every method has a closed form here
  (IG = ``(x - baseline) * w``, Saliency = ``|w|``).
* :class:`TwoInputModel` — two input tensors and an extra ``scale`` argument,
  for tuple inputs and ``additional_forward_args``.
* :class:`SmallCNN` — conv, ReLU, max pooling and a linear head on 1x8x8 images.
* :class:`MLP` — a tabular multilayer perceptron.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def _random_parameters(model: nn.Module, seed: int,
                       scaled: Callable[[Tensor, Tensor], Tensor] = lambda noise, p: noise * 0.5) -> torch.Generator:
    """Overwrite every parameter ``p`` with ``scaled(seeded normal noise, p)``; returns the generator (to draw on)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scaled(torch.randn(p.shape, generator=g), p))
    return g


def _he(noise: Tensor, p: Tensor) -> Tensor:
    """He initialisation: standard deviation sqrt(2 / fan_in)."""
    return noise * (2.0 / (p[0].numel() if p.dim() > 1 else 1)) ** 0.5


class ToyModel(nn.Module):
    """The 3-3-2 ReLU network of the getting-started tour, with fixed weights.

    Example:
        >>> import torch
        >>> from attrkit.testing import ToyModel
        >>> ToyModel()(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[-23.,  43.]], grad_fn=<AddmmBackward0>)
    """

    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(3, 3)
        self.relu = nn.ReLU()
        self.lin2 = nn.Linear(3, 2)
        with torch.no_grad():
            self.lin1.weight.copy_(torch.arange(-4.0, 5.0).view(3, 3))
            self.lin1.bias.zero_()
            self.lin2.weight.copy_(torch.arange(-3.0, 3.0).view(2, 3))
            self.lin2.bias.fill_(1.0)

    def forward(self, x):
        return self.lin2(self.relu(self.lin1(x)))


class LinearModel(nn.Module):
    """``forward(x) = x @ weight.T + bias`` with the given weights (``(n_out, n_in)``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)

    def forward(self, x):
        return self.linear(x)


class TwoInputModel(nn.Module):
    """Two inputs and an additional ``scale`` argument: ``lin(relu(a) + tanh(b)) * scale``."""

    def __init__(self, n_features: int = 4, n_out: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(n_features, n_out)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(n_out, n_features, generator=g))
            self.lin.bias.copy_(torch.randn(n_out, generator=g))

    def forward(self, a, b, scale=1.0):
        return self.lin(torch.relu(a) + torch.tanh(b)) * scale


class SmallCNN(nn.Module):
    """On 1x8x8 images: conv(1->4, 3x3) -> ReLU -> maxpool 2 -> conv(4->6, 3x3, pad 1) -> ReLU -> linear(54 -> n_classes)."""

    def __init__(self, n_classes: int = 3, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 3 * 3, n_classes)
        _random_parameters(self, seed)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """A tabular MLP: ``n_features -> hidden -> hidden -> n_out`` with ReLUs (or a smooth ``act``)."""

    def __init__(self, n_features: int = 10, hidden: int = 16, n_out: int = 3, act: type = nn.ReLU, seed: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, n_out)
        )
        _random_parameters(self, seed, lambda noise, p: noise / max(1, p.shape[-1]) ** 0.5)

    def forward(self, x):
        return self.net(x)


class ChannelSplit(nn.Module):
    """Hand back the input's channels in two halves: a layer whose output is a tuple."""

    def forward(self, x):
        c = x.shape[1] // 2
        return x[:, :c], x[:, c:]


class BranchCNN(nn.Module):
    """On 1x8x8 images: conv(1->4, 3x3) -> ReLU -> maxpool 2 -> :class:`ChannelSplit` (a tuple of two
    2-channel maps) -> a conv(2->3, pad 1) + ReLU on each half -> concatenate -> average pool -> linear(6 -> n_classes).

    Example:
        >>> import torch
        >>> from attrkit.testing import BranchCNN
        >>> [tuple(t.shape) for t in BranchCNN().split(torch.rand(2, 4, 3, 3))]
        [(2, 2, 3, 3), (2, 2, 3, 3)]
    """

    def __init__(self, n_classes: int = 3, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.split = ChannelSplit()
        self.conv_a = nn.Conv2d(2, 3, 3, padding=1)
        self.conv_b = nn.Conv2d(2, 3, 3, padding=1)
        self.relu_a = nn.ReLU()
        self.relu_b = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)
        _random_parameters(self, seed)

    def forward(self, x):
        a, b = self.split(self.pool(self.relu1(self.conv1(x))))
        h = torch.cat([self.relu_a(self.conv_a(a)), self.relu_b(self.conv_b(b))], dim=1)
        return self.fc(self.avgpool(h).flatten(1))


class TinyTextModel(nn.Module):
    """Integer token ids ``(N, L)`` -> ``nn.Embedding(vocab, dim)`` -> tanh(linear) per token -> mean over
    tokens -> linear(n_classes). Token 0 is the padding token (a natural baseline).

    Example:
        >>> import torch
        >>> from attrkit.testing import TinyTextModel
        >>> TinyTextModel()(torch.tensor([[3, 1, 4, 1, 5]])).shape
        torch.Size([1, 2])
    """

    def __init__(self, vocab: int = 12, dim: int = 6, n_classes: int = 2, seed: int = 0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.hidden = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, n_classes)
        _random_parameters(self, seed, lambda noise, p: noise * 0.7)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, tokens):
        return self.fc(torch.tanh(self.hidden(self.embedding(tokens))).mean(dim=1))


class TinyImageCNN(nn.Module):
    """On 3x32x32 images: conv(3->8, 3x3, pad 1) -> ReLU -> maxpool 2 -> conv(8->16, 3x3, pad 1) -> ReLU ->
    global average pool -> linear(16 -> n_classes). Small enough for fast explorer and browser tests.

    Example:
        >>> import torch
        >>> from attrkit.testing import TinyImageCNN
        >>> TinyImageCNN()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, n_classes: int = 10, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_classes)
        _random_parameters(self, seed, _he)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(self.avgpool(x).flatten(1))


class ResidualCNN(nn.Module):
    """A miniature ResNet on 3x16x16 images, built the way torchvision builds ResNets.

    ``conv -> bn -> relu -> maxpool(3, stride 2, padding 1)`` (overlapping windows), one
    basic block ``conv -> bn -> relu -> conv -> bn -> (+ input) -> relu``, average pooling
    and a linear head. With ``shared_relu=True`` (the default, as in torchvision) a single
    ``nn.ReLU(inplace=True)`` module is called three times; with ``False`` each call has its
    own out-of-place ``nn.ReLU`` — the same function, for checking that methods handle reuse.

    Example:
        >>> import torch
        >>> from attrkit.testing import ResidualCNN
        >>> a, b = ResidualCNN().eval(), ResidualCNN(shared_relu=False).eval()
        >>> x = torch.rand(2, 3, 16, 16)
        >>> bool(torch.equal(a(x), b(x)))
        True
    """

    def __init__(self, n_classes: int = 3, width: int = 4, shared_relu: bool = True, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block_conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.block_bn1 = nn.BatchNorm2d(width)
        self.block_conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.block_bn2 = nn.BatchNorm2d(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, n_classes)
        self.relus = [self.relu] * 3 if shared_relu else [nn.ReLU(), nn.ReLU(), nn.ReLU()]
        if not shared_relu:
            self.relu1, self.relu2, self.relu3 = self.relus
        g = _random_parameters(self, seed)
        with torch.no_grad():
            for bn in (self.bn1, self.block_bn1, self.block_bn2):
                bn.running_mean.copy_(torch.randn(width, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(width, generator=g) + 0.5)

    def forward(self, x):
        x = self.maxpool(self.relus[0](self.bn1(self.conv1(x))))
        out = self.relus[1](self.block_bn1(self.block_conv1(x)))
        out = self.block_bn2(self.block_conv2(out))
        out += x
        out = self.relus[2](out)
        return self.fc(self.avgpool(out).flatten(1))
