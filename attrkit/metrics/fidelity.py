"""Infidelity and max-sensitivity (Yeh et al. 2019), with Captum's semantics.

Yeh, Hsieh, Suggala, Inouye & Ravikumar (2019), *On the (In)fidelity and Sensitivity
of Explanations*, https://arxiv.org/abs/1901.09392

Both metrics draw ``n_perturb_samples`` perturbations per example. The perturbed
copies are laid out sample-major (``[x0, x0, ..., x1, x1, ...]``, the
``"interleave"`` order of :mod:`attrkit._plumbing`) and evaluated
``max_examples_per_batch`` rows at a time.
"""
from __future__ import annotations

import functools
import inspect
import numbers
from typing import Callable

import torch
from torch import Tensor

from .. import _plumbing as plumbing
from .._threads import threads_beside_others


# --------------------------------------------------------------------------- shared helpers
def _safe_div(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is not zero, ``numerator`` where it is."""
    return numerator / torch.where(denominator != 0, denominator, torch.ones_like(denominator))


def _sample_chunks(n_samples: int, n_examples: int, max_examples_per_batch) -> list[int]:
    """Sizes of the groups of samples evaluated together (each holds every example)."""
    if max_examples_per_batch is not None:
        plumbing.check_positive_int(max_examples_per_batch, "max_examples_per_batch")
    return [len(r) for r in plumbing.chunks(n_samples, n_examples, max_examples_per_batch)]


def _for_user(items: tuple[Tensor, ...]):
    """Captum hands a user function a bare tensor when there is exactly one input."""
    return items[0] if len(items) == 1 else items


def _check_attributions(attributions, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    attrs, _ = plumbing.as_tuple(attributions, "attributions")
    if len(attrs) != len(inputs):
        raise ValueError(f"`attributions` has {len(attrs)} tensors but `inputs` has {len(inputs)}: give one per input.")
    for i, (a, x) in enumerate(zip(attrs, inputs)):
        if a.shape != x.shape:
            raise ValueError(
                f"`attributions` tensor {i} has shape {tuple(a.shape)}; expected the input's shape {tuple(x.shape)}."
            )
    return tuple(a.detach() for a in attrs)


# --------------------------------------------------------------------------- infidelity
def infidelity_perturb_func_decorator(multiply_by_inputs: bool = True) -> Callable:
    r"""Turn a ``perturb_func`` that returns only perturbed inputs into one that
    returns ``(perturbations, perturbed_inputs)``, as :func:`infidelity` expects.

    The perturbation :math:`I` is computed as ``inputs - perturbed`` and, when
    ``multiply_by_inputs`` is true (for *global* attributions such as Integrated
    Gradients, which already contain the ``inputs - baselines`` factor), divided by
    ``inputs - baselines`` wherever that is non-zero. Use ``False`` for *local*
    attributions (Saliency, guided backprop, IG with ``multiply_by_inputs=False``).

    The decorated function receives ``(inputs)`` or, when :func:`infidelity` is given
    baselines, ``(inputs, baselines)``.

    Example:
        >>> import torch
        >>> from attrkit.metrics import infidelity_perturb_func_decorator
        >>> @infidelity_perturb_func_decorator(multiply_by_inputs=False)
        ... def halve(inputs):
        ...     return inputs / 2
        >>> perturbations, perturbed = halve(torch.tensor([[2.0, 4.0]]))
        >>> perturbations, perturbed
        ((tensor([[1., 2.]]),), (tensor([[1., 2.]]),))
    """

    def decorate(perturb_func: Callable) -> Callable:
        @functools.wraps(perturb_func)
        def with_perturbations(inputs, baselines=None):
            perturbed = perturb_func(inputs) if baselines is None else perturb_func(inputs, baselines)
            xs, _ = plumbing.as_tuple(inputs)
            moved, _ = plumbing.as_tuple(perturbed, "the perturbed inputs")
            if not multiply_by_inputs:
                return tuple(x - p for x, p in zip(xs, moved)), moved
            bs = plumbing.format_baselines(baselines, xs)
            return tuple(_safe_div(x - p, x - b) for x, p, b in zip(xs, moved, bs)), moved

        return with_perturbations

    return decorate


@threads_beside_others()
def infidelity(
    forward_func: Callable, perturb_func: Callable, inputs, attributions, baselines=None,
    additional_forward_args=None, target=None, n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None, normalize: bool = False,
) -> Tensor:
    r"""Explanation infidelity: the expected squared error between the attributions'
    prediction of an output change and the actual change,

    .. math::
        \mathrm{INFD}(\Phi, f, x) = \mathbb{E}_{I}\big[(I^\top \Phi(f, x) - (f(x) - f(x - I)))^2\big].

    ``perturb_func(inputs[, baselines])`` returns ``(perturbations, perturbed_inputs)``
    (decorate it with :func:`infidelity_perturb_func_decorator` to return only the
    perturbed inputs). It is called on all examples at once, each repeated
    (sample-major) as many times as fit in ``max_examples_per_batch`` rows; with a
    single input it receives a tensor, with several a tuple. ``baselines`` are
    broadcast to the inputs' shape before they reach ``perturb_func``.

    ``normalize=True`` first rescales the attributions by the least-squares factor
    :math:`\beta = \mathbb{E}[I^\top\Phi\,\Delta f] / \mathbb{E}[(I^\top\Phi)^2]`, making the
    score invariant to the attributions' scale.

    Yeh et al. (2019), *On the (In)fidelity and Sensitivity of Explanations*,
    https://arxiv.org/abs/1901.09392

    Returns:
        one infidelity per example, shape ``(N,)``; lower is better.

    Example:
        >>> import torch
        >>> from attrkit import IntegratedGradients
        >>> from attrkit.metrics import infidelity
        >>> from attrkit.testing import ToyModel
        >>> model, x = ToyModel(), torch.tensor([[1.0, 2.0, 3.0]])
        >>> attr = IntegratedGradients(model).attribute(x, target=0)
        >>> def drop_one(inputs):  # remove the first feature: the perturbation is that feature's value
        ...     i = torch.zeros_like(inputs); i[:, 0] = inputs[:, 0]
        ...     return i, inputs - i
        >>> infidelity(model, drop_one, x, attr, target=0, n_perturb_samples=2).shape
        torch.Size([1])
    """
    xs, _ = plumbing.as_tuple(inputs)
    attrs = _check_attributions(attributions, xs)
    n_samples = plumbing.check_positive_int(n_perturb_samples, "n_perturb_samples")
    if not callable(perturb_func):
        raise TypeError(f"`perturb_func` must be callable, got {type(perturb_func).__name__}.")
    bs = None if baselines is None else plumbing.format_baselines(baselines, xs)
    target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
    n = plumbing.batch_size_of(xs)
    sums = None
    with torch.no_grad():
        clean = plumbing.per_example(plumbing.run_forward(forward_func, xs, target, args), n)
        for k in _sample_chunks(n_samples, n, max_examples_per_batch):
            predicted, actual = _one_chunk(forward_func, perturb_func, xs, bs, attrs, clean, target, args, k)
            part = torch.stack([
                (predicted * predicted).sum(1), (predicted * actual).sum(1), (actual * actual).sum(1),
                (predicted - actual).pow(2).sum(1),
            ])
            sums = part if sums is None else sums + part
    if not normalize:
        return sums[3] / n_samples
    beta = _safe_div(sums[1], sums[0])
    return (beta * beta * sums[0] - 2 * beta * sums[1] + sums[2]) / n_samples


def _one_chunk(forward_func, perturb_func, xs, bs, attrs, clean, target, args, k: int):
    """``(I . attributions, f(x) - f(x - I))`` for ``k`` perturbations per example, each ``(N, k)``."""
    n = plumbing.batch_size_of(xs)
    repeated = plumbing.expand(xs, k, "interleave")
    if bs is None:
        result = perturb_func(_for_user(repeated))
    else:
        result = perturb_func(_for_user(repeated), _for_user(plumbing.expand(bs, k, "interleave")))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError(
            "`perturb_func` must return `(perturbations, perturbed_inputs)`; to return only the perturbed inputs, "
            "decorate it with `infidelity_perturb_func_decorator`."
        )
    perturbations, _ = plumbing.as_tuple(result[0], "perturbations")
    perturbed, _ = plumbing.as_tuple(result[1], "perturbed inputs")
    for name, items in (("perturbations", perturbations), ("perturbed inputs", perturbed)):
        if len(items) != len(xs) or any(t.shape != x.shape for t, x in zip(items, repeated)):
            raise ValueError(
                f"`perturb_func` returned {name} of shapes {[tuple(t.shape) for t in items]}; expected "
                f"{[tuple(x.shape) for x in repeated]} (each example repeated {k} times, sample-major)."
            )
    moved = plumbing.per_example(
        plumbing.run_forward(forward_func, perturbed, plumbing.expand_target(target, k, "interleave"),
                      plumbing.expand_args(args, k, "interleave")), n * k)
    actual = (clean.repeat_interleave(k) - moved).reshape(n, k)
    predicted = plumbing.sum_per_example([a.repeat_interleave(k, dim=0) * i for a, i in zip(attrs, perturbations)])
    return predicted.reshape(n, k), actual


# --------------------------------------------------------------------------- sensitivity
def default_perturb_func(inputs, perturb_radius: float = 0.02):
    """Uniform noise in ``[-perturb_radius, perturb_radius]`` added to every input tensor."""
    xs, _ = plumbing.as_tuple(inputs)
    return tuple(x + torch.empty_like(x).uniform_(-perturb_radius, perturb_radius) for x in xs)


@threads_beside_others()
def sensitivity_max(
    explanation_func: Callable, inputs, perturb_func: Callable = default_perturb_func, perturb_radius: float = 0.02,
    n_perturb_samples: int = 10, norm_ord="fro", max_examples_per_batch: int | None = None, **kwargs,
) -> Tensor:
    r"""Max-sensitivity: the largest relative change of an explanation when the input
    is perturbed a little,

    .. math::
        \mathrm{SENS}_{\max}(\Phi, f, x) = \max_{\lVert y - x\rVert \le r}
        \frac{\lVert \Phi(f, y) - \Phi(f, x) \rVert}{\lVert \Phi(f, x) \rVert},

    estimated from ``n_perturb_samples`` draws of ``perturb_func`` (by default uniform
    noise of radius ``perturb_radius``). Captum's definition divides by the norm of the
    original explanation (by 1 where that norm is zero).

    ``explanation_func(inputs, **kwargs)`` is typically a bound ``attribute`` method;
    ``kwargs`` (``target``, ``additional_forward_args``, per-example ``baselines``) are
    repeated to follow the perturbed copies. ``perturb_func(inputs[, perturb_radius])``
    receives a tensor for one input, a tuple for several, and returns perturbed inputs.
    ``norm_ord`` is ``"fro"`` (the Euclidean norm of the flattened explanation) or a
    number passed to :func:`torch.linalg.vector_norm` (``1``, ``float("inf")``, ...).

    Yeh et al. (2019), *On the (In)fidelity and Sensitivity of Explanations*,
    https://arxiv.org/abs/1901.09392

    Returns:
        one sensitivity per example, shape ``(N,)``; lower is better.

    Example:
        >>> import torch
        >>> from attrkit import Saliency
        >>> from attrkit.metrics import sensitivity_max
        >>> from attrkit.testing import ToyModel
        >>> sens = sensitivity_max(Saliency(ToyModel()).attribute, torch.rand(4, 3), target=0)
        >>> sens.shape
        torch.Size([4])
    """
    xs, is_tuple = plumbing.as_tuple(inputs)
    n_samples = plumbing.check_positive_int(n_perturb_samples, "n_perturb_samples")
    order = _vector_norm_order(norm_ord)
    if not callable(explanation_func):
        raise TypeError(f"`explanation_func` must be callable, got {type(explanation_func).__name__}.")
    n = plumbing.batch_size_of(xs)
    takes_radius = _takes_two_arguments(perturb_func)
    with torch.no_grad():
        reference = _flat_explanation(explanation_func(plumbing.restore(xs, is_tuple), **kwargs), n)
        scale = torch.linalg.vector_norm(reference, ord=order, dim=1)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        worst = None
        for k in _sample_chunks(n_samples, n, max_examples_per_batch):
            repeated = _for_user(plumbing.expand(xs, k, "interleave"))
            moved = perturb_func(repeated, perturb_radius) if takes_radius else perturb_func(repeated)
            moved = plumbing.restore(plumbing.as_tuple(moved, "the perturbed inputs")[0], is_tuple)
            explained = _flat_explanation(explanation_func(moved, **_expand_kwargs(kwargs, k, n)), n * k)
            change = torch.linalg.vector_norm(explained - reference.repeat_interleave(k, dim=0), ord=order, dim=1)
            chunk_max = (change / scale.repeat_interleave(k)).reshape(n, k).max(dim=1).values
            worst = chunk_max if worst is None else torch.maximum(worst, chunk_max)
    return worst


def _vector_norm_order(norm_ord):
    if norm_ord == "fro":
        return 2
    if isinstance(norm_ord, numbers.Real) and not isinstance(norm_ord, bool):
        return norm_ord
    raise ValueError(f"`norm_ord` must be 'fro' or a number (1, 2, float('inf'), ...); got {norm_ord!r}.")


def _takes_two_arguments(func: Callable) -> bool:
    try:
        return len(inspect.signature(func).parameters) > 1
    except (TypeError, ValueError):
        return False


def _flat_explanation(explanation, n: int) -> Tensor:
    """One row per example: every tensor of the explanation flattened and concatenated."""
    items, _ = plumbing.as_tuple(explanation, "the explanation")
    for t in items:
        if t.dim() == 0 or t.shape[0] != n:
            raise ValueError(
                f"`explanation_func` returned a tensor of shape {tuple(t.shape)}; expected {n} rows (one per input)."
            )
    return torch.cat([t.reshape(n, -1) for t in items], dim=1)


def _expand_kwargs(kwargs: dict, k: int, n: int) -> dict:
    """Repeat the per-example keyword arguments of ``explanation_func`` ``k`` times (sample-major)."""
    out = dict(kwargs)
    if "target" in out:
        out["target"] = plumbing.expand_target(out["target"], k, "interleave")
    if out.get("additional_forward_args") is not None:
        args = plumbing.format_args(out["additional_forward_args"])
        out["additional_forward_args"] = plumbing.expand_args(args, k, "interleave")
    if out.get("baselines") is not None:
        out["baselines"] = _expand_baselines(out["baselines"], k, n)
    return out


def _expand_baselines(baselines, k: int, n: int):
    def one(b):
        per_example = isinstance(b, Tensor) and b.dim() > 0 and b.shape[0] == n and n > 1
        return b.repeat_interleave(k, dim=0) if per_example else b

    return tuple(one(b) for b in baselines) if isinstance(baselines, tuple) else one(baselines)
