"""The classifier that turns concept activations into CAVs: the abstract :class:`Classifier` and a linear
:class:`DefaultClassifier` trained in torch (on the activations' device)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["Classifier", "DefaultClassifier"]


class Classifier(ABC):
    """What TCAV needs from a concept classifier.

    ``train_and_eval(dataloader, **kwargs)`` trains on ``(activations, labels)`` batches (labels are concept
    ids) and may return a dict of statistics (e.g. ``{"accs": ...}``); ``weights()`` returns a ``C x F`` tensor,
    one row per class, in the order of ``classes()``. Row ``k`` is the CAV of concept ``classes()[k]``.
    """

    @abstractmethod
    def __init__(self) -> None: ...

    @abstractmethod
    def train_and_eval(self, dataloader, **kwargs) -> dict | None: ...

    @abstractmethod
    def weights(self) -> Tensor: ...

    @abstractmethod
    def classes(self) -> list[int]: ...


class DefaultClassifier(Classifier):
    r"""A linear classifier for CAVs: an L2-regularised linear SVM (one-vs-rest for more than two concepts)
    with the squared hinge loss, :math:`\frac{1}{n}\sum_i \max(0, 1 - s_i(w^\top x_i + b))^2 +
    \frac{\alpha}{2}\lVert w\rVert^2`, solved exactly in torch on the activations' device: the optimal
    :math:`w` is a combination of the examples (:math:`w = X^\top\beta`), so a finite Newton method
    (Keerthi & DeCoste, 2005) works on the ``n x n`` Gram matrix, however wide the layer. A seeded shuffle
    holds out ``test_split_ratio`` of the examples to measure the accuracy.

    Captum's default fits scikit-learn's ``SGDClassifier(alpha=0.01)`` (hinge loss, stochastic gradient
    descent) on the CPU; its direction varies from one shuffle to the next. This one solves a smooth convex
    problem to convergence, so the same examples and ``seed`` give the same CAV, and needs no scikit-learn.
    What it returns matches Captum's: ``weights()`` is ``C x F``, with the rows ``[-w, w]`` for two concepts
    (``w`` points from the first class to the second), ``classes()`` the sorted concept ids, and
    ``train_and_eval`` returns ``{"accs": test accuracy}``.

    Example:
        >>> import torch
        >>> from attrkit.concept import DefaultClassifier
        >>> x = torch.cat([torch.randn(20, 5) + 2, torch.randn(20, 5) - 2])
        >>> y = torch.tensor([0] * 20 + [1] * 20)
        >>> clf = DefaultClassifier()
        >>> stats = clf.train_and_eval([(x, y)])
        >>> clf.weights().shape, list(clf.classes()), float(stats["accs"])
        (torch.Size([2, 5]), [0, 1], 1.0)
    """

    def __init__(self, alpha: float = 0.01, max_iter: int = 100, seed: int = 0) -> None:
        self.alpha, self.max_iter, self.seed = alpha, max_iter, seed
        self._weights: Tensor | None = None
        self._classes: Tensor | None = None

    def train_and_eval(self, dataloader, test_split_ratio: float = 0.33, **kwargs) -> dict:
        if not 0 <= test_split_ratio < 1:
            raise ValueError(f"`test_split_ratio` must be in [0, 1), got {test_split_ratio}.")
        x, y = _collect(dataloader)
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(y), generator=generator).to(y.device)
        n_test = int(test_split_ratio * len(y))
        test, train = order[:n_test], order[n_test:]
        self._classes = torch.unique(y[train])
        if len(self._classes) < 2:
            raise ValueError("the classifier's train split holds a single concept; give each concept more "
                             "examples or a smaller `test_split_ratio`.")
        w, b = self._fit(x[train], y[train])
        self._weights, self._bias = w, b
        if n_test == 0:
            return {"accs": torch.tensor(float("nan"))}
        predicted = self._predict(x[test])
        return {"accs": (predicted == y[test]).float().mean()}

    def _fit(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One-vs-rest linear SVMs (one for two classes: the second class is positive)."""
        positives = self._classes[1:] if len(self._classes) == 2 else self._classes
        dtype = torch.float32 if x.device.type == "mps" else torch.float64     # MPS has no float64
        xd = x.to(dtype)
        gram = xd @ xd.T
        fits = [_squared_hinge_svm(gram, (y == c).to(dtype) * 2 - 1, self.alpha, self.max_iter) for c in positives]
        w = torch.stack([xd.T @ beta for beta, _ in fits]).to(x.dtype)
        return w, torch.stack([b for _, b in fits]).to(x.dtype)

    def _predict(self, x: Tensor) -> Tensor:
        scores = x @ self._weights.T + self._bias
        if len(self._classes) == 2:
            return self._classes[(scores[:, 0] > 0).long()]
        return self._classes[scores.argmax(1)]

    def weights(self) -> Tensor:
        if self._weights is None:
            raise RuntimeError("DefaultClassifier.weights(): call `train_and_eval` first.")
        return torch.cat([-self._weights, self._weights]) if self._weights.shape[0] == 1 else self._weights

    def classes(self) -> list[int]:
        if self._classes is None:
            raise RuntimeError("DefaultClassifier.classes(): call `train_and_eval` first.")
        return self._classes.tolist()


def _squared_hinge_svm(gram: Tensor, s: Tensor, alpha: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Minimise mean(max(0, 1 - s * (K beta + b))^2) + alpha/2 beta'K beta over (beta, b): on the examples
    inside the margin (the active set) the loss is quadratic, and its minimiser solves one linear system
    (``[[K_AA + n alpha/2 I, 1], [1', 0]]``); a halving line search keeps every step downhill, and the method
    stops when a full step leaves the active set unchanged (the exact optimum)."""
    n = len(s)
    ridge = n * alpha / 2

    def objective(beta, b):
        f = gram @ beta + b
        return (1 - s * f).clamp_min(0).pow(2).mean() + alpha / 2 * beta @ gram @ beta

    beta, b = torch.zeros_like(s), torch.zeros((), dtype=s.dtype, device=s.device)
    active = torch.ones(n, dtype=torch.bool, device=s.device)
    for _ in range(max_iter):
        idx = active.nonzero().squeeze(1)
        m = len(idx)
        if m == 0:
            break
        system = torch.zeros(m + 1, m + 1, dtype=s.dtype, device=s.device)
        system[:m, :m] = gram[idx][:, idx] + ridge * torch.eye(m, dtype=s.dtype, device=s.device)
        system[:m, m] = system[m, :m] = 1
        solution = torch.linalg.solve(system, torch.cat([s[idx], s.new_zeros(1)]))
        target_beta = torch.zeros_like(s).index_put((idx,), solution[:m])
        step, start = 1.0, objective(beta, b)
        while True:
            new_beta, new_b = beta + step * (target_beta - beta), b + step * (solution[m] - b)
            if objective(new_beta, new_b) <= start or step < 1e-6:
                break
            step /= 2
        beta, b = new_beta, new_b
        now_active = s * (gram @ beta + b) < 1
        if step == 1.0 and torch.equal(now_active, active):
            break
        active = now_active
    return beta, b


def _collect(dataloader) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for x, y in dataloader:
        xs.append(x.reshape(len(x), -1))
        ys.append(y.reshape(-1))
    if not xs:
        raise ValueError("the classifier got no examples (`dataloader` is empty).")
    return torch.cat(xs), torch.cat(ys).to(xs[0].device)
