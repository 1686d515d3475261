"""Batching for perturbation methods — the shared loop of perturbation.py, shapley.py, lime.py and their
layer/neuron forms.

A perturbation method evaluates the model on many perturbed copies of the inputs. Here, once: feature masks,
how many copies go into one forward pass (from a memory budget), and the loop that runs them under
``torch.inference_mode()`` with a progress bar. A "unit" is one perturbation of every example: ``n_examples``
rows, stacked unit-major (``[unit0: x0, x1, ..., unit1: x0, x1, ...]``, the "repeat" order of
:mod:`attrkit._plumbing`).
"""
from __future__ import annotations

import contextvars
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from ._hooks import hook_handles, module_of
from ._plumbing import batch_size_of, check_choice, check_positive_int, expand_args, expand_target, select_target

BATCH_MEMORY_ENV = "ATTRKIT_BATCH_MEMORY_MB"
DEFAULT_BATCH_MEMORY_MB = 64.0
# On the CPU, batches whose activations outgrow the cache run slower per row (measured on 2 cores: a
# 16k-row MLP batch ~1.7x, 226 CIFAR images ~1.3x, 64 ResNet-18 images ~1.35x slower than the best size).
CPU_MAX_ROWS = 4096
CPU_ACTIVATION_BUDGET_MB = 8.0  # for the largest activation of one forward pass (2x this L2 cache)
PROGRESS_AFTER_SECONDS = 5.0
# What PyTorch's errors say when a forward needs what inference mode withholds: a normal tensor, or autograd
# (a model that takes a gradient inside its forward). Only these send a forward pass to torch.no_grad().
INFERENCE_MODE_ERRORS = ("inference", "does not require grad")


@dataclass(frozen=True)
class PerturbationOptions:
    """How a perturbation method evaluates its perturbations (the public arguments, bundled once).

    ``perturbations_per_eval``: perturbations per forward pass (Captum's meaning), None to size them from
    ``max_batch_memory_mb`` (else ``ATTRKIT_BATCH_MEMORY_MB``, else 64); ``show_progress``: a ``tqdm`` bar,
    True / False / None (automatic in a notebook for long runs); ``desc``: the bar's label.
    """

    perturbations_per_eval: int | None = None
    max_batch_memory_mb: float | None = None
    show_progress: bool | None = None
    desc: str = "perturbations"


def progress_label(method) -> str:
    """The progress bar's label, as Captum writes it: the class name split into words, then "attribution"
    (``FeatureAblation`` -> ``"Feature Ablation attribution"``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(method).__name__) + " attribution"


def attribute_future(method, *args, **kwargs) -> torch.futures.Future:
    """Captum's ``attribute_future``: ``method.attribute(*args, **kwargs)`` for a ``forward_func`` that returns
    a ``torch.futures.Future``. The reference pass is waited for (it sizes the batches); then every forward
    pass is started before any is waited for, so slow remote forwards run side by side (as Captum). The
    attributions come back as a completed Future; an error is raised at once, as ``attribute`` raises it."""
    token = _FUTURES_ALLOWED.set(True)
    try:
        result = method.attribute(*args, **kwargs)
    finally:
        _FUTURES_ALLOWED.reset(token)
    future = torch.futures.Future()
    future.set_result(result)
    return future


#: True inside :func:`attribute_future`: forward passes may return Futures
_FUTURES_ALLOWED = contextvars.ContextVar("attrkit_futures_allowed", default=False)


class _Pending(NamedTuple):
    """A forward pass still running (a Future), with the ``target`` to select once it is done."""

    future: torch.futures.Future
    target: Any

    def value(self):
        return select_target(self.future.wait(), self.target)


def _started(forward_func: Callable, inputs: tuple, target=None, args: tuple = ()):
    """:func:`attrkit._plumbing.run_forward`, except that a Future (under :func:`attribute_future`) comes back
    as a :class:`_Pending` pass, not waited for."""
    out = forward_func(*inputs, *args)
    if not isinstance(out, torch.futures.Future):
        return select_target(out, target)
    if not _FUTURES_ALLOWED.get():
        raise TypeError("`forward_func` returned a torch.futures.Future: call attribute_future() for such models, "
                        "or return tensors.")
    return _Pending(out, target)


def _done(out):
    """The selected output of a forward pass, waiting for it if it is still running."""
    return out.value() if isinstance(out, _Pending) else out


def format_feature_mask(feature_mask, inputs: tuple[Tensor, ...], name: str = "feature_mask") -> tuple[Tensor, ...]:
    """One integer mask per input, of shape ``(1 or n, *example_shape)``: a mask given with fewer dimensions
    or size-1 dimensions (an image's superpixels ``(H, W)`` shared by its channels, say) is broadcast to the
    example's shape (a view), so every method can index it element by element.

    ``None`` makes every scalar of an example its own feature, numbered on across the inputs; an input with
    no rows has none (its mask is empty, ``(0, *example_shape)``), as in Captum.

    An input after the first whose first dimension is not the batch (Captum's "sparse features": the flat
    ids of an ``EmbeddingBag``, say) is perturbed as a whole along that dimension: its mask has a first
    dimension of 1 (``None`` gives one feature per element of ``x[0]``, as Captum does).
    """
    if feature_mask is None:
        out, offset = [], 0
        for x in inputs:
            if x.dim() and x.shape[0] == 0:  # nothing to perturb (an empty list of sparse ids, say)
                out.append(torch.zeros(0, *x.shape[1:], dtype=torch.long, device=x.device))
                continue
            n = math.prod(x.shape[1:])
            out.append(torch.arange(offset, offset + n, device=x.device).reshape(1, *x.shape[1:]))
            offset += n
        return tuple(out)
    items = tuple(feature_mask) if isinstance(feature_mask, (tuple, list)) else (feature_mask,)
    if len(items) != len(inputs):
        raise ValueError(f"`{name}` has {len(items)} entries but `inputs` has {len(inputs)}: give one mask per input.")
    out = []
    for i, (m, x) in enumerate(zip(items, inputs)):
        where = f"`{name}[{i}]`" if len(inputs) > 1 else f"`{name}`"
        if isinstance(m, Tensor) and m.is_floating_point() and torch.equal(m, m.round()):
            m = m.long()  # whole numbers in a float tensor are ids too (Captum compares them by value)
        if not isinstance(m, Tensor) or m.is_floating_point() or m.is_complex():
            got = getattr(m, "dtype", type(m).__name__)
            raise TypeError(f"{where} must be an integer tensor of feature ids (or whole numbers), got {got}.")
        if m.dim() > x.dim() or any(a not in (1, b) for a, b in zip(m.shape[::-1], x.shape[::-1])):
            raise ValueError(
                f"{where} has shape {tuple(m.shape)}, which does not broadcast to the input's shape {tuple(x.shape)}: "
                f"use {tuple(x.shape[1:])}, {(1, *x.shape[1:])}, {tuple(x.shape)} or size-1 dimensions."
            )
        m = m.reshape((1,) * (x.dim() - m.dim()) + tuple(m.shape)).to(device=x.device, dtype=torch.long)
        if m.shape[0] != 1 and i > 0 and x.shape[0] != batch_size_of(inputs):
            raise ValueError(
                f"{where} has a first dimension of {m.shape[0]}, but input {i}'s first dimension ({x.shape[0]}) is "
                f"not the batch ({batch_size_of(inputs)}): such an input is perturbed as a whole along it, so its "
                f"mask must have shape {(1, *x.shape[1:])} (Captum fails on a mask along it)."
            )
        out.append(m.expand(m.shape[0], *x.shape[1:]))
    return tuple(out)


class Features(NamedTuple):
    """Feature masks ready for a perturbation loop: ``masks`` (one per input, ``(1 or n, *example_shape)``),
    ``maps`` (the masks with ids replaced by unit numbers 0..n-1) and ``n`` (the number of features)."""

    masks: tuple
    maps: tuple
    n: int


FEATURE_ID_RULES = ("any", "from_zero", "0..n-1")


def feature_masks(feature_mask, inputs: tuple[Tensor, ...], ids: str = "any", name: str = "feature_mask") -> Features:
    """The one mask normaliser, with the methods' rule for feature ids as an explicit argument:

    * ``"any"`` — any integers; each distinct id is a feature, numbered in order of first appearance
      (:func:`feature_ids`) — feature ablation and permutation;
    * ``"from_zero"`` — shifted so that the smallest id is 0; features 0..max — LIME (as Captum);
    * ``"0..n-1"`` — ids must be non-negative; features 0..max — Shapley values.
    """
    check_choice(ids, "ids", FEATURE_ID_RULES)
    masks = format_feature_mask(feature_mask, inputs, name)
    if feature_mask is None:  # every scalar its own feature, numbered 0, 1, ... already
        return Features(masks, masks, sum(m.numel() for m in masks))
    if ids == "any":
        distinct = feature_ids(masks)
        return Features(masks, unit_maps(masks, distinct), len(distinct))
    if ids == "from_zero":
        low = min(int(m.min()) for m in masks if m.numel())
        masks = masks if low == 0 else tuple(m - low for m in masks)
    elif any(m.numel() and m.min() < 0 for m in masks):
        raise ValueError(f"`{name}` ids must be non-negative integers (0 .. number of features - 1).")
    return Features(masks, masks, 1 + max(int(m.max()) if m.numel() else -1 for m in masks))


def feature_ids(masks: tuple[Tensor, ...]) -> Tensor:
    """The distinct feature ids: those of the first mask in ascending order, then the new ones of the next."""
    seen = torch.cat([torch.unique(m).to(masks[0].device) for m in masks])
    ids, inverse = torch.unique(seen, return_inverse=True)
    position = torch.arange(seen.numel(), device=seen.device)
    first = torch.full_like(ids, seen.numel()).scatter_reduce(0, inverse, position, "amin")
    return ids[first.argsort()]


def unit_maps(masks: tuple[Tensor, ...], ids: Tensor) -> tuple[Tensor, ...]:
    """Each mask with feature ids replaced by their position in ``ids``."""
    order = ids.argsort()
    return tuple(order[torch.searchsorted(ids[order], m.contiguous())] for m in masks)


def spread_units(values: Tensor, maps: tuple[Tensor, ...], inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``values[r, u]`` (one number per output row and unit) spread over the inputs' elements:
    element ``e`` of row ``r`` gets ``values[r, maps[r][e]]``. Shapes ``(rows, *input.shape[1:])``."""
    rows = values.shape[0]
    out = []
    for m, x in zip(maps, inputs):
        if m.numel() == 0:  # an empty input (or mask): nothing was perturbed, nothing to credit
            out.append(values.new_zeros(rows, *x.shape[1:]))
            continue
        if m.shape[0] not in (1, rows):  # per-example masks, several outputs per example: each output's own
            m = m.repeat_interleave(rows // m.shape[0], 0)
        index = m.expand(rows, *x.shape[1:]).reshape(rows, -1)
        out.append(values.gather(1, index).reshape(rows, *x.shape[1:]))
    return tuple(out)


def output_mode(objective: Tensor, n_examples: int, name: str = "target") -> tuple[bool, int]:
    """Does the model give outputs per example (``(False, numel)``: one number each, or several that are
    each attributed, as Captum does with ``target=None``), or a fixed-size output for the whole batch
    (``(True, numel)``: an "aggregate" such as a loss)?"""
    if not isinstance(objective, Tensor):
        raise TypeError(f"the model must return a tensor, got {type(objective).__name__}.")
    if objective.dim() == 0 or (n_examples > 1 and objective.numel() == 1):
        return True, 1
    return objective.shape[0] != n_examples, objective.numel()


def batch_memory_mb(max_batch_memory_mb=None) -> float:
    """The memory budget for the perturbed inputs of one forward pass, in MB: the argument, else the
    environment variable ``ATTRKIT_BATCH_MEMORY_MB``, else 64."""
    if max_batch_memory_mb is not None:
        return megabytes(max_batch_memory_mb, "max_batch_memory_mb")
    return megabytes(os.environ.get(BATCH_MEMORY_ENV, DEFAULT_BATCH_MEMORY_MB), BATCH_MEMORY_ENV)


def megabytes(value, name: str) -> float:
    """``value`` as a positive number of megabytes; a ``ValueError`` naming ``name`` otherwise."""
    try:
        mb = float(value)
    except (TypeError, ValueError):
        mb = float("nan")
    if not mb > 0:
        raise ValueError(f"`{name}` must be a positive number of megabytes, got {value!r}.")
    return mb


def units_per_eval(inputs: tuple[Tensor, ...], args: tuple, n_units: int, aggregate: bool,
                   options: PerturbationOptions = PerturbationOptions(), activation_bytes: int = 0) -> int:
    """How many perturbations go into one forward pass: ``perturbations_per_eval`` when given (Captum's
    meaning), otherwise as many as fit the memory budget; on the CPU also at most ``CPU_MAX_ROWS`` rows and
    ``CPU_ACTIVATION_BUDGET_MB`` for the largest activation (``activation_bytes``: its size for one unit).
    A model that aggregates over the batch gets one, and so do inputs whose first dimension is not the batch
    (a perturbed copy of those cannot be stacked onto another: the model would read them as one longer input)."""
    k = options.perturbations_per_eval
    k = None if k is None else check_positive_int(k, "perturbations_per_eval")
    non_batch = _non_batch_input(inputs)
    if non_batch is not None and k not in (None, 1):
        i, x = non_batch
        raise ValueError(
            f"`perturbations_per_eval` must be 1 (or None) when an input's first dimension is not the batch: input "
            f"{i} has {x.shape[0]} rows for a batch of {batch_size_of(inputs)}, and perturbed copies of it cannot be "
            f"stacked into one forward pass (the model would read one longer input; Captum stacks them and gives "
            f"wrong numbers); got {k}.")
    if aggregate and k is not None and k > 1:
        raise ValueError("`perturbations_per_eval` must be 1 when the model returns one output for the whole "
                         "batch (it cannot tell perturbations apart).")
    if k is not None:
        return min(k, max(n_units, 1))
    budget = batch_memory_mb(options.max_batch_memory_mb) * 2**20
    if aggregate or non_batch is not None:
        return 1
    unit_bytes = sum(t.numel() * t.element_size() for t in (*inputs, *args) if isinstance(t, Tensor) and t.dim())
    per_eval = budget // max(unit_bytes, 1)
    if inputs[0].device.type == "cpu":
        per_eval = min(per_eval, CPU_MAX_ROWS // max(batch_size_of(inputs), 1),
                       CPU_ACTIVATION_BUDGET_MB * 2**20 // max(activation_bytes, 1))
    return int(min(max(n_units, 1), max(1, per_eval)))


def _non_batch_input(inputs: tuple[Tensor, ...]) -> tuple[int, Tensor] | None:
    """The first input whose first dimension is not the batch (a "sparse feature"), with its position."""
    n = batch_size_of(inputs)
    return next(((i, x) for i, x in enumerate(inputs) if i and (x.dim() == 0 or x.shape[0] != n)), None)


def evaluate_perturbations(forward_func: Callable, build: Callable[[range], tuple], n_units: int, per_eval: int,
                           target=None, args: tuple = (), n_outputs: int = 1,
                           options: PerturbationOptions = PerturbationOptions()) -> Tensor:
    """Run ``forward_func`` on ``build(units)`` for every unit, ``per_eval`` units per forward pass.

    Returns the selected outputs as a ``(n_units, n_outputs)`` tensor (a normal tensor, usable with autograd
    later). Forward passes run under ``torch.inference_mode()`` (see :func:`without_grad`).
    ``options.show_progress``: True / False, or None for a ``tqdm`` bar only in a notebook, and only when
    the first batch predicts more than a few seconds.
    """
    passes, inference = [], not _FUTURES_ALLOWED.get()  # a Future's work runs on other threads, outside it
    bar = _ProgressBar(n_units, options.show_progress, options.desc)
    start = 0
    try:
        while start < n_units:
            units = range(start, min(start + per_eval, n_units))
            k = len(units)
            out, inference = without_grad(
                lambda: _started(forward_func, build(units), expand_target(target, k), expand_args(args, k)),
                inference)
            if k > 1 and options.perturbations_per_eval is None and _one_unit_only(out, n_outputs):
                per_eval = 1  # a model whose output does not grow with the batch (one example hid it): as Captum
                continue
            passes.append((out, k))
            bar.update(k)
            start += k
    finally:
        bar.close()
    torch.futures.wait_all([out.future for out, _ in passes if isinstance(out, _Pending)])  # all started first
    outputs = [_unit_rows(_done(out), k, n_outputs) for out, k in passes]
    return torch.cat(outputs) if outputs else torch.zeros(0, n_outputs)  # (no units: nothing to place)


def evaluate_with_reference(forward_func: Callable, reference_inputs: tuple[Tensor, ...],
                            build: Callable[[range], tuple], n_units: int, target=None, args: tuple = (),
                            options: PerturbationOptions = PerturbationOptions(), masks: tuple = ()):
    """The output on the unperturbed ``reference_inputs`` and on every unit of ``build``.

    Returns ``(reference, outputs)``: ``reference`` shaped as the model gives it (``n_outputs`` numbers),
    ``outputs`` ``(n_units, n_outputs)``. The reference pass also tells whether the model aggregates over the batch (a
    loss, say: then it gets one unit at a time, Captum's rule, and the feature ``masks`` must be shared by
    the batch) and, on the CPU, how large its activations are, to size the batches.
    """
    n = batch_size_of(reference_inputs)
    cpu = reference_inputs[0].device.type == "cpu"
    reference, activation = reference_output(forward_func, reference_inputs, target, args, measure=cpu)
    if n == 0:  # an empty batch: no outputs to compare, so empty attributions (as Captum)
        return reference.reshape(0), reference.new_zeros(n_units, 0)
    aggregate, n_outputs = output_mode(reference, n)
    if aggregate and any(m.numel() and m.shape[0] != 1 for m in masks):
        raise ValueError("`feature_mask` must have a first dimension of 1 when the model returns one output for "
                         "the whole batch: the attribution is for the batch, so features must be the same.")
    per_eval = units_per_eval(reference_inputs, args, n_units, aggregate, options, activation)
    outputs = evaluate_perturbations(forward_func, build, n_units, per_eval, target, args, n_outputs, options)
    return reference, outputs


def without_grad(fn: Callable[[], Any], inference: bool = True) -> tuple[Any, bool]:
    """``fn()`` under ``torch.inference_mode()``. A model that fails there because of inference mode (one
    that needs autograd inside its forward, say: :data:`INFERENCE_MODE_ERRORS`) is run again under
    ``torch.no_grad()``; any other error is raised at once. Returns ``(result, whether inference mode
    worked)``."""
    if inference:
        try:
            with torch.inference_mode():
                return fn(), True
        except RuntimeError as error:
            if not any(marker in str(error).lower() for marker in INFERENCE_MODE_ERRORS):
                raise
    with torch.no_grad():
        return fn(), False


def reference_output(forward_func: Callable, inputs: tuple[Tensor, ...], target=None, args: tuple = (),
                     measure: bool = False):
    """The selected output on the unperturbed ``inputs``, shaped as the model gives it (a normal tensor).

    With ``measure``, returns ``(output, bytes)``, ``bytes`` the size of the largest activation inside the
    model during this pass (forward hooks on its modules, removed at once; 0 if it is not a module).
    """
    sizes = [0]

    def record(module, _inputs, output):
        if isinstance(output, Tensor):
            sizes.append(output.numel() * output.element_size())

    owner = module_of(forward_func)
    modules = list(owner.modules()) if measure and owner is not None else []
    with hook_handles() as handles:
        handles.extend(m.register_forward_hook(record) for m in modules)
        out, _ = without_grad(lambda: _started(forward_func, inputs, target, args), not _FUTURES_ALLOWED.get())
    out = as_output(_done(out)).clone()
    return (out, max(sizes)) if measure else out


def _one_unit_only(out, n_outputs: int) -> bool:
    """A batched pass that returned one perturbation's worth of outputs: the model aggregates over the batch."""
    return not isinstance(out, _Pending) and as_output(out).numel() == n_outputs


def as_output(out) -> Tensor:
    """A model's output as a tensor; a Python float is a float64 number (as Captum reads it), an int an int64."""
    if isinstance(out, float):
        return torch.tensor(out, dtype=torch.float64)
    return torch.as_tensor(out)


def _unit_rows(out, k: int, n_outputs: int) -> Tensor:
    out = as_output(out)
    if out.numel() != k * n_outputs:
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} for {k} perturbation(s) of the batch; expected "
            f"{n_outputs} number(s) each. A model that returns one output for the whole batch needs "
            f"`perturbations_per_eval=1`."
        )
    return out.reshape(k, n_outputs)


def _in_notebook() -> bool:
    """A Jupyter kernel (also Colab's and VS Code's, which derive from it), not a terminal IPython."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


class _ProgressBar:
    """A ``tqdm.auto`` bar that opens at once (``show=True``), never (``False``), or (``None``) in a notebook
    once the first batch predicts a run longer than ``PROGRESS_AFTER_SECONDS``."""

    def __init__(self, total: int, show, desc: str):
        self.total, self.show, self.desc, self.done, self.bar = total, show, desc, 0, None
        self.started = time.perf_counter()
        if show:
            self._open()

    def _open(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="perturbation", initial=self.done)

    def update(self, n: int):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.show is None:  # decide once, after the first batch
            self.show = False
            predicted = (time.perf_counter() - self.started) * self.total / self.done
            if self.done < self.total and predicted > PROGRESS_AFTER_SECONDS and _in_notebook():
                self._open()

    def close(self):
        if self.bar is not None:
            self.bar.close()
