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

import inspect
import numbers
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

TensorOrTuple = "Tensor | tuple[Tensor, ...]"


# --------------------------------------------------------------------------- inputs
def as_tuple(inputs, name: str = "inputs", non_batch: bool = False) -> tuple[tuple[Tensor, ...], bool]:
    """Return ``(inputs as a tuple, whether the caller passed a tuple)``.

    The tensors of a tuple must share the batch (dim 0), except with ``non_batch=True`` (the perturbation
    methods that accept Captum's "sparse features"): then inputs after the first may have a first dimension
    of their own, such as the flat ids of an ``EmbeddingBag``."""
    is_tuple = isinstance(inputs, (tuple, list))
    items = tuple(inputs) if is_tuple else (inputs,)
    if not items:
        raise ValueError(f"`{name}` is empty: pass a tensor or a non-empty tuple of tensors.")
    for i, x in enumerate(items):
        if not isinstance(x, Tensor):
            what = f"entry {i} is a {type(x).__name__}" if is_tuple else f"got a {type(x).__name__}"
            raise TypeError(f"`{name}` must be a torch.Tensor or a tuple of tensors; {what}.")
    if is_tuple and not non_batch and len({x.shape[0] if x.dim() else None for x in items}) > 1:
        shapes = ", ".join(str(tuple(x.shape)) for x in items)
        raise ValueError(f"`{name}` tensors must share the batch dimension (dim 0); got shapes {shapes}. (Only "
                         f"FeatureAblation, Occlusion, FeaturePermutation and the Shapley value methods accept "
                         f"inputs whose first dimension is not the batch, as Captum does.)")
    return items, is_tuple


def restore(items: Sequence[Tensor], is_tuple: bool):
    """Inverse of :func:`as_tuple`: a tuple in gives a tuple out, a tensor gives a tensor."""
    return tuple(items) if is_tuple else items[0]


def batch_size_of(inputs: tuple[Tensor, ...]) -> int:
    return inputs[0].shape[0] if inputs[0].dim() else 1


def require_examples(inputs: tuple[Tensor, ...], name: str = "inputs"):
    """A gradient needs at least one example: a clear error for an empty batch."""
    if batch_size_of(inputs) == 0:
        raise ValueError(f"`{name}` has an empty batch (shape {tuple(inputs[0].shape)}): give at least one example.")


def floating(x: Tensor) -> Tensor:
    """``x`` in a floating-point dtype (integer inputs, e.g. uint8 images, in the default float dtype)."""
    return x if x.is_floating_point() or x.is_complex() else x.to(torch.get_default_dtype())


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
    if isinstance(b, numbers.Number):  # 0.5 for an integer input stays 0.5: the dtype both promote to
        return torch.full_like(x, b, dtype=torch.result_type(x, b))
    if not isinstance(b, Tensor):
        raise TypeError(f"{where} must be None, a number or a tensor, got {type(b).__name__}.")
    b = b.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.result_type(x, b))
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
    ``(n_baselines, *example_shape)`` per input. A callable is called with the inputs, or
    with no argument when it takes none (as Captum)."""
    if callable(baselines):
        if not inspect.signature(baselines).parameters:
            baselines = baselines()
        else:
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
    if isinstance(target, bool) or (isinstance(target, Tensor) and target.dtype == torch.bool):
        raise TypeError(f"`{name}` must be a class index (an int), not a bool: `target=True` is not class 1.")
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


def gradients(forward_func: Callable, inputs: tuple[Tensor, ...], target=None, args: tuple = (),
              grad_kwargs: dict | None = None) -> tuple[Tensor, ...]:
    """Gradient of each example's selected output with respect to ``inputs``.

    The inputs are detached and made leaves here, so the caller's tensors and
    their ``requires_grad`` flags are never touched. ``grad_kwargs`` go to
    ``torch.autograd.grad``.
    """
    require_examples(inputs)
    if not all(x.is_floating_point() or x.is_complex() for x in inputs):
        raise integer_inputs_error(inputs, forward_func)
    leaves = tuple(x.detach().requires_grad_() for x in inputs)
    with torch.enable_grad():
        out = run_forward(forward_func, leaves, target, args)
        if not (isinstance(out, Tensor) and out.dim() == 0):  # one number for the batch: its gradient (as Captum)
            out = per_example(out, batch_size_of(leaves))
        grads = torch.autograd.grad(out.sum(), leaves, **{"allow_unused": True, **(grad_kwargs or {})})
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))


def integer_inputs_error(inputs: tuple[Tensor, ...], forward_func=None) -> TypeError:
    """The error for integer inputs a gradient cannot be taken at (token ids): it names ``inputs`` and
    points to the layer form on the model's embedding."""
    dtypes = ", ".join(sorted({str(x.dtype) for x in inputs if not x.is_floating_point()}))
    model = forward_func if isinstance(forward_func, torch.nn.Module) else getattr(forward_func, "__self__", None)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)] \
        if isinstance(model, torch.nn.Module) else []
    embedding = f"model.{names[0]}" if names else "model.<embedding>"
    return TypeError(
        f"`inputs` hold integers ({dtypes}) that the model cannot take as floating-point values, so no gradient "
        f"exists at them. For token ids, attribute to the embedding instead: "
        f"LayerIntegratedGradients(model, {embedding}) (or another Layer* method on it)."
    )


@contextmanager
def integer_inputs_explained(inputs: tuple[Tensor, ...], forward_func=None):
    """Integer inputs are interpolated in floating point (uint8 images work); when the model fails on those
    floating-point points (token ids into an ``nn.Embedding``), raise :func:`integer_inputs_error`."""
    try:
        yield
    except RuntimeError as error:
        if all(x.is_floating_point() or x.is_complex() for x in inputs):
            raise
        raise integer_inputs_error(inputs, forward_func) from error


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
    """Stack ``baseline + alpha * (input - baseline)`` for every alpha (step-major rows), in floating
    point (integer inputs, e.g. uint8 images, are interpolated in the default float dtype)."""
    out = []
    for x, b in zip(inputs, baselines):
        x = floating(x)
        b = floating(b).to(x.dtype)
        a = torch.as_tensor(list(alphas), dtype=x.dtype, device=x.device).reshape(-1, *([1] * x.dim()))
        out.append((b.unsqueeze(0) + a * (x - b).unsqueeze(0)).reshape(-1, *x.shape[1:]))
    return tuple(out)


def step_weights_tensor(weights: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(list(weights), dtype=like.dtype, device=like.device)


def weighted_step_sum(values: Tensor, weights: Tensor, n_examples: int) -> Tensor:
    """``sum_k weights[k] * values[k*n:(k+1)*n]`` for step-major rows."""
    v = values.reshape(len(weights), n_examples, *values.shape[1:])
    return torch.tensordot(weights.to(v.dtype), v, dims=([0], [0]))
