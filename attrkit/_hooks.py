"""Hooks as one idea: register them in a context, and they are gone when it ends.

Everything that touches a model from the outside lives here:

* :func:`hook_handles` — a list that collects hook handles and removes them all
  on exit, also when an exception is raised;
* :func:`model_state_kept` — the model's train/eval flags and parameters'
  ``requires_grad`` flags come back exactly as they were;
* :func:`capture` and :func:`replace` — record, or substitute, what a layer
  produces (or receives) during a forward pass;
* :func:`layer_as_variable` and :func:`neuron_objective` — the two re-rootings
  that turn every primary method into a layer or a neuron method.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn


# --------------------------------------------------------------------------- handles and state
@contextmanager
def hook_handles() -> Iterator[list]:
    """Collect ``RemovableHandle`` objects; all are removed when the block ends."""
    handles: list = []
    try:
        yield handles
    finally:
        for h in reversed(handles):
            h.remove()


def _modules_of(forward_func) -> list[nn.Module]:
    if isinstance(forward_func, nn.Module):
        return list(forward_func.modules())
    owner = getattr(forward_func, "__self__", None)  # a bound method such as model.forward
    return list(owner.modules()) if isinstance(owner, nn.Module) else []


@contextmanager
def model_state_kept(forward_func):
    """Restore train/eval mode and parameters' ``requires_grad`` after the block."""
    modules = _modules_of(forward_func)
    modes = [(m, m.training) for m in modules]
    params = [(p, p.requires_grad) for m in modules for p in m.parameters(recurse=False)]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in params:
            p.requires_grad_(flag)


# --------------------------------------------------------------------------- layer capture / replacement
def _as_items(value) -> tuple[tuple[Tensor, ...], bool]:
    if isinstance(value, tuple):
        return value, True
    return (value,), False


class LayerRecord:
    """What a layer produced (or received) on each call during one forward pass."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.calls: list[tuple[Tensor, ...]] = []
        self.is_tuple = False

    def single(self) -> tuple[Tensor, ...]:
        """The values of the one call; a clear error when the layer did not fire or fired twice."""
        if not self.calls:
            raise ValueError(
                f"`layer` ({type(self.layer).__name__}) was never called during the forward pass: "
                "pass a module that is part of the model and used by its forward()."
            )
        if len(self.calls) > 1:
            raise ValueError(
                f"`layer` ({type(self.layer).__name__}) is called {len(self.calls)} times in one forward pass; "
                "attribute to a module that runs once (e.g. wrap the reused module in its own nn.Identity)."
            )
        return self.calls[0]


@contextmanager
def capture(layer: nn.Module, attribute_to_input: bool = False, require_grad: bool = False) -> Iterator[LayerRecord]:
    """Record the layer's output (or positional inputs) on every call.

    The model continues with a *clone*, so in-place operations further down
    (``ReLU(inplace=True)``) cannot overwrite what was recorded, and gradients
    with respect to the recorded tensors remain well defined. With
    ``require_grad=True``, floating-point values that do not yet require a gradient
    (frozen parameters, a layer fed the raw input) are made to, so that gradients
    with respect to the layer exist.
    """
    if not isinstance(layer, nn.Module):
        raise TypeError(f"`layer` must be a torch.nn.Module, got {type(layer).__name__}.")
    record = LayerRecord(layer)

    def keep(values):
        items, record.is_tuple = _as_items(values)
        if require_grad:
            items = tuple(_needing_grad(v) for v in items)
        record.calls.append(items)
        clones = tuple(v.clone() if isinstance(v, Tensor) else v for v in items)
        return clones if record.is_tuple else clones[0]

    with hook_handles() as handles:
        if attribute_to_input:
            handles.append(layer.register_forward_pre_hook(lambda m, args: _pre(keep(args))))
        else:
            handles.append(layer.register_forward_hook(lambda m, args, out: keep(out)))
        yield record


def _needing_grad(v):
    if isinstance(v, Tensor) and v.is_floating_point() and not v.requires_grad and torch.is_grad_enabled():
        return v.detach().requires_grad_()  # v has no graph to lose; a new leaf leaves v's own flag alone
    return v


def _pre(value):
    return value if isinstance(value, tuple) else (value,)


@contextmanager
def replace(layer: nn.Module, values: tuple[Tensor, ...], attribute_to_input: bool = False) -> Iterator[LayerRecord]:
    """Make the layer produce (or receive) ``values`` instead of what it computes.

    The record keeps the original values, so callers see what was replaced.
    """
    record = LayerRecord(layer)

    def swap(original):
        items, record.is_tuple = _as_items(original)
        record.calls.append(items)
        if len(values) != len(items):
            raise ValueError(f"`layer` produces {len(items)} tensor(s); {len(values)} replacement(s) given.")
        # clones: an in-place operation further down (ReLU(inplace=True)) must not hit the caller's leaves
        clones = tuple(v.clone() if isinstance(v, Tensor) else v for v in values)
        return clones if record.is_tuple else clones[0]

    with hook_handles() as handles:
        if attribute_to_input:
            handles.append(layer.register_forward_pre_hook(lambda m, args: _pre(swap(args))))
        else:
            handles.append(layer.register_forward_hook(lambda m, args, out: swap(out)))
        yield record


# --------------------------------------------------------------------------- re-rootings
def layer_values(
    forward_func: Callable, layer: nn.Module, inputs: tuple, args: tuple = (), attribute_to_input: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """The layer's activations for ``inputs`` (no graph): ``(values, layer returns a tuple)``."""
    with torch.no_grad(), capture(layer, attribute_to_input) as rec:
        forward_func(*inputs, *args)
    return rec.single(), rec.is_tuple


def layer_gradients(
    forward_func: Callable, layer: nn.Module, inputs: tuple, target=None, args: tuple = (), attribute_to_input=False
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Gradient of each example's selected output w.r.t. the layer, and the layer's values (detached).

    The inputs are detached first: the caller's tensors and flags are never touched.
    """
    from ._plumbing import batch_size_of, per_example, select_target

    inputs = tuple(x.detach() if isinstance(x, Tensor) else x for x in inputs)
    with torch.enable_grad(), capture(layer, attribute_to_input, require_grad=True) as rec:
        out = select_target(forward_func(*inputs, *args), target)
        values = rec.single()
        out = per_example(out, batch_size_of(inputs))
        wrt = [v for v in values if v.requires_grad]
        grads = iter(torch.autograd.grad(out.sum(), wrt, allow_unused=True) if wrt else ())
    grads = tuple(_zero_if_none(next(grads), v) if v.requires_grad else torch.zeros_like(v) for v in values)
    return grads, tuple(v.detach() for v in values)


def _zero_if_none(g, like):
    return torch.zeros_like(like) if g is None else g


class ModelFunction(nn.Module):
    """A new function of a model, as a module that keeps the model among its submodules.

    Methods that act on the model's modules (modified backward rules, state
    restoration) find them through ``.modules()`` as they would on the model itself.
    """

    def __init__(self, forward_func: Callable, fn: Callable):
        super().__init__()
        model = forward_func if isinstance(forward_func, nn.Module) else getattr(forward_func, "__self__", None)
        if isinstance(model, nn.Module):
            self.model = model
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def layer_as_variable(forward_func: Callable, layer: nn.Module, n_layer_values: int, attribute_to_input=False):
    """Re-root the model at ``layer``: a function of the layer's activations.

    Returns ``g(*layer_values, *model_inputs, *model_args)`` that runs the model on
    ``model_inputs`` with the layer's output (or input) replaced by ``layer_values``.
    Handing the model inputs over as *additional forward arguments* lets any
    primary method expand and batch them along with everything else. ``g`` is a
    :class:`ModelFunction`; applying it to another such ``g`` re-roots at several
    layers at once (``g(*values_2, *values_1, *model_inputs)``).
    """

    def g(*everything):
        values, rest = everything[:n_layer_values], everything[n_layer_values:]
        with replace(layer, tuple(values), attribute_to_input):
            return forward_func(*rest)

    return ModelFunction(forward_func, g)


def neuron_objective(
    forward_func: Callable, layer: nn.Module, neuron_selector, attribute_to_input: bool = False
) -> Callable:
    """Swap the objective: a function returning one neuron's activation per example.

    ``neuron_selector`` is an int, a tuple index into the layer's output (batch
    dimension excluded), or a callable that takes the layer's output and returns
    one number per example. A callable receives the layer's tensor, or the tuple
    of its tensors when there are several. The result is a :class:`ModelFunction`.
    """

    def f(*inputs_and_args):
        with capture(layer, attribute_to_input) as rec:
            forward_func(*inputs_and_args)
        values = rec.single()
        return select_neuron(values if len(values) > 1 else values[0], neuron_selector)

    return ModelFunction(forward_func, f)


def select_neuron(layer_output, neuron_selector) -> Tensor:
    """Pick the neuron ``neuron_selector`` names out of a layer's output."""
    if callable(neuron_selector):
        return neuron_selector(layer_output)
    if isinstance(layer_output, tuple):
        if len(layer_output) != 1:
            raise ValueError("the layer returns a tuple: give `neuron_selector` as a callable that picks from it.")
        layer_output = layer_output[0]
    index = (neuron_selector,) if isinstance(neuron_selector, int) else tuple(neuron_selector)
    shape = tuple(layer_output.shape[1:])
    has_slice = any(isinstance(i, slice) for i in index)
    complete = len(index) == len(shape) or (has_slice and len(index) < len(shape))
    if not complete or any(not (-s <= i < s) for i, s in zip(index, shape) if isinstance(i, int)):
        raise ValueError(
            f"`neuron_selector`={neuron_selector!r} does not index the layer's output of shape {shape} "
            "(batch dimension excluded): give one int per dimension (slices select several neurons, summed)."
        )
    return layer_output[(slice(None), *index)].reshape(layer_output.shape[0], -1).sum(1)
