"""Helpers the unit tests share: one closeness check, tiny seeded models, a common input batch.

Models with closed-form attributions that the book uses too live in :mod:`attrkit.testing`; these are the
throwaway ones the tests build on the spot.
"""
import pytest
import torch
from torch import nn

X = torch.rand(2, 4, generator=torch.Generator().manual_seed(1))  # a batch of two examples with four features

NOARG = pytest.param(False, id="no-arg")  # a baselines function called without the inputs


def close(a, b, tol=1e-5):
    """``a`` equals ``b`` to ``tol``, relative and absolute."""
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def seeded_linear(n_in=4, n_out=3, seed=0, bias=True):
    """An ``nn.Linear`` with seeded normal weights (and bias), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        m.weight.copy_(torch.randn(n_out, n_in, generator=g))
        if bias:
            m.bias.copy_(torch.randn(n_out, generator=g))
    return m.eval()


def seeded_mlp(n_out=3, seed=0):
    """4 -> 5 -> ``n_out`` with a Softplus between: smooth, so every gradient method is defined."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Softplus(), nn.Linear(5, n_out)).eval()


class Add(nn.Module):
    """An addition as a module, so LRP can give it a rule."""

    def forward(self, a, b):
        return a + b


class Bytes(nn.Module):
    """A model that takes uint8 images and scales them itself, as many deployed pipelines do."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.Softplus()
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x.float() / 255)).flatten(1))


def bytes_model_and_images():
    """:class:`Bytes` and two seeded 4x4 uint8 images."""
    return Bytes().eval(), torch.randint(0, 256, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0),
                                         dtype=torch.uint8)
