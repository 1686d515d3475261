"""Weighted linear surrogate models for LIME and KernelSHAP, in torch, fitted for many examples at once.

* :class:`LinearRegression` — weighted least squares (KernelSHAP's surrogate);
* :class:`Ridge` — with an L2 penalty;
* :class:`Lasso` — with an L1 penalty (LIME's default, ``alpha=0.01`` as in Captum);
* :func:`get_exp_kernel_similarity_function` — LIME's sample weights (also exported by :mod:`attrkit.shapley`).

Each solves sklearn's problem with sample weights and an intercept: ``solve(X, y, w)`` takes ``X``
``(B, samples, features)``, ``y`` and ``w`` ``(B, samples)`` and returns the coefficients ``(B, features)``.
``fit(dataloader)`` / ``representation()`` are Captum's interpretable-model interface, so these work in
Captum's ``Lime`` too, and any object with that interface works as attrkit's ``interpretable_model``; so does
a scikit-learn-style estimator (``fit(X, y, sample_weight=...)`` and ``coef_``), which gets numpy arrays.
Computations run in float64 (float32 on MPS, which has no float64) on the data's device, whatever the
model's dtype: a float16 model's samples and weights are fitted in float64 too (Captum fits in float32).
An infinite sample weight (KernelSHAP's 10^6 weight on the empty and full coalitions overflows float16)
counts as 10^6 times the largest finite weight, the constraint it stands for.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from . import _plumbing as plumbing

__all__ = ["LinearRegression", "Ridge", "Lasso", "get_exp_kernel_similarity_function"]


def solver_dtype(like: Tensor) -> torch.dtype:
    return torch.float32 if like.device.type == "mps" else torch.float64


class LinearRegression:
    """Weighted least squares with an intercept (``sklearn.linear_model.LinearRegression``'s fit; the
    minimum-norm solution when there are fewer samples than features). The KernelSHAP surrogate.

    ``solve(X, y, w)`` fits a batch of problems at once: ``X`` ``(B, samples, features)``, ``y`` and ``w``
    ``(B, samples)``; returns the coefficients ``(B, features)``. ``fit(dataloader)`` and
    ``representation()`` are Captum's interpretable-model interface.
    """

    def solve(self, X: Tensor, y: Tensor, w: Tensor) -> Tensor:
        Xc, yc, w = _centred(X, y, w)
        root = w.sqrt().unsqueeze(-1)
        return (torch.linalg.pinv(root * Xc) @ (root * yc.unsqueeze(-1))).squeeze(-1)

    def fit(self, train_data, **kwargs):
        X, y, w = (torch.cat(parts) for parts in zip(*[_with_weights(batch) for batch in train_data]))
        self.coef_ = self.solve(X[None], y.reshape(1, -1), w.reshape(1, -1)).to(X.dtype)
        return {}

    def representation(self) -> Tensor:
        return self.coef_.reshape(1, -1)


class Ridge(LinearRegression):
    """Weighted ridge regression: minimises ``sum_i w_i (y_i - x_i.c - b)^2 + alpha |c|^2`` (as sklearn's Ridge)."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def solve(self, X, y, w):
        Xc, yc, w = _centred(X, y, w)
        gram = Xc.transpose(1, 2) @ (w.unsqueeze(-1) * Xc) + self.alpha * torch.eye(X.shape[-1], dtype=Xc.dtype,
                                                                                   device=X.device)
        return torch.linalg.solve(gram, (Xc.transpose(1, 2) @ (w * yc).unsqueeze(-1))).squeeze(-1)


class Lasso(LinearRegression):
    """Weighted Lasso: minimises ``sum_i w_i (y_i - x_i.c - b)^2 / (2 sum_i w_i) + alpha |c|_1`` (sklearn's
    Lasso objective with sample weights) by accelerated proximal gradient (FISTA, with restarts), until the
    duality gap is below ``tol`` times the weighted variance of ``y`` — sklearn's stopping rule. LIME's
    default surrogate, with ``alpha=0.01`` as in Captum."""

    def __init__(self, alpha: float = 1.0, max_iter: int = 10000, tol: float = 1e-4):
        self.alpha, self.max_iter, self.tol = alpha, max_iter, tol

    def solve(self, X, y, w):
        Xc, yc, w = _centred(X, y, w)
        w = (w / w.sum(1, keepdim=True)).unsqueeze(-1)
        gram, corr = Xc.transpose(1, 2) @ (w * Xc), (Xc.transpose(1, 2) @ (w * yc.unsqueeze(-1))).squeeze(-1)
        variance = (w.squeeze(-1) * yc.square()).sum(1)
        step = 1 / float(torch.linalg.eigvalsh(gram)[:, -1].max().clamp(min=1e-12))  # one step for all problems
        shift = (step * corr).unsqueeze(1)  # rows (B, 1, features): each iteration is four tensor operations
        coef = point = torch.zeros_like(shift)
        momentum = 1.0
        for it in range(self.max_iter):
            new = torch.nn.functional.softshrink(torch.baddbmm(point + shift, point, gram, alpha=-step),
                                                 step * self.alpha)
            next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            point, previous, coef = torch.lerp(coef, new, 1 + (momentum - 1) / next_momentum), coef, new
            momentum = next_momentum
            if it % 10 == 9:
                if (self._gap(gram, corr, variance, coef.squeeze(1)) <= self.tol * variance).all():
                    break
                if ((point - coef) * (coef - previous)).sum() < 0:  # overshooting: restart the momentum
                    point, momentum = coef, 1.0
        return coef.squeeze(1)

    def _gap(self, gram, corr, variance, coef):
        """Primal minus dual objective (both per unit weight), with the dual point scaled to be feasible."""
        fitted = (coef * _times(gram, coef)).sum(1)
        explained = (corr * coef).sum(1)
        residual = variance - 2 * explained + fitted  # |y - X c|^2
        scale = (self.alpha / (corr - _times(gram, coef)).abs().amax(1).clamp(min=1e-300)).clamp(max=1.0)
        primal = residual / 2 + self.alpha * coef.abs().sum(1)
        dual = scale * (variance - explained) - scale**2 * residual / 2
        return primal - dual


def _times(matrix: Tensor, vectors: Tensor) -> Tensor:
    return (matrix @ vectors.unsqueeze(-1)).squeeze(-1)


def _finite_weights(w: Tensor) -> Tensor:
    """Infinite weights (a large weight that overflowed a low-precision dtype) -> 10^6 times the largest
    finite weight of their problem (1 if there is none)."""
    infinite = torch.isinf(w)
    largest = torch.where(infinite, 0, w).amax(-1, keepdim=True).clamp(min=1.0) if w.numel() else w
    return torch.where(infinite, 1e6 * largest, w)


def _centred(X: Tensor, y: Tensor, w: Tensor):
    dtype = solver_dtype(X)
    X, y, w = X.to(dtype), y.to(dtype), _finite_weights(w.to(dtype))
    total = w.sum(1, keepdim=True)
    X_mean = (w.unsqueeze(-1) * X).sum(1, keepdim=True) / total.unsqueeze(-1)
    y_mean = (w * y).sum(1, keepdim=True) / total
    return X - X_mean, y - y_mean, w


def _with_weights(batch):
    x, y, *rest = batch
    return x, y.reshape(-1), (rest[0] if rest else torch.ones(len(y), device=x.device)).reshape(-1)


def fit_surrogate(model, X: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Coefficients ``(B, features)``: batched for attrkit's surrogates; otherwise one fit per problem, in
    float32 at least: Captum's interface (``fit(DataLoader)``, ``representation()``) or a scikit-learn-style
    estimator (``fit(X, y, sample_weight=w)`` on numpy arrays, then ``coef_``)."""
    # coefficients in the outputs' floating dtype (a model with integer outputs still has fractional ones)
    out_dtype = y.dtype if y.is_floating_point() else torch.get_default_dtype()
    if hasattr(model, "solve"):
        return model.solve(X, y, w).to(out_dtype)
    fit_dtype = torch.promote_types(y.dtype, torch.float32)
    X, y32, w = X.to(fit_dtype), y.to(fit_dtype), _finite_weights(w.to(fit_dtype))
    coefs = []
    for Xb, yb, wb in zip(X, y32, w):
        if _sklearn_style(model):  # a numpy estimator: the arrays go to the CPU because it can only read those
            model.fit(Xb.detach().cpu().numpy(), yb.detach().cpu().numpy(), sample_weight=wb.detach().cpu().numpy())
            coef = model.coef_
        else:
            model.fit(DataLoader(TensorDataset(Xb, yb, wb), batch_size=len(yb)))
            coef = model.representation()
        coefs.append(torch.as_tensor(coef).reshape(-1).to(device=y.device, dtype=out_dtype))
    return torch.stack(coefs)


def _sklearn_style(model) -> bool:
    """A scikit-learn-style estimator: no ``representation()``, a ``fit`` that takes ``sample_weight``."""
    if hasattr(model, "representation"):
        return False
    try:
        return "sample_weight" in inspect.signature(model.fit).parameters
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- LIME's sample weights
def get_exp_kernel_similarity_function(distance_mode: str = "cosine", kernel_width: float = 1.0) -> Callable:
    """LIME's similarity ``exp(-d^2 / (2 kernel_width^2))``, ``d`` the cosine distance (or Euclidean) between
    the flattened input and the perturbed input. Called as ``f(original, perturbed, interpretable_sample)``.

    Example:
        >>> import torch
        >>> from attrkit import get_exp_kernel_similarity_function
        >>> similarity = get_exp_kernel_similarity_function("euclidean", kernel_width=2.0)
        >>> round(similarity(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])), 4)  # exp(-25 / 8)
        0.0439
    """
    plumbing.check_choice(distance_mode, "distance_mode", ("cosine", "euclidean"))

    def similarity(original, perturbed, _sample=None, **kwargs):
        a = torch.cat([t.flatten() for t in plumbing.as_tuple(original)[0]]).unsqueeze(0)
        b = torch.cat([t.flatten() for t in plumbing.as_tuple(perturbed)[0]]).unsqueeze(0)
        return float(_exp_kernel(a, b, distance_mode, kernel_width)[0])

    similarity.distance_mode, similarity.kernel_width = distance_mode, kernel_width
    return similarity


def _exp_kernel(original: Tensor, perturbed: Tensor, distance_mode: str, kernel_width: float) -> Tensor:
    """Row by row: ``original`` ``(rows, d)`` against ``perturbed`` ``(..., rows, d)``."""
    if distance_mode == "cosine":
        dot = (original * perturbed).sum(-1)
        norms = (original.square().sum(-1) * perturbed.square().sum(-1)).clamp(min=1e-16).sqrt()
        distance = 1 - dot / norms
    else:
        distance = (original - perturbed).norm(dim=-1)
    return torch.exp(-distance**2 / (2 * kernel_width**2))
