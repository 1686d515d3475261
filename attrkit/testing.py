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

import torch
from torch import nn


class ToyModel(nn.Module):
    """The 3-3-2 ReLU network of the getting-started tour, with fixed weights.

    Example:
        >>> import torch
        >>> from attrkit.testing import ToyModel
        >>> ToyModel()(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[-3.,  7.]], grad_fn=<AddmmBackward0>)
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
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 3 * 3, n_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """A tabular MLP: ``n_features -> hidden -> hidden -> n_out`` with ReLUs (or a smooth ``act``)."""

    def __init__(self, n_features: int = 10, hidden: int = 16, n_out: int = 3, act: type = nn.ReLU, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, n_out)
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)

    def forward(self, x):
        return self.net(x)
