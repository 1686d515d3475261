"""Shared by the robustness metrics: run the model on several perturbed inputs in one forward pass."""
from __future__ import annotations

from typing import Any, Callable, List, Sequence

import torch
from torch import Tensor

from .. import _plumbing as plumbing
from .._batching import PerturbationOptions, units_per_eval


def is_batchable(item: Any) -> bool:
    """Whether ``item`` (a model input) can be stacked with others: a tensor or a tuple of tensors."""
    if isinstance(item, Tensor):
        return item.dim() > 0
    return isinstance(item, tuple) and len(item) > 0 and all(isinstance(x, Tensor) and x.dim() > 0 for x in item)


def rows_of(item: Any) -> int:
    return item.shape[0] if isinstance(item, Tensor) else item[0].shape[0]


def per_eval(item: Any, args: tuple, requested, n_items: int) -> int:
    """Perturbed inputs per forward pass: ``requested`` (Captum's ``perturbations_per_eval``) when given,
    else what fits attrkit's memory budget; 1 when inputs cannot be stacked."""
    if requested is not None:
        return plumbing.check_positive_int(requested, "perturbations_per_eval")
    if not is_batchable(item):
        return 1
    items = (item,) if isinstance(item, Tensor) else item
    return units_per_eval(items, args, max(n_items, 1), False, PerturbationOptions())


def forward_many(forward_func: Callable, items: Sequence[Any], args: tuple) -> List[Any]:
    """The model's output for each of ``items``: one forward pass over them all (stacked along dim 0, the
    additional arguments repeated to match), split back into one output per item. As in Captum, an item is
    passed as *one* argument (a tuple stays a tuple): ``forward_func(item, *args)``. No autograd graph is kept."""
    with torch.no_grad():
        if len(items) == 1:
            return [forward_func(items[0], *args)]
        if not all(is_batchable(item) for item in items):  # raw inputs (PIL images, text): one at a time
            return [forward_func(item, *args) for item in items]
        columns = zip(*(_as_inputs(item) for item in items))
        stacked = tuple(torch.cat(col) for col in columns)
        out = forward_func(stacked if isinstance(items[0], tuple) else stacked[0],
                           *plumbing.expand_args(args, len(items)))
    sizes = [rows_of(item) for item in items]
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != sum(sizes):
        raise ValueError("`perturbations_per_eval` > 1 needs a model that returns one row per example "
                         f"(expected {sum(sizes)} rows); pass perturbations_per_eval=1.")
    return list(torch.split(out, sizes))


def _as_inputs(item: Any) -> tuple:
    return item if isinstance(item, tuple) else (item,)
