"""Hooks as one idea: register them in a context, and they are gone when it ends.

Everything that touches a model from the outside lives here:

* :func:`hook_handles` — a list that collects hook handles and removes them all
  on exit, also when an exception is raised;
* :func:`module_of` — the ``nn.Module`` behind a ``forward_func`` (the model, or the
  owner of a bound method such as ``model.forward``);
* :func:`capture` and :func:`replace` — record, or substitute, what a layer
  produces (or receives) during a forward pass;
* :func:`layer_gradients` — the one "gradient with respect to a layer" (one layer or
  several, optionally under modified backward rules) that every layer method,
  DeepLift at a layer, LayerLRP and NeuronConductance use;
* :func:`layer_as_variable` and :func:`neuron_objective` — the two re-rootings
  that turn every primary method into a layer or a neuron method.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, ContextManager, Iterator

import torch
from torch import Tensor, nn

from ._plumbing import batch_size_of, per_example, require_examples, run_forward


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


def module_of(forward_func) -> nn.Module | None:
    """The ``nn.Module`` behind ``forward_func``: itself, the owner of a bound method
    (``model.forward``), or None for any other callable."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def layer_name(forward_func, layer: nn.Module) -> str:
    """The layer's name in the model behind ``forward_func`` (for error messages), else its type."""
    model = module_of(forward_func)
    names = {m: n for n, m in model.named_modules()} if model is not None else {}
    return names.get(layer) or type(layer).__name__


def flat_layer_values(values: tuple, forward_func, layer: nn.Module, to_input: bool, allow_none: bool = True):
    """``values`` checked to be tensors (or None where ``allow_none``): a layer whose output nests tuples
    (``nn.LSTM``'s ``(out, (h, c))``) cannot be attributed to as a whole, and the error names the layer."""
    if all(isinstance(v, Tensor) or (allow_none and v is None) for v in values):
        return values
    kinds = ", ".join(type(v).__name__ for v in values)
    raise TypeError(
        f"layer `{layer_name(forward_func, layer)}` ({type(layer).__name__}) has an {'input' if to_input else 'output'}"
        f" that is not a tensor or a flat tuple of tensors (it is ({kinds}); nn.LSTM returns (out, (h, c))), so it "
        "cannot be attributed to as a whole: attribute to a module that produces tensors only (e.g. an "
        "nn.Identity applied to the part you want, such as `out`, in forward).")


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
        return _cloned(items, record.is_tuple)

    with hook_handles() as handles:
        handles.append(_on_layer_values(layer, attribute_to_input, keep))
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
        return _cloned(values, record.is_tuple)

    with hook_handles() as handles:
        handles.append(_on_layer_values(layer, attribute_to_input, swap))
        yield record


def _on_layer_values(layer: nn.Module, attribute_to_input: bool, fn: Callable):
    """Hook ``fn`` on what the layer produces (its positional inputs with ``attribute_to_input``); what
    ``fn`` returns replaces it. Returns the hook's handle."""
    if attribute_to_input:
        return layer.register_forward_pre_hook(lambda m, args: _pre(fn(args)))
    return layer.register_forward_hook(lambda m, args, out: fn(out))


def _cloned(values: tuple, is_tuple: bool):
    clones = tuple(v.clone() if isinstance(v, Tensor) else v for v in values)
    return clones if is_tuple else clones[0]


# --------------------------------------------------------------------------- re-rootings
def layer_values(
    forward_func: Callable, layer: nn.Module, inputs: tuple, args: tuple = (), attribute_to_input: bool = False
) -> tuple[tuple[Tensor, ...], bool]:
    """The layer's activations for ``inputs`` (no graph): ``(values, layer returns a tuple)``."""
    with torch.no_grad(), capture(layer, attribute_to_input) as rec:
        forward_func(*inputs, *args)
    return rec.single(), rec.is_tuple


def layer_gradients(
    forward_func: Callable, layer, inputs: tuple, target=None, args: tuple = (), attribute_to_input: bool = False,
    rules: ContextManager | None = None, retain_graph: bool = False, grad_kwargs: dict | None = None,
):
    """Gradient of each example's selected output with respect to a layer's output (or input), and the
    layer's values, from one forward pass.

    ``layer`` is a module, or a list (or tuple) of modules: then both results are lists with one entry per
    layer. Each entry is a tuple over the tensors the layer produces (or receives); a layer the output does
    not depend on gets zeros. ``rules`` is a context that changes the backward pass while the forward pass
    and the gradient run (e.g. ``rule_set.applied(model)`` of :mod:`attrkit._rules`).

    By default the inputs are detached first (the caller's tensors and flags are never touched) and the
    values come back detached. With ``retain_graph=True`` the inputs are used as given and the values keep
    their graph, so the caller can differentiate further (with respect to inputs that require a gradient).
    ``grad_kwargs`` go to ``torch.autograd.grad``.
    """
    require_examples(inputs)
    several = isinstance(layer, (list, tuple))
    layers = list(layer) if several else [layer]
    if not retain_graph:
        inputs = tuple(x.detach() if isinstance(x, Tensor) else x for x in inputs)
    with ExitStack() as stack, torch.enable_grad():
        if rules is not None:
            stack.enter_context(rules)
        records = [stack.enter_context(capture(m, attribute_to_input, require_grad=True)) for m in layers]
        out = per_example(run_forward(forward_func, inputs, target, args), batch_size_of(inputs))
        values = [tuple(v for v in flat_layer_values(record.single(), forward_func, record.layer, attribute_to_input)
                        if isinstance(v, Tensor)) for record in records]
        wrt = [v for vs in values for v in vs if v.requires_grad]
        options = {"allow_unused": True, **(grad_kwargs or {})}
        options["retain_graph"] = retain_graph or options.get("retain_graph", False)
        found = torch.autograd.grad(out.sum(), wrt, **options) if wrt else ()
    by_id = dict(zip(map(id, wrt), found))
    grads = [tuple(_or_zeros(by_id.get(id(v)), v) for v in vs) for vs in values]
    if not retain_graph:
        values = [tuple(v.detach() for v in vs) for vs in values]
    return (grads, values) if several else (grads[0], values[0])


def _or_zeros(gradient: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if gradient is None else gradient


class ModelFunction(nn.Module):
    """A new function of a model, as a module that keeps the model among its submodules.

    Methods that act on the model's modules (modified backward rules, state
    restoration) find them through ``.modules()`` as they would on the model itself.
    """

    def __init__(self, forward_func: Callable, fn: Callable):
        super().__init__()
        model = module_of(forward_func)
        if model is not None:
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
