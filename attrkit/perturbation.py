"""The ablation family: how much the output changes when features are removed, occluded or shuffled.

* :class:`FeatureAblation` — replace each feature (or group, via ``feature_mask``) by a baseline.
* :class:`Occlusion` — replace a sliding window (a patch of an image) by a baseline.
* :class:`FeaturePermutation` — shuffle each feature across the examples of the batch.

Each perturbation is one "unit": a perturbed copy of every example. Many units go into one forward pass,
as many as fit a memory budget (``max_batch_memory_mb``, or the environment variable
``ATTRKIT_BATCH_MEMORY_MB``, default 64 MB of perturbed inputs per pass; on the CPU also at most 4096 rows,
which keeps the activations in the cache), under ``torch.inference_mode()``; ``perturbations_per_eval``
fixes the number instead, with Captum's meaning. The result does not depend on
the batch size. ``show_progress=None`` (the default) shows a ``tqdm`` bar in a notebook when the first batch
predicts a run of more than a few seconds.

A model may also return one output for the whole batch (a loss, say): it is then evaluated one perturbation
at a time, and the attributions have a first dimension of 1 (Captum's convention).

Inputs after the first may have a first dimension that is not the batch (Captum's "sparse features": the
flat ids of an ``EmbeddingBag``, its offsets passed in ``additional_forward_args``). Such an input is
perturbed as a whole along that dimension (its ``feature_mask`` has a first dimension of 1), one perturbation
per forward pass, and its attributions have the batch's first dimension: ``(examples, *input.shape[1:])``,
as in Captum. Departures: Captum stacks several perturbed copies of it into one pass when
``perturbations_per_eval > 1`` (the model then reads one longer input: wrong numbers) and fails on a mask
along that dimension; attrkit refuses both with a ``ValueError`` naming the argument.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn

from . import _plumbing as plumbing
from . import _batching
from . import _incremental
from ._hooks import module_of
from ._windows import n_windows, spread_windows, strides_of, window_grid, window_masks, window_shapes
from ._batching import PerturbationOptions, evaluate_with_reference, feature_masks, progress_label, spread_units
from .base import PerturbationAttribution


class FeatureAblation(PerturbationAttribution):
    r"""Feature ablation: :math:`F(x) - F(x \text{ with feature } i \text{ set to its baseline})`.

    By default every scalar of an example is its own feature; ``feature_mask`` groups them (same integer =
    ablated together, e.g. an image segment), and every element of a group gets the group's value.

    Zeiler & Fergus (2014), *Visualizing and Understanding Convolutional Networks*, https://arxiv.org/abs/1311.2901

    Convolutional models (one 4-d input, in eval mode, traceable by ``torch.fx``) are evaluated incrementally
    where the saved arithmetic pays off: each window's change is propagated only through the region of each
    layer it can reach, on top of the unoccluded image's activations, up to the first layer that mixes all
    positions (Nakandala, Kumar & Papakonstantinou, *Incremental and Approximate Inference for Faster
    Occlusion-based Deep CNN Explanations*, SIGMOD 2019). The result is the same as the batched path's (to
    float rounding); ``ATTRKIT_INCREMENTAL=off`` turns it off. See :mod:`attrkit._incremental`.

    Example:
        >>> import torch
        >>> from attrkit import FeatureAblation
        >>> model = torch.nn.Linear(3, 2)
        >>> x = torch.rand(4, 3)
        >>> attr = FeatureAblation(model).attribute(x, target=1)
        >>> torch.allclose(attr, x * model.weight[1].detach())  # a linear model: weight times (x - 0)
        True
    """

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval: int | None = None, show_progress: bool | None = None,
                  max_batch_memory_mb: float | None = None):
        """Attribute by ablating each feature (group) in turn.

        Args:
            inputs: a tensor or a tuple of tensors, batch first; in a tuple, inputs after the first may have a
                first dimension of their own (sparse ids, say: see the module notes).
            baselines: the replacement values: None (zeros), a number, a tensor broadcastable to the input
                (per example or shared), or a tuple of those, one per input.
            target: the output index to explain (see :func:`attrkit._plumbing.select_target`).
            additional_forward_args: passed to the model after the inputs.
            feature_mask: integer tensor(s) broadcastable to each input; equal ids are ablated together.
                Ids may be shared across the inputs of a tuple. The mask of an input whose first dimension is
                not the batch has a first dimension of 1.
            perturbations_per_eval: perturbations per forward pass; None sizes it from the memory budget
                (1 when an input's first dimension is not the batch; more is refused there).
            show_progress: a ``tqdm`` bar: True, False, or None (automatic in notebooks for long runs).
            max_batch_memory_mb: the memory budget for the perturbed inputs of one forward pass.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); for an input whose
            first dimension is not the batch, ``(examples, *input.shape[1:])``.

        Example:
            >>> import torch
            >>> from attrkit import FeatureAblation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> FeatureAblation(model).attribute(x, target=0, feature_mask=torch.tensor([[0, 0, 1]])).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs, non_batch=True)
        bs = plumbing.format_baselines(baselines, xs)
        features = feature_masks(feature_mask, xs)
        maps = features.maps

        def build(units: range) -> tuple[Tensor, ...]:
            chosen = torch.arange(units.start, units.stop, device=maps[0].device)
            return tuple(_replace(x, b, m.unsqueeze(0) == _column(chosen, m)) for x, b, m in zip(xs, bs, maps))

        options = PerturbationOptions(perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self))
        diffs = _differences(self.forward_func, xs, build, features.n, target, additional_forward_args, options,
                             features.masks)
        return plumbing.restore(spread_units(diffs, maps, xs), is_tuple)

    def attribute_future(self, *args, **kwargs) -> torch.futures.Future:
        """:meth:`attribute` with a Future-returning ``forward_func``; a Future of the attributions (as Captum)."""
        return _batching.attribute_future(self, *args, **kwargs)


class Occlusion(FeatureAblation):
    r"""Occlusion: slide a window over the input, replace it by a baseline, and give each element the
    average output drop over the windows that cover it.

    Zeiler & Fergus (2014), *Visualizing and Understanding Convolutional Networks*, https://arxiv.org/abs/1311.2901

    A model whose batch normalisation uses the statistics of each batch (training mode, or
    ``track_running_stats=False``) would give results that depend on how many perturbations share a forward
    pass. Occlusion then warns once (in place of the general training-mode warning), naming the layers, and
    runs one perturbation per pass whatever
    ``perturbations_per_eval`` says (Captum's default; Captum batches them when asked, and its result changes
    with the batch size). As in Captum, every pass in training mode updates the running statistics: call
    ``model.eval()`` first.

    Example:
        >>> import torch
        >>> from attrkit import Occlusion
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        >>> x = torch.rand(1, 3, 16, 16)
        >>> _ = model(x)
        >>> Occlusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=0).shape
        torch.Size([1, 3, 16, 16])
    """

    def attribute(self, inputs, sliding_window_shapes, strides=None, baselines=None, target=None,
                  additional_forward_args=None, perturbations_per_eval: int | None = None,
                  show_progress: bool | None = None, max_batch_memory_mb: float | None = None):
        """Attribute by occluding windows.

        Args:
            inputs: as in :meth:`FeatureAblation.attribute` (a window over an input whose first dimension is
                not the batch spans that dimension: give its shape after the first, e.g. ``()`` for flat ids).
            sliding_window_shapes: the window, one size per dimension after the batch (for a 3x32x32 image,
                e.g. ``(3, 4, 4)``); a tuple of such tuples for a tuple of inputs; or one int, that size
                along every dimension of every input.
            strides: the step between windows: an int (every dimension of every input), a tuple per
                dimension, or one of those per input; default 1. A window at the far edge is cut to fit, as
                in Captum.
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
            >>> from attrkit import Occlusion
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> Occlusion(model).attribute(x, sliding_window_shapes=(2,), target=1).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs, non_batch=True)
        bs = plumbing.format_baselines(baselines, xs)
        windows = window_shapes(sliding_window_shapes, xs)
        steps = strides_of(strides, xs, windows)
        grids = [window_grid(x, w, s) for x, w, s in zip(xs, windows, steps)]
        starts = [0]
        for grid in grids:
            starts.append(starts[-1] + n_windows(grid))

        def build(units: range) -> tuple[Tensor, ...]:
            chosen = torch.arange(units.start, units.stop, device=xs[0].device)
            return tuple(_replace(x, b, window_masks(grid, chosen - start).unsqueeze(1))
                         for x, b, grid, start in zip(xs, bs, grids, starts))

        options = _batch_independent(self.forward_func, PerturbationOptions(
            perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self)))
        # Convolutional models are evaluated incrementally where that pays off: only the region each window
        # can change is recomputed (exact; attrkit/_incremental/); elsewhere the batched path, the reference.
        evaluate = _incremental.evaluator(bs, windows, steps)
        diffs = _differences(self.forward_func, xs, build, starts[-1], target, additional_forward_args, options,
                             evaluate=evaluate)
        attrs = tuple(spread_windows(diffs[:, start:start + n_windows(grid)], grid)
                      for grid, start in zip(grids, starts))
        return plumbing.restore(attrs, is_tuple)

    attribute_future = PerturbationAttribution.attribute_future  # raises: not for Occlusion, as in Captum 0.9

    def _mode_warning(self) -> str | None:
        """One warning for a model whose batch normalisation uses each batch's statistics (it says both why
        the perturbations run one per pass and that training mode changes the numbers); else the usual one."""
        return _batchwise_warning(self.forward_func) or super()._mode_warning()


class FeaturePermutation(FeatureAblation):
    r"""Permutation importance: :math:`F(x) - F(x \text{ with feature } i \text{ shuffled across the batch})`.

    Each feature (or group in ``feature_mask``) gets one random permutation of the batch (never the
    identity), so the batch needs at least two examples; an input whose first dimension is not the batch
    (sparse ids) is shuffled along that dimension, and needs two rows. ``perm_func(x, mask)`` replaces the
    shuffle. On the CPU the permutations are drawn exactly as Captum draws them (same seed, same result).

    Departure: where a shuffle cannot change anything (a batch of one example, or an input with one row),
    Captum skips the feature group, logs a warning and returns zeros, which read as "unimportant"; attrkit
    raises a ``ValueError`` naming ``inputs``.

    Fisher, Rudin & Dominici (2019), *All Models are Wrong, but Many are Useful*, https://arxiv.org/abs/1801.01489

    Example:
        >>> import torch
        >>> from attrkit import FeaturePermutation
        >>> model = torch.nn.Linear(3, 1)
        >>> FeaturePermutation(model).attribute(torch.rand(8, 3)).shape
        torch.Size([8, 3])
    """

    def __init__(self, forward_func: Callable, perm_func: Callable | None = None):
        super().__init__(forward_func)
        self.perm_func = perm_func

    def attribute(self, inputs, target=None, additional_forward_args=None, feature_mask=None,
                  perturbations_per_eval: int | None = None, show_progress: bool | None = None,
                  max_batch_memory_mb: float | None = None, **kwargs):
        """Attribute by shuffling each feature (group) across the batch; arguments as in
        :meth:`FeatureAblation.attribute` (``baselines`` is accepted and ignored, as in Captum).

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first (at least two examples); in a tuple,
                inputs after the first may have a first dimension of their own (at least two rows).
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            feature_mask: integer tensor(s) broadcastable to each input; features with equal ids are perturbed
                together.
            perturbations_per_eval: perturbed copies per forward pass; None sizes it from the memory budget.
            show_progress: a ``tqdm`` bar: True, False, or None (automatic in notebooks for long runs).
            max_batch_memory_mb: the memory budget for the perturbed inputs of one forward pass.
            **kwargs: ``baselines`` is accepted and ignored (as in Captum); anything else is refused.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import FeaturePermutation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> FeaturePermutation(model).attribute(torch.rand(5, 3), target=0).shape
            torch.Size([5, 3])
        """
        unknown = set(kwargs) - {"baselines"}
        if unknown:
            raise TypeError(f"FeaturePermutation.attribute() got unexpected keyword argument(s) {sorted(unknown)}.")
        xs, is_tuple = plumbing.as_tuple(inputs, non_batch=True)
        features = feature_masks(feature_mask, xs)
        maps = features.maps
        units = torch.arange(features.n, device=maps[0].device)
        present = [torch.isin(units, m).tolist() for m in maps]
        _check_rows_to_shuffle(xs, present)
        perms = None if self.perm_func else _permutations(present, [x.shape[0] for x in xs], xs[0].device)

        def build(units: range) -> tuple[Tensor, ...]:
            chosen = torch.arange(units.start, units.stop, device=maps[0].device)
            hits = [m.unsqueeze(0) == _column(chosen, m) for m in maps]
            if self.perm_func is None:
                return tuple(torch.where(h, x[p[chosen]], x) for x, h, p in zip(xs, hits, perms))
            return tuple(torch.stack([self.perm_func(x, hit) if hit.any() else x for hit in h])
                         for x, h in zip(xs, hits))

        options = PerturbationOptions(perturbations_per_eval, max_batch_memory_mb, show_progress, progress_label(self))
        diffs = _differences(self.forward_func, xs, build, features.n, target, additional_forward_args, options,
                             features.masks)
        return plumbing.restore(spread_units(diffs, maps, xs), is_tuple)


# --------------------------------------------------------------------------- shared by the three
def _differences(forward_func, xs, build, n_units, target, additional_forward_args, options: PerturbationOptions,
                 masks: tuple = (), evaluate: Callable = evaluate_with_reference) -> Tensor:
    """``F(x) - F(unit u)`` for every unit: shape ``(rows, n_units)``, rows = examples, or every output of a
    model with several outputs per example (Captum's ``(n * outputs, ...)`` attributions with ``target=None``)
    or of one that aggregates over the batch. ``evaluate``: how the outputs are computed (Occlusion's is
    incremental where it can be)."""
    target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
    reference, outputs = evaluate(forward_func, xs, _unit_major(build), n_units, target, args, options, masks)
    return (reference.reshape(1, -1) - outputs).T


def _unit_major(build):
    """``build`` gives ``(units, n, ...)`` blocks; the model gets them as ``(units * n, ...)`` rows."""
    return lambda units: tuple(t.flatten(0, 1) for t in build(units))


def _replace(x: Tensor, baseline: Tensor, hit: Tensor) -> Tensor:
    """``(units, n, ...)``: ``x`` with the elements where ``hit`` is true replaced by ``baseline``."""
    return torch.where(hit, baseline.unsqueeze(0), x.unsqueeze(0))


def _column(values: Tensor, like: Tensor) -> Tensor:
    """``values`` shaped ``(k, 1, 1, ...)`` to broadcast against ``like`` with a new leading dimension."""
    return values.reshape(-1, *([1] * like.dim()))


def _check_rows_to_shuffle(xs: tuple[Tensor, ...], present: list[list[bool]]):
    """Every input with a feature to shuffle needs two rows along its first dimension: a shuffle of one row
    changes nothing. (Captum skips such feature groups and returns zeros for them, which would read as
    "unimportant"; attrkit says why instead.)"""
    for i, (x, where) in enumerate(zip(xs, present)):
        rows = x.shape[0] if x.dim() else 1
        if rows < 2 and any(where):
            what = "examples" if i == 0 else f"rows along its first dimension (input {i})"
            raise ValueError(f"`inputs` must hold at least 2 {what} for FeaturePermutation to shuffle a feature "
                             f"across them, got {rows}: a shuffle of {rows} row(s) changes nothing (Captum returns "
                             f"zeros there, which would read as \"unimportant\").")


def _permutations(present: list[list[bool]], rows: list[int], device) -> list[Tensor]:
    """Per input, one shuffle of its rows per feature (``(n_features, rows[i])``), never the identity. Drawn
    feature by feature, and input by input where the feature occurs, as Captum draws them."""
    perms = [torch.arange(n, device=device).repeat(len(present[0]), 1) for n in rows]
    for u in range(len(present[0])):
        for i, where in enumerate(present):
            if where[u]:
                identity = torch.arange(rows[i], device=device)
                perm = torch.randperm(rows[i], device=device)
                while torch.equal(perm, identity):
                    perm = torch.randperm(rows[i], device=device)
                perms[i][u] = perm
    return perms


# --------------------------------------------------------------------------- occlusion and batch statistics
def _batchwise_norms(forward_func) -> list[tuple[str, nn.Module]]:
    """The batch normalisation layers that use the statistics of each batch (training mode, or no running
    statistics): with them, perturbations sharing a forward pass would change each other's numbers."""
    model = module_of(forward_func)
    return [(name, m) for name, m in (model.named_modules() if model is not None else ())
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)]


def _batchwise_warning(forward_func) -> str | None:
    """Occlusion's one warning about such a model (it replaces the general training-mode warning), or None."""
    batchwise = _batchwise_norms(forward_func)
    if not batchwise:
        return None
    name, m = batchwise[0]
    why = "in training mode" if m.training else "without running statistics"
    more = f" (and {len(batchwise) - 1} more)" if len(batchwise) > 1 else ""
    training = ("; in training mode the attributions also change from call to call and every pass updates the "
                "running statistics" if any(mod.training for _, mod in batchwise) else "")
    return (f"Occlusion: `{name}` ({type(m).__name__}){more} normalises with the statistics of each batch ({why}), "
            f"so perturbations sharing a forward pass would change each other's results: running one perturbation "
            f"per pass{training}. Call `model.eval()` first.")


def _batch_independent(forward_func, options: PerturbationOptions) -> PerturbationOptions:
    """One perturbation per forward pass when the model has batch normalisation that uses the statistics of
    each batch (the warning is :meth:`Occlusion._mode_warning`'s, given once before attributing)."""
    if not _batchwise_norms(forward_func):
        return options
    return dataclasses.replace(options, perturbations_per_eval=1)
