"""Exact incremental inference for :class:`~attrkit.Occlusion`: recompute only what a patch can change.

An occluded copy of an image differs from the clean image inside the patch only. After a 3x3 convolution it
differs in the patch and a one-pixel rim, after a stride-2 layer in half as many rows, and so on, until a layer
that mixes all positions (global pooling, a linear layer, attention) spreads the change everywhere. This package
runs the model once on the clean input, keeps every intermediate tensor, and for each batch of patches
recomputes each local layer only on the region the patch can reach, reading the clean tensor around it (the
halo), until the first non-local layer; from there the copies run as usual. The result is the batched path's
result (the same arithmetic on the same numbers, up to float rounding), with a fraction of the work.

The parts, in the order they run:

* :mod:`.trace` — trace the model with ``torch.fx`` and run it once on the clean input, keeping every value;
* :mod:`.rules` — which traced operations are local, and how a changed region moves through them;
* :mod:`.plan` — one :class:`~.plan.Step` per node (its :class:`~.rules.Kind`, rule and region) and the cost;
* :mod:`.run` — a batch of windows through the plan.

Anything the trace cannot prove local is computed the ordinary way, and a model that cannot be traced (or has
hooks, several inputs, extra arguments, modules in training mode) falls back to the batched path.
:func:`evaluator` estimates the arithmetic first and uses the incremental path only where it saves enough, and
not for tiny jobs, where planning costs more than it saves. ``ATTRKIT_INCREMENTAL=off`` turns it off;
``=always`` uses it wherever it applies (for tests).

Opt-in and *not exact*: ``ATTRKIT_INCREMENTAL=approximate:0.4`` is Krypton's approximate mode — no changed
region grows beyond 40% of its map's height and width, and changes outside it are ignored. Less work, but a
different map: on the book's photos with EfficientNet-Lite0 (thresholds 0.4 and 0.6, windows 24 and 64 px) its
correlation with the exact map was only 0.24-0.76 (Pearson), so it stays off unless asked for.

Nakandala, Kumar & Papakonstantinou (2019), *Incremental and Approximate Inference for Faster Occlusion-based
Deep CNN Explanations*, SIGMOD, https://doi.org/10.1145/3299869.3319874 (Krypton; extended in ACM TODS 2020).
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch import Tensor, nn

from .. import _plumbing as plumbing
from .._batching import (CPU_ACTIVATION_BUDGET_MB, PerturbationOptions, batch_memory_mb, evaluate_perturbations,
                         evaluate_with_reference)
from .plan import Plan, make_plan, unit_windows
from .run import run_units
from .trace import has_hooks, trace

__all__ = ["MODE_ENV", "WORTH_IT", "MIN_OCCLUDED_ELEMENTS", "Plan", "mode", "prepare", "unit_windows",
           "occlusion_outputs", "evaluator"]

MODE_ENV = "ATTRKIT_INCREMENTAL"
WORTH_IT = 0.75        # use the incremental path when its estimated cost is below this fraction of the naive one
# A job whose occluded copies hold fewer input elements than this (windows x examples x elements of one example)
# runs the batched path without planning, in ``auto`` mode: tracing and planning cost a fixed 20-40 ms for a
# small CNN (more for a deep one), more than the copies themselves. Measured on the 2-core machine (float32, one
# image, best of 15 runs, 4 for 224 px; the machine was loaded, so coarse), batched / incremental:
#   TinyImageCNN 32 px: 4 windows 2.3 / 27.5 ms, 36 windows 10.1 / 29.9 ms, 64 windows 24.5 / 24.9 ms;
#   CIFAR CNN 32 px: 16 windows 14.7 / 31.8 ms, 36 windows 62.5 / 37.0 ms, 64 windows 118 / 51 ms;
#   ResNet-18 64 px: 16 windows 409 / 476 ms, 36 windows 1209 / 956 ms;
#   ResNet-18 224 px: 4 windows 1539 / 1234 ms, 16 windows 4857 / 2325 ms.
# The crossover lies at about 1e5-3e5 occluded elements for the small models and below 6e5 for ResNet-18 at
# 224 px; 2**17 keeps every 4-window job on a 32 px image batched and ResNet-sized images incremental.
MIN_OCCLUDED_ELEMENTS = 2**17


def mode() -> str:
    """``auto`` (default), ``off``, ``always`` or ``approximate:<threshold>``, from ``ATTRKIT_INCREMENTAL``."""
    value = os.environ.get(MODE_ENV, "auto").strip().lower()
    return {"0": "off", "false": "off", "no": "off", "1": "always", "true": "always", "yes": "always"}.get(value, value)


def prepare(model, x: Tensor, window, stride, threshold: float | None = None) -> Plan | None:
    """Trace ``model`` on ``x`` (one 4-d input) and plan the windows; None where the incremental path cannot
    be used (not a module, hooks on it, untraceable, nothing local before the first non-local layer).

    Example:
        >>> import torch
        >>> from attrkit._incremental import prepare
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Flatten(),
        ...                             torch.nn.Linear(8192, 2))
        >>> plan = prepare(model.eval(), torch.rand(1, 3, 32, 32), window=(3, 4, 4), stride=(3, 4, 4))
        >>> [plan.steps[n].region.h for n in plan.graph.nodes[:4]]  # a 4x4 patch changes 6x6 and then 8x8 cells
        [4, 6, 6, 8]
        >>> round(plan.flops_ratio, 2)  # the linear layer sees every change: it is computed in full
        0.08
    """
    if not isinstance(model, nn.Module) or x.dim() != 4 or len(window) != 3 or has_hooks(model):
        return None
    if any(m.training for m in model.modules()):
        return None  # batch statistics, dropout: outputs that depend on the batch (and a clean run would update them)
    with torch.no_grad():
        g = trace(model, x)
        return None if g is None else make_plan(g, tuple(window), tuple(stride), threshold)


def evaluator(baselines: tuple, windows: tuple, strides: tuple) -> Callable:
    """A drop-in for :func:`attrkit._batching.evaluate_with_reference` that evaluates Occlusion's windows
    incrementally where that applies and pays off (not for jobs under :data:`MIN_OCCLUDED_ELEMENTS`, which
    are not even planned, in ``auto`` mode), and otherwise (or, in ``auto`` mode, on any error) runs
    the batched path: ``evaluate(forward_func, inputs, build, n_units, target, args, options, masks)``
    returns ``(reference, outputs)``, the output on the clean inputs and on every window."""
    def evaluate(forward_func, inputs, build, n_units, target=None, args=(),
                 options: PerturbationOptions = PerturbationOptions(), masks=()):
        found = None
        if mode() != "auto" or n_units * inputs[0].numel() >= MIN_OCCLUDED_ELEMENTS:  # else planning costs more
            found = occlusion_outputs(forward_func, inputs, baselines, windows, strides, target, args, options)
        if found is None:
            return evaluate_with_reference(forward_func, inputs, build, n_units, target, args, options, masks)
        return found
    return evaluate


def occlusion_outputs(forward_func, inputs, baselines, windows, strides, target=None, args=(),
                      options: PerturbationOptions = PerturbationOptions()) -> tuple[Tensor, Tensor] | None:
    """``(reference, outputs)``: the output on the clean input ``(n,)`` and with each window occluded
    ``(n_windows, n)``, from the incremental path — or None where it does not apply or would not pay off
    (then the caller runs the batched path). ``ATTRKIT_INCREMENTAL=always`` raises its errors instead."""
    how = mode()
    if how == "off" or len(inputs) != 1 or (args is not None and len(plumbing.format_args(args))):
        return None
    try:
        return _outputs(forward_func, inputs[0], baselines[0], windows[0], strides[0], target, options, how)
    except Exception:
        if how == "always":
            raise
        return None


def _outputs(model, x, baseline, window, stride, target, options: PerturbationOptions, how: str):
    threshold = float(how.split(":", 1)[1]) if how.startswith("approximate:") else None
    plan = prepare(model, x, window, stride, threshold)
    if plan is None or (how == "auto" and plan.cost_ratio > WORTH_IT):
        return None
    g, n = plan.graph, x.shape[0]
    target = plumbing.validate_target(target)
    output = g.value[g.nodes[-1]]
    reference = plumbing.select_target(output, target) if isinstance(output, Tensor) else None
    if reference is None or reference.dim() == 0 or reference.shape[0] != n or reference.numel() != n:
        return None  # one output for the whole batch, or several per example: the batched path decides
    n_units = len(plan.windows[0])
    per_eval = _units_per_eval(plan, x, n_units, options)
    outputs = evaluate_perturbations(lambda units: run_units(plan, units, x, baseline), lambda units: (units,),
                                     n_units, per_eval, target, (), n, options)
    return reference.reshape(n), outputs


def _units_per_eval(plan: Plan, x: Tensor, n_units: int, options: PerturbationOptions) -> int:
    """Windows per pass: ``perturbations_per_eval`` when given; otherwise as many as keep the largest tensor
    of a pass within the memory budget (on the CPU, within the activation budget of the batched path)."""
    if options.perturbations_per_eval is not None:
        return min(plumbing.check_positive_int(options.perturbations_per_eval, "perturbations_per_eval"), n_units)
    budget = batch_memory_mb(options.max_batch_memory_mb) * 2**20
    if x.device.type == "cpu":
        budget = min(budget, CPU_ACTIVATION_BUDGET_MB * 2**20)
    return int(max(1, min(n_units, budget // max(plan.peak_bytes * x.shape[0], 1))))
