"""Local surrogate models fitted on switched-off features: LIME and KernelSHAP.

A *coalition* is a set of features kept at their input values; the others take their baseline values.

* :class:`Lime` — a weighted linear model (Lasso by default) fitted to the model's outputs on random
  coalitions, weighted by closeness to the input; its coefficients are the attributions.
* :class:`KernelShap` — LIME with the Shapley kernel: its linear fit estimates Shapley values.
* :class:`LimeBase` — LIME with your own sampling and interpretable representation.

The surrogates (:class:`~attrkit.shapley.Lasso`, :class:`~attrkit.shapley.Ridge`,
:class:`~attrkit.shapley.LinearRegression`, from :mod:`attrkit.surrogates`) are fitted for every example at
once. Any object with Captum's ``fit(dataloader)`` / ``representation()`` also works as
``interpretable_model``. The Shapley value methods are in :mod:`attrkit.shapley`.

Evaluation is batched as in :mod:`attrkit.perturbation` (``perturbations_per_eval``,
``max_batch_memory_mb`` / ``ATTRKIT_BATCH_MEMORY_MB``, ``show_progress``).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor

from . import _plumbing as plumbing
from ._batching import (PerturbationOptions, evaluate_perturbations, feature_masks, format_feature_mask, output_mode,
                        progress_label, reference_output, spread_units, units_per_eval)
from .base import PerturbationAttribution
from .surrogates import Lasso, LinearRegression, _exp_kernel, fit_surrogate, get_exp_kernel_similarity_function

__all__ = ["LimeBase", "Lime", "KernelShap"]


class LimeBase(PerturbationAttribution):
    """LIME with everything open (Captum's ``LimeBase``): ``perturb_func(inputs, **kwargs)`` draws a sample
    (or is a generator of samples); ``from_interp_rep_transform(sample, inputs, **kwargs)`` turns an
    interpretable sample into a model input (``perturb_interpretable_space=True``), or
    ``to_interp_rep_transform(sample, inputs, **kwargs)`` the other way round; ``similarity_func(inputs,
    model_input, interpretable_sample, **kwargs)`` weights the sample. ``attribute`` returns the fitted
    surrogate's ``representation()``. Samples are drawn one by one; the model sees them in batches.

    Ribeiro, Singh & Guestrin (2016), *"Why Should I Trust You?"*, https://arxiv.org/abs/1602.04938
    """

    _multiplies_by_inputs = False

    def __init__(self, forward_func: Callable, interpretable_model, similarity_func: Callable,
                 perturb_func: Callable, perturb_interpretable_space: bool,
                 from_interp_rep_transform: Callable | None, to_interp_rep_transform: Callable | None):
        super().__init__(forward_func)
        needed = from_interp_rep_transform if perturb_interpretable_space else to_interp_rep_transform
        if needed is None:
            which = "from_interp_rep_transform" if perturb_interpretable_space else "to_interp_rep_transform"
            raise ValueError(f"`{which}` is required with perturb_interpretable_space={perturb_interpretable_space}.")
        self.interpretable_model = interpretable_model
        self.similarity_func, self.perturb_func = similarity_func, perturb_func
        self.perturb_interpretable_space = perturb_interpretable_space
        self.from_interp_rep_transform = from_interp_rep_transform
        self.to_interp_rep_transform = to_interp_rep_transform

    def attribute(self, inputs, target=None, additional_forward_args=None, n_samples: int = 50,
                  perturbations_per_eval: int | None = None, show_progress: bool | None = None,
                  max_batch_memory_mb: float | None = None, **kwargs):
        """Draw ``n_samples`` samples, evaluate the model on them in batches, fit the interpretable model;
        ``kwargs`` go to ``perturb_func``, the transforms and ``similarity_func``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first; passed as they are to
                ``perturb_func``, the transforms and ``similarity_func``.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            n_samples: how many samples to draw (calls of ``perturb_func``, or items of its generator).
            perturbations_per_eval: perturbed copies per forward pass; None sizes it from the memory budget.
            show_progress: a ``tqdm`` bar: True, False, or None (automatic in notebooks for long runs).
            max_batch_memory_mb: the memory budget for the perturbed inputs of one forward pass.
            **kwargs: passed on to ``perturb_func``, the transform and ``similarity_func`` (as Captum does).

        Returns:
            The fitted surrogate's ``representation()``: its coefficients, one per interpretable feature
            (``(1, n_interpretable_features)`` for a linear surrogate).

        Example:
            >>> import torch
            >>> from attrkit import LimeBase
            >>> from attrkit.shapley import LinearRegression
            >>> model = torch.nn.Linear(4, 1)
            >>> x = torch.rand(1, 4)
            >>> lime = LimeBase(model, LinearRegression(),
            ...                 similarity_func=lambda inputs, perturbed, sample, **kw: 1.0,
            ...                 perturb_func=lambda inputs, **kw: torch.randint(0, 2, (1, 4)).float(),
            ...                 perturb_interpretable_space=True,  # samples are on/off masks over the 4 features
            ...                 from_interp_rep_transform=lambda sample, inputs, **kw: inputs * sample,
            ...                 to_interp_rep_transform=None)
            >>> _ = torch.manual_seed(0)
            >>> attr = lime.attribute(x, target=0, n_samples=40)
            >>> torch.allclose(attr, x * model.weight.detach(), atol=1e-4)  # a linear model: weight times input
            True
        """
        n_samples = plumbing.check_positive_int(n_samples, "n_samples")
        interps, model_inputs, weights = self._samples(inputs, n_samples, kwargs)
        xs = plumbing.as_tuple(inputs)[0]
        stacked = [plumbing.as_tuple(m)[0] for m in model_inputs]
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)

        def build(units: range):
            return tuple(torch.cat(parts) for parts in zip(*stacked[units.start:units.stop]))

        options = PerturbationOptions(perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self))
        per_eval = units_per_eval(stacked[0], args, len(stacked), False, options)
        if len({tuple(t.shape for t in sample) for sample in stacked}) > 1:
            per_eval = 1  # samples of different shapes (words left out of a text) cannot share a pass
        y = evaluate_perturbations(self.forward_func, build, len(stacked), per_eval, target, args, 1, options)
        y = plumbing.floating(y)
        X = torch.cat([torch.as_tensor(i).reshape(1, -1) for i in interps]).to(device=xs[0].device, dtype=y.dtype)
        w = torch.as_tensor(weights, dtype=y.dtype, device=xs[0].device).reshape(1, -1)
        coef = fit_surrogate(self.interpretable_model, X[None], y.reshape(1, -1), w)
        return coef.reshape(1, -1)

    def _samples(self, inputs, n_samples: int, kwargs: dict):
        generator = self.perturb_func(inputs, **kwargs) if inspect.isgeneratorfunction(self.perturb_func) else None
        interps, model_inputs, weights = [], [], []
        for _ in range(n_samples):
            try:
                sample = next(generator) if generator is not None else self.perturb_func(inputs, **kwargs)
            except StopIteration:
                break
            if self.perturb_interpretable_space:
                interp, model_input = sample, self.from_interp_rep_transform(sample, inputs, **kwargs)
            else:
                interp, model_input = self.to_interp_rep_transform(sample, inputs, **kwargs), sample
            interps.append(interp)
            model_inputs.append(model_input)
            weights.append(float(torch.as_tensor(self.similarity_func(inputs, model_input, interp, **kwargs))))
        return interps, model_inputs, weights


class Lime(LimeBase):
    r"""LIME: fit a weighted linear model to the model's outputs on random coalitions of features (switched
    off features take their baseline), weighted by how close each perturbed input is to the input; the
    coefficients are the attributions. Defaults as in Captum: ``Lasso(alpha=0.01)`` as the surrogate, the
    exponential cosine kernel (width 1) as ``similarity_func``, each feature kept with probability 1/2.

    Every example gets its own surrogate; the samples of all examples are evaluated in shared batches and
    attrkit's surrogates are fitted for all examples at once. A custom ``perturb_func`` (Captum's
    signature, ``perturb_func(inputs, **kwargs) -> (1, n_features)`` binary sample) or a custom
    ``similarity_func`` is called sample by sample.

    Ribeiro, Singh & Guestrin (2016), *"Why Should I Trust You?"*, https://arxiv.org/abs/1602.04938

    Example:
        >>> import torch
        >>> from attrkit import Lime
        >>> from attrkit.surrogates import LinearRegression
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(2, 3)
        >>> attr = Lime(model, interpretable_model=LinearRegression()).attribute(x, n_samples=40)
        >>> torch.allclose(attr, x * model.weight.detach(), atol=1e-4)  # linear: weight times (x - baseline)
        True
    """

    def __init__(self, forward_func: Callable, interpretable_model=None, similarity_func: Callable | None = None,
                 perturb_func: Callable | None = None):
        super().__init__(forward_func, interpretable_model if interpretable_model is not None else Lasso(alpha=0.01),
                         similarity_func or get_exp_kernel_similarity_function(), perturb_func, True,
                         _from_interpretable, None)

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  n_samples: int = 25, perturbations_per_eval: int | None = None, return_input_shape: bool = True,
                  show_progress: bool | None = None, max_batch_memory_mb: float | None = None):
        """Arguments as in :meth:`attrkit.FeatureAblation.attribute`, and ``n_samples`` (samples per
        example); ``return_input_shape=False`` returns the coefficients, ``(examples, n_features)``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
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
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); the coefficients when
            ``return_input_shape`` is False.

        Example:
            >>> import torch
            >>> from attrkit import Lime
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> Lime(model).attribute(x, target=0, n_samples=20).shape
            torch.Size([2, 3])
        """
        n_samples = plumbing.check_positive_int(n_samples, "n_samples")
        xs, is_tuple = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        masks, _, n_features = feature_masks(feature_mask, xs, ids="from_zero")
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        reference, activation = reference_output(self.forward_func, xs, target, args, measure=True)
        aggregate, _ = output_mode(reference, plumbing.batch_size_of(xs))
        options = PerturbationOptions(perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self))
        if reference.numel() != (1 if aggregate else plumbing.batch_size_of(xs)):
            raise ValueError(f"the model output (after `target`) has shape {tuple(reference.shape)}: Lime explains one "
                             f"number per example, or one for the whole batch.")
        if self.perturb_func is None:
            per_eval = units_per_eval(xs, args, n_samples, aggregate, options, activation)
            coefs = self._fit_all(xs, bs, masks, n_features, aggregate, is_tuple, target, args, n_samples, per_eval,
                                  options)
        else:
            coefs = self._fit_each(xs, bs, masks, n_features, aggregate, is_tuple, target, args, n_samples, options)
        if not return_input_shape:
            return coefs
        return plumbing.restore(spread_units(coefs, tuple(m[:len(coefs)] for m in masks), xs), is_tuple)

    def _draw(self, rows: int, n_samples: int, n_features: int, device) -> Tensor:
        """Interpretable samples ``(rows, n_samples, n_features)``: each feature kept with probability 1/2
        (drawn as Captum draws them)."""
        return torch.bernoulli(torch.full((rows, n_samples, n_features), 0.5, device=device)).bool()

    def _weights(self, samples: Tensor, xs, bs, masks, perturbed, is_tuple: bool) -> Tensor:
        """Sample weights ``(rows, k)`` of ``samples`` ``(rows, k, features)``, whose model inputs are
        ``perturbed`` (``(k, n, ...)`` per input): attrkit's kernel for all of them at once, a user's
        ``similarity_func`` sample by sample (:func:`_similarities`)."""
        f = self.similarity_func
        if not hasattr(f, "distance_mode"):
            return _similarities(f, samples, xs, bs, masks, perturbed, is_tuple)
        rows, k = samples.shape[:2]
        original = torch.cat([x.flatten(1) for x in xs], 1).reshape(rows, -1)
        flat = torch.cat([p.flatten(2) for p in perturbed], 2).reshape(k, rows, -1)
        return _exp_kernel(original.float(), flat.float(), f.distance_mode, f.kernel_width).T

    def _fit_all(self, xs, bs, masks, n_features, aggregate, is_tuple, target, args, n_samples, per_eval,
                 options: PerturbationOptions) -> Tensor:
        """All examples at once: samples drawn together, evaluated in shared batches, fitted together."""
        n = plumbing.batch_size_of(xs)
        rows = 1 if aggregate else n
        samples = self._draw(rows, n_samples, n_features, xs[0].device)
        weights = torch.zeros(rows, n_samples, device=xs[0].device)

        def build(units: range):
            chosen = samples[:, units.start:units.stop]
            perturbed = _switch(chosen.transpose(0, 1), xs, bs, masks)
            weights[:, units.start:units.stop] = self._weights(chosen, xs, bs, masks, perturbed, is_tuple)
            return tuple(p.flatten(0, 1) for p in perturbed)

        y = evaluate_perturbations(self.forward_func, build, n_samples, per_eval, target, args, rows, options)
        y = plumbing.floating(y)  # integer outputs: fitted in floats, the kernel weights kept fractional
        return fit_surrogate(self.interpretable_model, samples.to(y.dtype), y.T, weights.to(y.dtype))

    def _fit_each(self, xs, bs, masks, n_features, aggregate, is_tuple, target, args, n_samples,
                  options: PerturbationOptions) -> Tensor:
        """One example at a time through :meth:`LimeBase.attribute` (a custom ``perturb_func``)."""
        n = plumbing.batch_size_of(xs)
        coefs = []
        for i in [None] if aggregate else range(n):
            pick = lambda t: _example(t, i, n)  # noqa: E731
            coefs.append(LimeBase.attribute(
                self, plumbing.restore([pick(x) for x in xs], is_tuple), target=_example_target(target, i, n),
                additional_forward_args=tuple(pick(a) for a in args),
                n_samples=n_samples, perturbations_per_eval=options.perturbations_per_eval,
                show_progress=options.show_progress, max_batch_memory_mb=options.max_batch_memory_mb,
                baselines=plumbing.restore([pick(b) for b in bs], is_tuple),
                feature_mask=plumbing.restore([pick(m) for m in masks], is_tuple), num_interp_features=n_features))
        return torch.cat(coefs)


class KernelShap(Lime):
    r"""KernelSHAP: LIME whose samples and weights make the linear fit estimate Shapley values. Coalition
    sizes are drawn with the Shapley kernel's probabilities ``(n - 1) / (s (n - s))``, members uniformly,
    and each drawn coalition is followed by its complement (paired sampling: the kernel is symmetric in the
    size, so the estimate is the same in expectation, with far less noise — about half Captum's error on its
    own test cases; Covert & Lee (2021), *Improving KernelSHAP*, https://arxiv.org/abs/2012.01536).
    The empty and the full coalition come first, with a large weight (10^6) that makes the fit honour
    ``F(baseline)`` and ``F(x)``; the surrogate is :class:`LinearRegression`.

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*, https://arxiv.org/abs/1705.07874

    Example:
        >>> import torch
        >>> from attrkit import KernelShap
        >>> model = torch.nn.Linear(3, 1)
        >>> x = torch.rand(1, 3)
        >>> attr = KernelShap(model).attribute(x, n_samples=50)
        >>> torch.allclose(attr, x * model.weight.detach(), atol=1e-4)  # Shapley values of a linear model
        True
    """

    inf_weight = 1e6

    def __init__(self, forward_func: Callable):
        super().__init__(forward_func, interpretable_model=LinearRegression())

    def _draw(self, rows, n_samples, n_features, device):
        samples = torch.rand(rows, n_samples, n_features, device=device) < 0.5  # used only when n_features == 1
        samples[:, 0] = True
        samples[:, 1:2] = False
        if n_samples > 2 and n_features > 1:
            half = (n_samples - 1) // 2  # coalitions drawn; each is followed by its complement
            size = torch.arange(1, n_features, device=device, dtype=torch.float)
            kernel = (n_features - 1) / (size * (n_features - size))
            sizes = torch.multinomial(kernel, rows * half, replacement=True).reshape(rows, -1, 1)
            keys = torch.rand(rows, half, n_features, device=device)  # the `size` smallest keys join
            drawn = keys <= keys.sort(-1).values.gather(-1, sizes)
            paired = torch.stack([drawn, ~drawn], 2).flatten(1, 2)  # (rows, 2 * half, features)
            samples[:, 2:] = paired[:, :n_samples - 2]
        return samples

    def _weights(self, samples, *_):
        ends = samples.all(-1) | ~samples.any(-1)
        return torch.where(ends, self.inf_weight, 1.0)


def _switch(samples: Tensor, xs, bs, masks) -> tuple[Tensor, ...]:
    """``samples`` ``(k, rows, features)`` (rows: 1 or every example) -> ``(k, n, ...)`` inputs where
    switched-off features take their baseline."""
    k = samples.shape[0]
    out = []
    for x, b, m in zip(xs, bs, masks):
        n = x.shape[0]
        index = m.reshape(m.shape[0], -1).expand(n, -1).unsqueeze(0).expand(k, -1, -1)
        on = samples.expand(k, n, -1).gather(2, index).reshape(k, *x.shape)
        out.append(torch.where(on, x.unsqueeze(0), b.unsqueeze(0)))
    return tuple(out)


def _from_interpretable(sample, original, **kwargs):
    """Captum's default LIME transform: a ``(1, n_features)`` binary sample -> the model input."""
    xs, is_tuple = plumbing.as_tuple(original, "original_inputs")
    masks = format_feature_mask(kwargs.get("feature_mask"), xs)
    bases = plumbing.format_baselines(kwargs.get("baselines"), xs)  # a number, as Captum's LIME tutorial passes
    on = [torch.as_tensor(sample).reshape(-1)[m].bool() for m in masks]
    return plumbing.restore([torch.where(o, x, b) for o, x, b in zip(on, xs, bases)], is_tuple)


def _similarities(f: Callable, samples: Tensor, xs, bs, masks, perturbed, is_tuple: bool) -> Tensor:
    """A user's ``similarity_func`` called as Captum's Lime calls it, once per example and sample:
    ``f(example, perturbed example, (1, features) sample, baselines=, feature_mask=, num_interp_features=)``
    (with one row of samples for the batch, the example is the whole batch). Returns ``(rows, k)``."""
    (rows, k, n_features), n = samples.shape, plumbing.batch_size_of(xs)
    values = []
    for r in range(rows):
        i = None if rows == 1 else r
        example = lambda ts: plumbing.restore([_example(t, i, n) for t in ts], is_tuple)  # noqa: E731
        context = dict(baselines=example(bs), feature_mask=example(masks), num_interp_features=n_features)
        values.append([float(torch.as_tensor(f(example(xs), example([p[j] for p in perturbed]),
                                               samples[r, j:j + 1].float(), **context))) for j in range(k)])
    return torch.tensor(values, device=samples.device).reshape(rows, k)


def _example(t, i, n):
    """Example ``i`` of ``t`` (batch dimension kept); all of ``t`` for ``i=None`` or when the batch shares it."""
    if i is None or not isinstance(t, Tensor) or t.dim() == 0 or t.shape[0] != n:
        return t
    return t[i:i + 1]


def _example_target(target, i, n):
    if i is None or target is None or isinstance(target, (int, tuple)):
        return target
    if isinstance(target, Tensor):
        return target if target.numel() == 1 else target[i:i + 1]
    return [target[i]] if isinstance(target, list) else target
