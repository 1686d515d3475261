"""Shape plumbing shared by every algorithm — written once, here.

Everything an ``attribute()`` call receives is normalised in this module:

* ``inputs``: a tensor or a tuple of tensors -> always a tuple internally
  (:func:`as_tuple`), and turned back on the way out (:func:`restore`);
* ``baselines``: None, a number, a tensor (per example or broadcastable), or a
  tuple of those (:func:`format_baselines`);
* ``target``: None, an int, a tuple index, a tensor of one index per example, or
  a list of ints or tuples (:func:`select_target`, :func:`expand_target`);
* ``additional_forward_args``: a single object or a tuple, tensors repeated along
  the batch when the inputs are expanded (:func:`format_args`,
  :func:`expand_args`);
* expansion over integration steps or samples, and splitting the expanded rows
  into batches of ``internal_batch_size`` (:func:`chunks`).

The two expansion orders used throughout:

* ``"repeat"`` (step-major): ``[x0, x1, x0, x1, ...]`` — integration steps;
* ``"interleave"`` (sample-major): ``[x0, x0, x1, x1, ...]`` — noise samples.
"""
from __future__ import annotations

import numbers
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

TensorOrTuple = "Tensor | tuple[Tensor, ...]"


# --------------------------------------------------------------------------- inputs
def as_tuple(inputs, name: str = "inputs") -> tuple[tuple[Tensor, ...], bool]:
    """Return ``(inputs as a tuple, whether the caller passed a tuple)``."""
    is_tuple = isinstance(inputs, (tuple, list))
    items = tuple(inputs) if is_tuple else (inputs,)
    if not items:
        raise ValueError(f"`{name}` is empty: pass a tensor or a non-empty tuple of tensors.")
    for i, x in enumerate(items):
        if not isinstance(x, Tensor):
            what = f"entry {i} is a {type(x).__name__}" if is_tuple else f"got a {type(x).__name__}"
            raise TypeError(f"`{name}` must be a torch.Tensor or a tuple of tensors; {what}.")
    if is_tuple and len({x.shape[0] if x.dim() else None for x in items}) > 1:
        shapes = ", ".join(str(tuple(x.shape)) for x in items)
        raise ValueError(f"`{name}` tensors must share the batch dimension (dim 0); got shapes {shapes}.")
    return items, is_tuple


def restore(items: Sequence[Tensor], is_tuple: bool):
    """Inverse of :func:`as_tuple`: a tuple in gives a tuple out, a tensor gives a tensor."""
    return tuple(items) if is_tuple else items[0]


def batch_size_of(inputs: tuple[Tensor, ...]) -> int:
    return inputs[0].shape[0] if inputs[0].dim() else 1


# --------------------------------------------------------------------------- baselines
def format_baselines(baselines, inputs: tuple[Tensor, ...], name: str = "baselines") -> tuple[Tensor, ...]:
    """Normalise ``baselines`` to one tensor per input, broadcast to that input's shape.

    Accepts None (zeros), a number, a tensor of the input's shape, of the shape of
    one example, with a batch dimension of 1, or anything else that broadcasts.
    """
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in inputs)
    items = tuple(baselines) if isinstance(baselines, (tuple, list)) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(
            f"`{name}` has {len(items)} entries but `inputs` has {len(inputs)}: give one baseline per input tensor."
        )
    return tuple(_broadcast_baseline(b, x, name, i, len(inputs) > 1) for i, (b, x) in enumerate(zip(items, inputs)))


def _broadcast_baseline(b, x: Tensor, name: str, i: int, many: bool) -> Tensor:
    where = f"`{name}[{i}]`" if many else f"`{name}`"
    if b is None:
        return torch.zeros_like(x)
    if isinstance(b, numbers.Number):
        return torch.full_like(x, b)
    if not isinstance(b, Tensor):
        raise TypeError(f"{where} must be None, a number or a tensor, got {type(b).__name__}.")
    b = b.to(device=x.device, dtype=x.dtype if x.is_floating_point() else b.dtype)
    try:
        return b.expand_as(x) if b.dim() <= x.dim() else _fail()
    except RuntimeError:
        raise ValueError(
            f"{where} has shape {tuple(b.shape)}, which does not broadcast to the input's shape {tuple(x.shape)}. "
            f"Use a number, a tensor of shape {tuple(x.shape)}, {tuple(x.shape[1:])} or {(1, *x.shape[1:])}."
        ) from None


def _fail():
    raise RuntimeError


def baseline_distribution(baselines, inputs: tuple[Tensor, ...], name: str = "baselines") -> tuple[Tensor, ...]:
    """Baselines given as a *distribution* (GradientShap, DeepLiftShap): one tensor of
    ``(n_baselines, *example_shape)`` per input. A callable is called with the inputs."""
    if callable(baselines):
        baselines = baselines(*inputs) if len(inputs) > 1 else baselines(inputs[0])
    if baselines is None:
        raise ValueError(f"`{name}` is required here: give a tensor of reference examples (n, *example_shape).")
    items = tuple(baselines) if isinstance(baselines, (tuple, list)) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"`{name}` has {len(items)} entries but `inputs` has {len(inputs)}.")
    out = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, numbers.Number):
            b = torch.full((1, *x.shape[1:]), float(b), dtype=x.dtype, device=x.device)
        if not isinstance(b, Tensor):
            raise TypeError(f"`{name}` entries must be tensors or numbers, got {type(b).__name__}.")
        if b.dim() == x.dim() - 1:
            b = b.unsqueeze(0)
        if tuple(b.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"`{name}` entry {i} has shape {tuple(b.shape)}; expected (n_baselines, {', '.join(map(str, x.shape[1:]))})"
                f" to match one example of the input {tuple(x.shape)}."
            )
        out.append(b.to(device=x.device, dtype=x.dtype))
    return tuple(out)


# --------------------------------------------------------------------------- additional forward args
def format_args(additional_forward_args) -> tuple:
    """None -> (), a tuple stays a tuple, anything else becomes a 1-tuple."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def expand_args(args: tuple, n: int, order: str = "repeat") -> tuple:
    """Repeat every tensor argument (with a batch dimension) ``n`` times; pass others through."""
    if n == 1:
        return args
    return tuple(_expand_rows(a, n, order) if isinstance(a, Tensor) and a.dim() > 0 else a for a in args)


def _expand_rows(x: Tensor, n: int, order: str) -> Tensor:
    if order == "repeat":
        return x.repeat(n, *([1] * (x.dim() - 1)))
    if order == "interleave":
        return x.repeat_interleave(n, dim=0)
    raise ValueError(f"unknown expansion order {order!r}")


def expand(items: tuple[Tensor, ...], n: int, order: str = "repeat") -> tuple[Tensor, ...]:
    """Repeat each tensor's rows ``n`` times (``"repeat"``: step-major, ``"interleave"``: sample-major)."""
    return items if n == 1 else tuple(_expand_rows(x, n, order) for x in items)


# --------------------------------------------------------------------------- targets
def validate_target(target, name: str = "target"):
    """Type-check ``target`` early so that the error names it."""
    if target is None or isinstance(target, (numbers.Integral, tuple)):
        return target
    if isinstance(target, Tensor):
        if target.is_floating_point():
            raise TypeError(f"`{name}` must hold integer class indices, got a {target.dtype} tensor.")
        return target
    if isinstance(target, list):
        if target and not all(isinstance(t, (numbers.Integral, tuple)) for t in target):
            raise TypeError(f"`{name}` as a list must hold ints or tuples (one per example).")
        return target
    raise TypeError(f"`{name}` must be None, an int, a tuple, a tensor or a list; got {type(target).__name__}.")


def expand_target(target, n: int, order: str = "repeat"):
    """Repeat a per-example ``target`` to follow inputs that were expanded ``n`` times."""
    if n == 1 or target is None or isinstance(target, (numbers.Integral, tuple)):
        return target
    if isinstance(target, Tensor):
        if target.numel() <= 1:
            return target
        return _expand_rows(target, n, order)
    if isinstance(target, list):
        return target * n if order == "repeat" else [t for t in target for _ in range(n)]
    return target


def select_target(output: Tensor, target, name: str = "target") -> Tensor:
    """Pick each example's scalar objective out of the model ``output``.

    ``None`` keeps the output as it is (it must then hold one number per example),
    an int or a tuple indexes every example alike, a tensor or list gives one index
    (or index tuple) per example.
    """
    if target is None:
        return output
    if not isinstance(output, Tensor):
        raise TypeError(f"the model returned {type(output).__name__}; `{name}` can only index a tensor output.")
    n = output.shape[0] if output.dim() else 0
    if isinstance(target, Tensor):
        if target.numel() == 1:
            target = int(target.reshape(()).item())
        else:
            if target.dim() != 1 or target.numel() != n:
                raise ValueError(
                    f"`{name}` as a tensor must hold one index per example: expected shape ({n},), got {tuple(target.shape)}."
                )
            _check_range(output, 1, target, name)
            return output[torch.arange(n, device=output.device), target.to(output.device)]
    if isinstance(target, numbers.Integral):
        target = (int(target),)
    if isinstance(target, tuple):
        if output.dim() < 1 + len(target):
            raise ValueError(
                f"`{name}`={target!r} indexes {len(target)} dimension(s) after the batch, but the model output has "
                f"shape {tuple(output.shape)}."
            )
        for d, t in enumerate(target):
            _check_range(output, d + 1, t, name)
        return output[(slice(None), *target)]
    if isinstance(target, list):
        if len(target) != n:
            raise ValueError(f"`{name}` as a list must have one entry per example ({n}), got {len(target)}.")
        if all(isinstance(t, numbers.Integral) for t in target):
            idx = torch.as_tensor(target, device=output.device)
            _check_range(output, 1, idx, name)
            return output[torch.arange(n, device=output.device), idx]
        cols = list(zip(*[t if isinstance(t, tuple) else (t,) for t in target]))
        for d, col in enumerate(cols):
            _check_range(output, d + 1, torch.as_tensor(col), name)
        rows = torch.arange(n, device=output.device)
        return output[(rows, *[torch.as_tensor(c, device=output.device) for c in cols])]
    raise TypeError(f"`{name}` must be None, an int, a tuple, a tensor or a list; got {type(target).__name__}.")


def _check_range(output: Tensor, dim: int, index, name: str):
    if output.dim() <= dim:
        raise ValueError(
            f"`{name}` indexes dimension {dim} of the model output, but the output has shape {tuple(output.shape)}."
        )
    size = output.shape[dim]
    if isinstance(index, Tensor):
        if not index.numel():
            return
        lo, hi = int(index.min()), int(index.max())
    else:
        lo = hi = int(index)
    if lo < -size or hi >= size:
        bad = hi if hi >= size else lo
        raise ValueError(
            f"`{name}` index {bad} is outside the model output's dimension {dim} of size {size} "
            f"(output shape {tuple(output.shape)})."
        )


# --------------------------------------------------------------------------- forward passes
def run_forward(forward_func: Callable, inputs: tuple[Tensor, ...], target=None, args: tuple = ()) -> Tensor:
    """Call ``forward_func(*inputs, *args)`` and select ``target``."""
    output = forward_func(*inputs, *args)
    return select_target(output, target)


def per_example(objective: Tensor, n: int, name: str = "target") -> Tensor:
    """Check that ``objective`` has one number per example and return it as shape ``(n,)``."""
    if objective.dim() == 0 and n == 1:
        return objective.reshape(1)
    if objective.dim() == 0 or objective.shape[0] != n or objective[0].numel() != 1:
        raise ValueError(
            f"the model output (after applying `{name}`) has shape {tuple(objective.shape)}, not one number per "
            f"example: give `{name}` (e.g. a class index) to choose which output to explain."
        )
    return objective.reshape(n)


def gradients(forward_func: Callable, inputs: tuple[Tensor, ...], target=None, args: tuple = ()) -> tuple[Tensor, ...]:
    """Gradient of each example's selected output with respect to ``inputs``.

    The inputs are detached and made leaves here, so the caller's tensors and
    their ``requires_grad`` flags are never touched.
    """
    leaves = tuple(x.detach().requires_grad_() for x in inputs)
    with torch.enable_grad():
        out = per_example(run_forward(forward_func, leaves, target, args), batch_size_of(leaves))
        grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))


def scalar_outputs(forward_func: Callable, inputs: tuple[Tensor, ...], target=None, args: tuple = ()) -> Tensor:
    """Each example's selected output, shape ``(n,)``, without building a graph."""
    with torch.no_grad():
        return per_example(run_forward(forward_func, inputs, target, args), batch_size_of(inputs))


# --------------------------------------------------------------------------- batching
def chunks(n_items: int, n_examples: int, internal_batch_size: int | None) -> Iterator[range]:
    """Split ``n_items`` expansion units (steps or samples) into groups whose
    ``n_examples`` rows each fit in ``internal_batch_size`` rows (at least one unit)."""
    if internal_batch_size is None:
        yield range(n_items)
        return
    if not isinstance(internal_batch_size, numbers.Integral) or internal_batch_size < 1:
        raise ValueError(f"`internal_batch_size` must be a positive int or None, got {internal_batch_size!r}.")
    per = max(1, int(internal_batch_size) // max(n_examples, 1))
    for start in range(0, n_items, per):
        yield range(start, min(start + per, n_items))


def sum_per_example(items: Sequence[Tensor]) -> Tensor:
    """Sum every tensor over all but the batch dimension and add them up: shape ``(n,)``."""
    return sum(x.reshape(x.shape[0], -1).sum(1) for x in items)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


# --------------------------------------------------------------------------- integration rules
INTEGRATION_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def integration_rule(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Return ``(step_weights, alphas)`` for a path integral over [0, 1].

    ``sum_k step_weights[k] * g(alphas[k])`` approximates the integral of ``g``.
    """
    check_choice(method, "method", INTEGRATION_METHODS)
    n = check_positive_int(n_steps, "n_steps")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return list(0.5 * weights), list(0.5 * (nodes + 1))
    if method == "riemann_trapezoid":
        if n < 2:
            raise ValueError("`n_steps` must be >= 2 for method='riemann_trapezoid'.")
        w = [1.0 / (n - 1)] * n
        w[0] = w[-1] = 0.5 / (n - 1)
        return w, list(np.linspace(0.0, 1.0, n))
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return [1.0 / n] * n, [(k + offset) / n for k in range(n)]


def path_points(inputs: tuple[Tensor, ...], baselines: tuple[Tensor, ...], alphas: Sequence[float]) -> tuple[Tensor, ...]:
    """Stack ``baseline + alpha * (input - baseline)`` for every alpha (step-major rows)."""
    out = []
    for x, b in zip(inputs, baselines):
        a = torch.as_tensor(list(alphas), dtype=x.dtype, device=x.device).reshape(-1, *([1] * x.dim()))
        out.append((b.unsqueeze(0) + a * (x - b).unsqueeze(0)).reshape(-1, *x.shape[1:]))
    return tuple(out)


def step_weights_tensor(weights: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(list(weights), dtype=like.dtype, device=like.device)


def weighted_step_sum(values: Tensor, weights: Tensor, n_examples: int) -> Tensor:
    """``sum_k weights[k] * values[k*n:(k+1)*n]`` for step-major rows."""
    v = values.reshape(len(weights), n_examples, *values.shape[1:])
    return torch.tensordot(weights.to(v.dtype), v, dims=([0], [0]))


# =========================================================================== perturbation batching
# Added by the perturbation family (perturbation.py, shapley.py). A perturbation method evaluates the model
# on many perturbed copies of the inputs. Here, once: feature masks, how many copies go into one forward
# pass (from a memory budget), and the loop that runs them under ``torch.inference_mode()`` with a progress
# bar. A "unit" is one perturbation of every example: ``n_examples`` rows, stacked unit-major
# (``[unit0: x0, x1, ..., unit1: x0, x1, ...]``, the "repeat" order).

BATCH_MEMORY_ENV = "ATTRKIT_BATCH_MEMORY_MB"
DEFAULT_BATCH_MEMORY_MB = 64.0
# On the CPU, batches whose activations outgrow the cache run slower per row (measured on 2 cores: a
# 16k-row MLP batch ~1.7x, 226 CIFAR images ~1.3x, 64 ResNet-18 images ~1.35x slower than the best size).
CPU_MAX_ROWS = 4096
CPU_ACTIVATION_BUDGET_MB = 8.0  # for the largest activation of one forward pass (2x this L2 cache)
PROGRESS_AFTER_SECONDS = 5.0


def format_feature_mask(feature_mask, inputs: tuple[Tensor, ...], name: str = "feature_mask") -> tuple[Tensor, ...]:
    """One integer mask per input, broadcastable to it, padded on the left to the input's rank.

    ``None`` makes every scalar of an example its own feature, numbered on across the inputs.
    """
    if feature_mask is None:
        out, offset = [], 0
        for x in inputs:
            n = x[0:1].numel()
            out.append(torch.arange(offset, offset + n, device=x.device).reshape(1, *x.shape[1:]))
            offset += n
        return tuple(out)
    items = tuple(feature_mask) if isinstance(feature_mask, (tuple, list)) else (feature_mask,)
    if len(items) != len(inputs):
        raise ValueError(f"`{name}` has {len(items)} entries but `inputs` has {len(inputs)}: give one mask per input.")
    out = []
    for i, (m, x) in enumerate(zip(items, inputs)):
        where = f"`{name}[{i}]`" if len(inputs) > 1 else f"`{name}`"
        if not isinstance(m, Tensor) or m.is_floating_point() or m.is_complex():
            got = getattr(m, "dtype", type(m).__name__)
            raise TypeError(f"{where} must be an integer tensor of feature ids, got {got}.")
        if m.dim() > x.dim() or any(a not in (1, b) for a, b in zip(m.shape[::-1], x.shape[::-1])):
            raise ValueError(
                f"{where} has shape {tuple(m.shape)}, which does not broadcast to the input's shape {tuple(x.shape)}: "
                f"use {tuple(x.shape[1:])}, {(1, *x.shape[1:])}, {tuple(x.shape)} or size-1 dimensions."
            )
        out.append(m.reshape((1,) * (x.dim() - m.dim()) + tuple(m.shape)).to(device=x.device, dtype=torch.long))
    return tuple(out)


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
    return tuple(order[torch.searchsorted(ids[order], m)] for m in masks)


def spread_units(values: Tensor, maps: tuple[Tensor, ...], inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``values[r, u]`` (one number per output row and unit) spread over the inputs' elements:
    element ``e`` of row ``r`` gets ``values[r, maps[r][e]]``. Shapes ``(rows, *input.shape[1:])``."""
    rows = values.shape[0]
    out = []
    for m, x in zip(maps, inputs):
        index = m.expand(rows if m.shape[0] == 1 else m.shape[0], *x.shape[1:]).reshape(rows, -1)
        out.append(values.gather(1, index).reshape(rows, *x.shape[1:]))
    return tuple(out)


def output_mode(objective: Tensor, n_examples: int, name: str = "target") -> tuple[bool, int]:
    """Does the model give one number per example (``(False, n)``), or a fixed-size output for the whole
    batch (``(True, numel)``: an "aggregate" such as a loss)?"""
    if not isinstance(objective, Tensor):
        raise TypeError(f"the model must return a tensor, got {type(objective).__name__}.")
    if objective.dim() == 0 or (n_examples > 1 and objective.numel() == 1):
        return True, 1
    if objective.shape[0] != n_examples:
        return True, objective.numel()
    per_example(objective, n_examples, name)
    return False, n_examples


def batch_memory_mb(max_batch_memory_mb=None) -> float:
    """The memory budget for the perturbed inputs of one forward pass, in MB: the argument, else the
    environment variable ``ATTRKIT_BATCH_MEMORY_MB``, else 64."""
    name, value = "max_batch_memory_mb", max_batch_memory_mb
    if value is None:
        name, value = BATCH_MEMORY_ENV, os.environ.get(BATCH_MEMORY_ENV, DEFAULT_BATCH_MEMORY_MB)
    try:
        mb = float(value)
    except (TypeError, ValueError):
        mb = float("nan")
    if not mb > 0:
        raise ValueError(f"`{name}` must be a positive number of megabytes, got {value!r}.")
    return mb


def units_per_eval(inputs: tuple[Tensor, ...], args: tuple, n_units: int, aggregate: bool,
                   perturbations_per_eval=None, max_batch_memory_mb=None, activation_bytes: int = 0) -> int:
    """How many perturbations go into one forward pass: ``perturbations_per_eval`` when given (Captum's
    meaning), otherwise as many as fit the memory budget; on the CPU also at most ``CPU_MAX_ROWS`` rows and
    ``CPU_ACTIVATION_BUDGET_MB`` for the largest activation (``activation_bytes``: its size for one unit).
    A model that aggregates over the batch gets one."""
    if perturbations_per_eval is not None:
        k = check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        if aggregate and k > 1:
            raise ValueError("`perturbations_per_eval` must be 1 when the model returns one output for the whole "
                             "batch (it cannot tell perturbations apart).")
        return min(k, max(n_units, 1))
    budget = batch_memory_mb(max_batch_memory_mb) * 2**20
    if aggregate:
        return 1
    unit_bytes = sum(t.numel() * t.element_size() for t in (*inputs, *args) if isinstance(t, Tensor) and t.dim())
    per_eval = budget // max(unit_bytes, 1)
    if inputs[0].device.type == "cpu":
        per_eval = min(per_eval, CPU_MAX_ROWS // max(batch_size_of(inputs), 1),
                       CPU_ACTIVATION_BUDGET_MB * 2**20 // max(activation_bytes, 1))
    return int(min(max(n_units, 1), max(1, per_eval)))


def evaluate_perturbations(forward_func: Callable, build: Callable[[range], tuple], n_units: int, per_eval: int,
                           target=None, args: tuple = (), n_outputs: int = 1, show_progress=None,
                           desc: str = "perturbations") -> Tensor:
    """Run ``forward_func`` on ``build(units)`` for every unit, ``per_eval`` units per forward pass.

    Returns the selected outputs as a ``(n_units, n_outputs)`` tensor (a normal tensor, usable with autograd
    later). Forward passes run under ``torch.inference_mode()`` (see :func:`without_grad`).
    ``show_progress``: True / False, or None for a ``tqdm`` bar only in a notebook, and only when the first
    batch predicts more than a few seconds.
    """
    outputs, inference = [], True
    bar = _ProgressBar(n_units, show_progress, desc)
    try:
        for start in range(0, n_units, per_eval):
            units = range(start, min(start + per_eval, n_units))
            k = len(units)
            out, inference = without_grad(
                lambda: run_forward(forward_func, build(units), expand_target(target, k), expand_args(args, k)),
                inference)
            outputs.append(_unit_rows(out, k, n_outputs))
            bar.update(k)
    finally:
        bar.close()
    return torch.cat(outputs) if outputs else torch.zeros(0, n_outputs)  # (no units: nothing to place)


def evaluate_with_reference(forward_func: Callable, reference_inputs: tuple[Tensor, ...],
                            build: Callable[[range], tuple], n_units: int, target=None, args: tuple = (),
                            perturbations_per_eval=None, max_batch_memory_mb=None, show_progress=None,
                            desc: str = "perturbations"):
    """The output on the unperturbed ``reference_inputs`` and on every unit of ``build``.

    Returns ``(reference, outputs, aggregate)``: ``reference`` shaped ``(n_outputs,)``, ``outputs``
    ``(n_units, n_outputs)``. The reference pass also tells whether the model aggregates over the batch (a
    loss, say: then it gets one unit at a time, Captum's rule, and ``aggregate`` is True) and, on the CPU,
    how large its activations are, to size the batches.
    """
    n = batch_size_of(reference_inputs)
    cpu = reference_inputs[0].device.type == "cpu"
    reference, activation = reference_output(forward_func, reference_inputs, target, args, measure=cpu)
    aggregate, n_outputs = output_mode(reference, n)
    per_eval = units_per_eval(reference_inputs, args, n_units, aggregate, perturbations_per_eval,
                              max_batch_memory_mb, activation)
    outputs = evaluate_perturbations(forward_func, build, n_units, per_eval, target, args, n_outputs,
                                     show_progress, desc)
    return reference.reshape(n_outputs), outputs, aggregate


def without_grad(fn: Callable[[], Any], inference: bool = True) -> tuple[Any, bool]:
    """``fn()`` under ``torch.inference_mode()``. A model that fails there (one that needs autograd inside
    its forward, say) is run again under ``torch.no_grad()``, whose error, if any, is the one raised.
    Returns ``(result, whether inference mode worked)``."""
    if inference:
        try:
            with torch.inference_mode():
                return fn(), True
        except RuntimeError:
            pass
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

    owner = forward_func if isinstance(forward_func, torch.nn.Module) else getattr(forward_func, "__self__", None)
    modules = list(owner.modules()) if measure and isinstance(owner, torch.nn.Module) else []
    from ._hooks import hook_handles

    with hook_handles() as handles:
        handles.extend(m.register_forward_hook(record) for m in modules)
        out, _ = without_grad(lambda: run_forward(forward_func, inputs, target, args))
    out = torch.as_tensor(out).clone()
    return (out, max(sizes)) if measure else out


def _unit_rows(out, k: int, n_outputs: int) -> Tensor:
    out = torch.as_tensor(out)
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
