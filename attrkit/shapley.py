"""Cooperative-game attributions, fitted on switched-off features.

A *coalition* is a set of features kept at their input values; the others take their baseline values.

* :class:`ShapleyValueSampling` — average marginal contributions over random feature orders.
* :class:`ShapleyValues` — the exact Shapley values, from every coalition (up to 20 features).
* :class:`Lasso`, :class:`Ridge`, :class:`LinearRegression` — the weighted linear surrogates (from
  :mod:`attrkit.surrogates`) of the local surrogate methods, fitted for every example at once.

The local surrogate methods (``Lime``, ``KernelShap``, ``LimeBase``) live in :mod:`attrkit.lime`; they
are importable from here too, as before.

Evaluation is batched as in :mod:`attrkit.perturbation` (``perturbations_per_eval``,
``max_batch_memory_mb`` / ``ATTRKIT_BATCH_MEMORY_MB``, ``show_progress``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import _batching
from . import _plumbing as plumbing
from ._batching import PerturbationOptions, evaluate_with_reference, feature_masks, progress_label, spread_units
from .base import PerturbationAttribution
from .lime import KernelShap, Lime, LimeBase  # noqa: F401  (their home before attrkit.lime; kept out of __all__)
from .surrogates import Lasso, LinearRegression, Ridge, get_exp_kernel_similarity_function, solver_dtype

__all__ = ["ShapleyValueSampling", "ShapleyValues", "LinearRegression", "Ridge", "Lasso",
           "get_exp_kernel_similarity_function"]


# --------------------------------------------------------------------------- Shapley values
class ShapleyValueSampling(PerturbationAttribution):
    r"""Shapley value sampling: for ``n_samples`` random orders of the features, add them one by one to
    the baseline and credit each with the output change it causes; average over the orders.

    Strumbelj & Kononenko (2010), *An Efficient Explanation of Individual Classifications using Game
    Theory*, https://www.jmlr.org/papers/v11/strumbelj10a.html . The orders are drawn as Captum draws them
    (one ``torch.randperm`` per sample), so on the CPU the same seed gives Captum's result.

    Example:
        >>> import torch
        >>> from attrkit import ShapleyValueSampling
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.rand(2, 4)
        >>> attr = ShapleyValueSampling(model).attribute(x, n_samples=5)
        >>> torch.allclose(attr, x * model.weight.detach(), atol=1e-6)  # exact for a linear model
        True
    """

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  n_samples: int = 25, perturbations_per_eval: int | None = None, show_progress: bool | None = None,
                  max_batch_memory_mb: float | None = None):
        """Arguments as in :meth:`attrkit.FeatureAblation.attribute`; feature ids in ``feature_mask`` run
        from 0 to (number of features - 1); ``n_samples``: how many random feature orders.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first; in a tuple, inputs after the first
                may have a first dimension of their own (sparse ids, as in Captum: see :mod:`attrkit.perturbation`).
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            perturbations_per_eval: perturbed copies per forward pass; None sizes it from the memory budget.
            show_progress: a ``tqdm`` bar: True, False, or None (automatic in notebooks for long runs).
            max_batch_memory_mb: the memory budget for the perturbed inputs of one forward pass.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import ShapleyValueSampling
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> ShapleyValueSampling(model).attribute(x, target=0, n_samples=4).shape
            torch.Size([2, 3])
        """
        n_samples = plumbing.check_positive_int(n_samples, "n_samples")
        game = _Game(self.forward_func, inputs, baselines, target, additional_forward_args, feature_mask)
        orders = torch.stack([torch.randperm(game.n_features, device=game.device) for _ in range(n_samples)])
        ranks = orders.argsort(1)  # ranks[s, f]: when feature f joins in order s

        def coalitions(units: Tensor) -> Tensor:  # unit = (order s, step j): the first j + 1 features of s
            return ranks[units // game.n_features] <= (units % game.n_features).unsqueeze(1)

        options = PerturbationOptions(perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self))
        empty, values = game.play(coalitions, n_samples * game.n_features, options)
        values = values.reshape(n_samples, game.n_features, values.shape[1])
        values = torch.cat([empty.expand(n_samples, 1, -1), values], 1)
        steps = values.diff(dim=1)  # the output change at each step of each order
        shapley = steps.gather(1, ranks.unsqueeze(-1).expand_as(steps)).mean(0)  # (features, outputs)
        return game.spread(shapley.T)

    def attribute_future(self, *args, **kwargs) -> torch.futures.Future:
        """:meth:`attribute` with a Future-returning ``forward_func``; a Future of the attributions (as Captum)."""
        return _batching.attribute_future(self, *args, **kwargs)


class ShapleyValues(ShapleyValueSampling):
    r"""Exact Shapley values: :math:`\phi_i = \sum_{S \not\ni i} \frac{|S|!(n-|S|-1)!}{n!}(v(S \cup i) - v(S))`,
    from the model's output on all :math:`2^n` coalitions (Captum averages over all :math:`n!` orders: the
    same numbers, far more evaluations). Refuses more than ``max_features`` features (default 20: a
    million forward passes per example); use :class:`ShapleyValueSampling` or a coarser ``feature_mask``.

    Shapley (1953), *A Value for n-Person Games*, https://doi.org/10.1515/9781400881970-018

    Example:
        >>> import torch
        >>> from attrkit import ShapleyValues
        >>> model = lambda x: x.prod(1)  # a pure interaction: the credit is shared equally
        >>> ShapleyValues(model).attribute(torch.tensor([[2.0, 3.0]]))
        tensor([[3., 3.]])
    """

    max_features = 20

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval: int | None = None, show_progress: bool | None = None,
                  max_batch_memory_mb: float | None = None):
        """Arguments as in :meth:`ShapleyValueSampling.attribute`, without ``n_samples``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first; in a tuple, inputs after the first
                may have a first dimension of their own (sparse ids, as in Captum: see :mod:`attrkit.perturbation`).
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            feature_mask: integer tensor(s) broadcastable to each input; features with equal ids are perturbed
                together.
            perturbations_per_eval: perturbed copies per forward pass; None sizes it from the memory budget.
            show_progress: a ``tqdm`` bar: True, False, or None (automatic in notebooks for long runs).
            max_batch_memory_mb: the memory budget for the perturbed inputs of one forward pass.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import ShapleyValues
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> ShapleyValues(model).attribute(x, target=0).shape
            torch.Size([2, 3])
        """
        game = _Game(self.forward_func, inputs, baselines, target, additional_forward_args, feature_mask)
        n = game.n_features
        if n > self.max_features:
            raise ValueError(
                f"ShapleyValues needs the model's output on all 2**{n} coalitions of the {n} features in "
                f"`inputs`/`feature_mask` (at most {self.max_features} allowed; hours of work beyond that). Group "
                f"features with `feature_mask`, or use ShapleyValueSampling."
            )
        bits = 2 ** torch.arange(n, device=game.device)

        def coalitions(units: Tensor) -> Tensor:  # unit = coalition number c: bit f says feature f is in
            return (units.unsqueeze(1) & bits) > 0

        options = PerturbationOptions(perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self))
        _, values = game.play(coalitions, 2**n, options)
        dtype = solver_dtype(values)
        size = torch.arange(n + 1, device=game.device, dtype=dtype)
        log_factorial = torch.lgamma(size + 1)
        # weight[t] = t! (n - 1 - t)! / n!: of a coalition with t players other than i, with or without i
        weight = torch.exp(log_factorial[:-1] + log_factorial.flip(0)[1:] - log_factorial[n])
        shapley = torch.zeros(n, values.shape[1], dtype=dtype, device=game.device)
        for start in range(0, 2**n, 2**16):
            members = coalitions(torch.arange(start, min(start + 2**16, 2**n), device=game.device))
            s = members.sum(1, keepdim=True)  # v(S) counts + for every i in S, - for every i outside
            signed = torch.where(members, weight[(s - 1).clamp(min=0)], -weight[s.clamp(max=n - 1)])
            shapley += signed.T @ values[start:start + len(members)].to(dtype)
        return game.spread(shapley.T.to(values.dtype))


class _Game:
    """The cooperative game of a batch: features (``feature_mask`` ids 0..n-1) switched between baseline
    and input; ``play`` evaluates coalitions, ``spread`` turns per-feature values into attributions."""

    def __init__(self, forward_func, inputs, baselines, target, additional_forward_args, feature_mask):
        self.forward_func = forward_func
        self.xs, self.is_tuple = plumbing.as_tuple(inputs, non_batch=True)
        self.bs = plumbing.format_baselines(baselines, self.xs)
        self.masks, _, self.n_features = feature_masks(feature_mask, self.xs, ids="0..n-1")
        self.device = self.xs[0].device
        self.target, self.args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)

    def play(self, coalitions: Callable[[Tensor], Tensor], n_units, options: PerturbationOptions
             ) -> tuple[Tensor, Tensor]:
        """The model's output on the empty coalition (the baselines), ``(outputs,)``, and on the coalitions
        ``coalitions(units) -> (k, n_features) bool``, ``(n_units, outputs)``; integer outputs as floats."""
        def build(units: range):
            members = coalitions(torch.arange(units.start, units.stop, device=self.device))
            return tuple(torch.where(members[:, m], x.unsqueeze(0), b.unsqueeze(0)).flatten(0, 1)
                         for x, b, m in zip(self.xs, self.bs, self.masks))

        empty, values = evaluate_with_reference(self.forward_func, self.bs, build, n_units, self.target, self.args,
                                                options, self.masks)
        self.output_shape = empty.shape
        return plumbing.floating(empty).reshape(-1), plumbing.floating(values)

    def spread(self, values: Tensor):
        """Attributions of every output: ``(n, *input)``, or ``(n, *per-example output, *input)`` for a model
        with several outputs per example (Captum's shape for Shapley values with ``target=None``)."""
        attrs = spread_units(values, self.masks, self.xs)
        n, shape = plumbing.batch_size_of(self.xs), self.output_shape
        if len(shape) > 1 and shape[0] == n and shape[1:].numel() > 1:
            attrs = tuple(a.reshape(n, *shape[1:], *a.shape[1:]) for a in attrs)
        return plumbing.restore(attrs, self.is_tuple)
