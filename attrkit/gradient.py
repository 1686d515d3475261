"""The gradient family: a gradient at a point, along a path, or at random points.

* :class:`Saliency` — the gradient at the input.
* :class:`InputXGradient` — the gradient times the input.
* :class:`IntegratedGradients` — the path integral of gradients from a baseline.
* :class:`GradientShap` — gradients at random points between inputs and baselines
  drawn from a distribution (an expectation of Integrated Gradients).

:func:`path_integral` is the one integral in attrkit; layer and neuron methods
reuse it with a different gradient function.
"""
from __future__ import annotations

import warnings
from typing import Callable

import os

import torch
from torch import Tensor

from . import _plumbing as plumbing
from ._batching import megabytes
from .base import GradientAttribution
from .noise_tunnel import NoiseTunnel


class Saliency(GradientAttribution):
    r"""Vanilla gradient saliency: :math:`\partial F / \partial x`, absolute by default.

    Simonyan, Vedaldi & Zisserman (2013), *Deep Inside Convolutional Networks*,
    https://arxiv.org/abs/1312.6034

    Example:
        >>> import torch
        >>> from attrkit import Saliency
        >>> model = torch.nn.Linear(3, 2)
        >>> Saliency(model).attribute(torch.rand(4, 3), target=1).shape
        torch.Size([4, 3])
    """

    def attribute(self, inputs, target=None, abs: bool = True, additional_forward_args=None):
        """The gradient of the target output at ``inputs``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            abs: return the gradient's absolute value (the paper's saliency); False keeps its sign.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import Saliency
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> Saliency(model).attribute(x, target=1).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        grads = self.gradient_func(self.forward_func, xs, target, args)
        return plumbing.restore(tuple(g.abs() if abs else g for g in grads), is_tuple)


class InputXGradient(GradientAttribution):
    r"""Gradient times input: :math:`x \odot \partial F / \partial x`.

    Shrikumar et al. (2016), *Not Just a Black Box*, https://arxiv.org/abs/1605.01713

    Example:
        >>> import torch
        >>> from attrkit import InputXGradient
        >>> model = torch.nn.Linear(3, 1)
        >>> InputXGradient(model).attribute(torch.ones(1, 3)).shape
        torch.Size([1, 3])
    """

    _multiplies_by_inputs = True

    def attribute(self, inputs, target=None, additional_forward_args=None):
        """The gradient of the target output times ``inputs``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import InputXGradient
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> InputXGradient(model).attribute(x, target=0).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        grads = self.gradient_func(self.forward_func, xs, target, args)
        return plumbing.restore(tuple(x * g for x, g in zip(xs, grads)), is_tuple)


def path_integral(
    grad_fn: Callable, inputs: tuple, baselines: tuple, method: str, n_steps: int, target, args: tuple,
    internal_batch_size: int | None = None,
) -> tuple[Tensor, ...]:
    r"""Approximate :math:`\int_0^1 G(b + \alpha (x - b))\, d\alpha` with ``n_steps`` points.

    ``grad_fn(points, target, args)`` returns a tuple of tensors whose rows follow
    ``points`` (step-major: all examples at step 0, then step 1, ...). Steps are
    evaluated ``internal_batch_size`` rows at a time; the result does not depend on
    the batch size.
    """
    weights, alphas = plumbing.integration_rule(method, n_steps)
    n = plumbing.batch_size_of(inputs)
    total = None
    for steps, grads in path_steps(grad_fn, inputs, baselines, alphas, target, args, internal_batch_size):
        w = plumbing.step_weights_tensor([weights[k] for k in steps], grads[0])
        part = tuple(plumbing.weighted_step_sum(g, w, n) for g in grads)
        total = part if total is None else tuple(t + p for t, p in zip(total, part))
    return total


def path_steps(
    fn: Callable, inputs: tuple, baselines: tuple, alphas, target, args: tuple, internal_batch_size: int | None = None,
):
    """Walk the straight path from ``baselines`` to ``inputs``: yield ``(steps, fn(points, target, args))``
    for consecutive groups of ``steps`` (indices into ``alphas``), ``internal_batch_size`` rows at a time.

    Without ``internal_batch_size`` the steps are split to fit a memory budget
    (:func:`steps_per_pass`): the first step runs alone and measures what autograd keeps
    for its backward pass, the others follow in groups that fit (IG with 200 steps on ResNet-18 needs ~5 GB
    in one pass). Rows of the points (and of what ``fn`` returns) are step-major; integer inputs (uint8 images)
    are interpolated in floating point. :func:`path_integral` reduces the walk with quadrature weights; layer
    conductance reduces it with differences between consecutive steps.
    """
    n = plumbing.batch_size_of(inputs)

    def run(steps: range):
        points = plumbing.path_points(inputs, baselines, [alphas[k] for k in steps])
        with plumbing.integer_inputs_explained(inputs):
            return fn(points, plumbing.expand_target(target, len(steps)), plumbing.expand_args(args, len(steps)))

    if internal_batch_size is not None or len(alphas) == 1:
        for steps in plumbing.chunks(len(alphas), n, internal_batch_size):
            yield steps, run(steps)
        return
    with SavedBytes() as saved:
        first = run(range(1))
    yield range(1), first
    per_pass = steps_per_pass(saved.bytes, len(alphas) - 1)
    for start in range(1, len(alphas), per_pass):
        steps = range(start, min(start + per_pass, len(alphas)))
        yield steps, run(steps)


GRADIENT_MEMORY_ENV = "ATTRKIT_GRADIENT_MEMORY_MB"
DEFAULT_GRADIENT_MEMORY_MB = 1024.0


class SavedBytes:
    """Bytes autograd keeps for the backward pass while the block runs (each storage counted once): the
    activation memory of a gradient pass, measured on any model (``torch.autograd.graph.saved_tensors_hooks``)."""

    def __init__(self):
        self.bytes, self._seen = 0, set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: Tensor):
        try:
            storage = t.untyped_storage()
            key, size = (t.device, storage.data_ptr()), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor without a plain storage (sparse, a wrapper)
            key, size = id(t), t.numel() * t.element_size()
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += size
        return t

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._seen.clear()
        return self._hooks.__exit__(*exc)


def steps_per_pass(bytes_per_step: int, n_steps: int) -> int:
    """How many integration steps (each one pass over the batch) fit the gradient memory budget:
    ``ATTRKIT_GRADIENT_MEMORY_MB`` (default 1024) of activations kept for the backward pass."""
    mb = megabytes(os.environ.get(GRADIENT_MEMORY_ENV, DEFAULT_GRADIENT_MEMORY_MB), GRADIENT_MEMORY_ENV)
    return int(min(max(n_steps, 1), max(1, mb * 2**20 // max(bytes_per_step, 1))))



class IntegratedGradients(GradientAttribution):
    r"""Integrated Gradients: :math:`(x - b) \odot \int_0^1 \partial F(b + \alpha(x - b)) / \partial x \, d\alpha`.

    Attributions add up to :math:`F(x) - F(b)` (completeness); the convergence
    delta measures how far the numerical integral is from that.

    Sundararajan, Taly & Yan (2017), *Axiomatic Attribution for Deep Networks*,
    https://arxiv.org/abs/1703.01365

    Args:
        forward_func: the model or any callable.
        multiply_by_inputs: multiply the integrated gradient by ``inputs - baselines``
            (the paper's definition). ``False`` gives the "local" integrated gradient.

    A deliberate departure from Captum: with ``method="riemann_trapezoid"`` the step weights
    sum to 1 here and to (n - 1)/n in Captum, so results are Captum's times n / (n - 1) for
    ``n_steps`` = n (every method built on this integral shares it); the other methods agree.

    ``n_steps="auto"`` (an attrkit addition) doubles the steps from ``auto_start_steps`` (32) until every
    example's ``|delta| <= auto_rtol * |F(x) - F(b)| + auto_atol`` (5 % and 1e-5), up to ``auto_max_steps``
    (1024; beyond it a warning says the integral has not converged). The steps used are kept in
    ``last_n_steps`` and the last deltas in ``last_delta``; all four are attributes, set them on the instance
    to change them. The cost is at most about twice that of the final step count. The check needs the
    completeness property, so ``multiply_by_inputs=False`` cannot use it.

    Example:
        >>> import torch
        >>> from attrkit import IntegratedGradients
        >>> from attrkit.testing import ToyModel
        >>> ig = IntegratedGradients(ToyModel())
        >>> attr, delta = ig.attribute(torch.tensor([[1.0, 2.0, 3.0]]), target=0, return_convergence_delta=True)
        >>> bool(delta.abs().max() < 1e-3)
        True
        >>> attr = ig.attribute(torch.tensor([[1.0, 2.0, 3.0]]), torch.rand(1, 3), target=0, n_steps="auto")
        >>> ig.last_n_steps >= 32 and bool(ig.last_delta.abs().max() <= 0.05 * attr.sum().abs() + 1e-5)
        True
    """

    _has_convergence_delta = True
    auto_start_steps: int = 32
    auto_max_steps: int = 1024
    auto_rtol: float = 0.05
    auto_atol: float = 1e-5

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True):
        super().__init__(forward_func, multiply_by_inputs)
        self.last_n_steps: int | None = None
        self.last_delta: Tensor | None = None

    def attribute(
        self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps: int | str = 50,
        method: str = "gausslegendre", internal_batch_size: int | None = None, return_convergence_delta: bool = False,
    ):
        """Integrate the target's gradient along the straight path from ``baselines`` to ``inputs``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            n_steps: points on the path from baseline to input.
            method: the quadrature rule: ``"gausslegendre"`` or ``"riemann_left"``, ``"riemann_right"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size: path points evaluated per forward pass; None sizes the batches from the memory
                budget. The result does not depend on it.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); with
            ``return_convergence_delta=True``, ``(attributions, delta)`` with one delta per example.

        Example:
            >>> import torch
            >>> from attrkit import IntegratedGradients
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> attr, delta = IntegratedGradients(model).attribute(x, target=1, n_steps=64, return_convergence_delta=True)
            >>> bool(delta.abs().max() < 1e-2)
            True
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        if isinstance(n_steps, str):
            attrs, delta = self._auto_steps(n_steps, xs, bs, target, args, method, internal_batch_size)
            result = plumbing.restore(attrs, is_tuple)
            return (result, delta) if return_convergence_delta else result
        attrs = self._integrate(xs, bs, target, args, method, n_steps, internal_batch_size)
        self.last_n_steps, self.last_delta = n_steps, None
        result = plumbing.restore(attrs, is_tuple)
        return self._with_delta(result, return_convergence_delta, attrs, bs, xs, target, args)

    def _integrate(self, xs, bs, target, args, method, n_steps, internal_batch_size) -> tuple[Tensor, ...]:
        def grad_fn(points, t, a):
            return self.gradient_func(self.forward_func, points, t, a)

        grads = path_integral(grad_fn, xs, bs, method, n_steps, target, args, internal_batch_size)
        return times_change(grads, xs, bs) if self.multiplies_by_inputs else grads

    def _auto_steps(self, n_steps, xs, bs, target, args, method, internal_batch_size):
        """``n_steps="auto"``: double the steps until every delta is within tolerance (or the cap is reached)."""
        if n_steps != "auto":
            raise ValueError(f'`n_steps` must be a positive int or "auto"; got {n_steps!r}.')
        if not self.multiplies_by_inputs:
            raise ValueError('`n_steps="auto"` checks completeness, which needs multiply_by_inputs=True.')
        n = plumbing.check_positive_int(self.auto_start_steps, "auto_start_steps")
        while True:
            attrs = self._integrate(xs, bs, target, args, method, n, internal_batch_size)
            delta = self.compute_convergence_delta(attrs, bs, xs, target, args)
            gain = plumbing.sum_per_example(attrs).to(delta.dtype) - delta
            converged = bool((delta.abs() <= self.auto_rtol * gain.abs() + self.auto_atol).all())
            if converged or n >= self.auto_max_steps:
                break
            n = min(2 * n, self.auto_max_steps)
        self.last_n_steps, self.last_delta = n, delta
        if not converged:
            warnings.warn(f"Integrated Gradients has not converged at auto_max_steps={n}: the largest |delta| is "
                          f"{delta.abs().max().item():.3g} (tolerance {self.auto_rtol:.0%} of the output change).",
                          stacklevel=3)
        return attrs, delta


def times_change(grads: tuple, inputs: tuple, baselines: tuple) -> tuple[Tensor, ...]:
    """``grads * (inputs - baselines)``, the change taken in floating point (no uint8 wrap-around)."""
    return tuple(g * (plumbing.floating(x) - plumbing.floating(b)).to(g.dtype)
                 for g, x, b in zip(grads, inputs, baselines))


class InputBaselineXGradient(GradientAttribution):
    r"""The gradient at one random point between input and baseline, times
    ``inputs - baselines``: a one-sample estimate of Integrated Gradients.
    :class:`GradientShap` averages it over noise and baselines (Lundberg & Lee, 2017,
    https://arxiv.org/abs/1705.07874).

    Example:
        >>> import torch
        >>> from attrkit import InputBaselineXGradient
        >>> model = torch.nn.Linear(3, 1)  # linear: one random point is exact
        >>> attr, delta = InputBaselineXGradient(model).attribute(torch.rand(2, 3), torch.zeros(2, 3),
        ...                                                       return_convergence_delta=True)
        >>> bool(delta.abs().max() < 1e-5)
        True
    """

    _has_convergence_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True):
        super().__init__(forward_func, multiply_by_inputs)

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,
                  return_convergence_delta: bool = False):
        """The gradient at ``inputs`` times ``inputs - baselines``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); with
            ``return_convergence_delta=True``, ``(attributions, delta)`` with one delta per example.

        Example:
            >>> import torch
            >>> from attrkit import InputBaselineXGradient
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> InputBaselineXGradient(model).attribute(x, baselines=torch.zeros(1, 3), target=0).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        n = plumbing.batch_size_of(xs)
        alpha = torch.rand(n, device=xs[0].device)
        points = tuple(_point(x, b, alpha) for x, b in zip(xs, bs))
        with plumbing.integer_inputs_explained(xs, self.forward_func):
            grads = self.gradient_func(self.forward_func, points, target, args)
        attrs = times_change(grads, xs, bs) if self.multiplies_by_inputs else grads
        result = plumbing.restore(attrs, is_tuple)
        return self._with_delta(result, return_convergence_delta, attrs, bs, xs, target, args)


def _point(x: Tensor, b: Tensor, alpha: Tensor) -> Tensor:
    """``b + alpha * (x - b)`` with one alpha per example, in floating point (integer inputs too)."""
    x = plumbing.floating(x)
    b = plumbing.floating(b).to(x.dtype)
    return b + alpha.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) * (x - b)


class GradientShap(GradientAttribution):
    r"""GradientSHAP: expected gradients at random points between (noisy) inputs and
    baselines drawn from a reference distribution, times ``inputs - baselines``.

    It approximates SHAP values when the model is close to linear between inputs
    and baselines. Each example gets ``n_samples`` draws of (baseline, noise, alpha).

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*,
    https://arxiv.org/abs/1705.07874 ; Erion et al. (2019), *Learning Explainable
    Models Using Attribution Priors* (expected gradients), https://arxiv.org/abs/1906.10670

    Example:
        >>> import torch
        >>> from attrkit import GradientShap
        >>> from attrkit.testing import ToyModel
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> gs = GradientShap(ToyModel())
        >>> gs.attribute(torch.rand(2, 3), baselines=torch.rand(10, 3), n_samples=20, target=0).shape
        torch.Size([2, 3])
    """

    _has_convergence_delta = True

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool = True):
        super().__init__(forward_func, multiply_by_inputs)

    def attribute(self, inputs, baselines, n_samples: int = 5, stdevs=0.0, target=None,
                  additional_forward_args=None, return_convergence_delta: bool = False):
        """Average ``gradient * (inputs - baselines)`` at random points between noisy inputs and baselines drawn
        from ``baselines``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            n_samples: random samples drawn per example.
            stdevs: standard deviation of the Gaussian noise added to each sample: a float, or one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); with
            ``return_convergence_delta=True``, ``(attributions, delta)`` with one delta per example.

        Example:
            >>> import torch
            >>> from attrkit import GradientShap
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> GradientShap(model).attribute(x, baselines=torch.zeros(5, 3), n_samples=8, target=1).shape
            torch.Size([2, 3])
        """
        xs, _ = plumbing.as_tuple(inputs)
        distribution = plumbing.baseline_distribution(baselines, xs)
        single_point = InputBaselineXGradient(self.forward_func, self.multiplies_by_inputs)
        single_point.gradient_func = self.gradient_func
        return NoiseTunnel(single_point).attribute(
            inputs, nt_type="smoothgrad", nt_samples=plumbing.check_positive_int(n_samples, "n_samples"), stdevs=stdevs,
            draw_baseline_from_distrib=True, baselines=distribution if isinstance(inputs, tuple) else distribution[0],
            target=target, additional_forward_args=additional_forward_args,
            return_convergence_delta=return_convergence_delta,
        )
