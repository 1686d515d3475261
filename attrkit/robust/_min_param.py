"""The smallest perturbation that changes the model's answer: :class:`MinParamPerturbation`."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from .. import _plumbing as plumbing
from .._threads import threads_beside_others
from ._batched import forward_many, per_eval

_MODES = ("linear", "binary")
_FIRST_CHUNK = 4  # linear search, default batching: 4 values in the first pass, then twice as many each pass


def default_correct_fn(model_out: Tensor, target=None) -> bool:
    """True when every example's arg-max class equals ``target`` (the default test of a correct prediction)."""
    if not isinstance(model_out, Tensor) or model_out.dim() != 2:
        raise ValueError("the default `correct_fn` needs a 2D model output (examples x classes); give a "
                         "`correct_fn` for other outputs.")
    if target is None:
        raise ValueError("`target` is required with the default `correct_fn` (the class each example should get).")
    target = torch.as_tensor(target, device=model_out.device)
    return bool((model_out.argmax(dim=1) == target).all())


def _grid(start, stop, step) -> Iterator:
    """``start, start + step, ...`` below ``stop``, accumulated by repeated addition (as Captum does, so the
    values are bit-for-bit the same)."""
    value = start
    while value < stop:
        yield value
        value += step


class MinParamPerturbation:
    """Searches ``arg_min <= p < arg_max`` (in steps of ``arg_step``) for the smallest value of one attack
    parameter ``arg_name`` whose perturbed input the model gets wrong.

    Same API and results as ``captum.robust.MinParamPerturbation`` (0.9): ``evaluate`` returns
    ``(perturbed input, p)``, or ``(None, None)`` if no value in the range fools the model. ``mode="linear"``
    tries the values in order; ``mode="binary"`` bisects the grid (it assumes larger values perturb more).
    ``correct_fn(model_out, **correct_fn_kwargs)`` decides correctness (default: arg-max equals ``target``
    for every example).

    attrkit evaluates several parameter values per forward pass: with ``perturbations_per_eval=None`` (the
    default) the linear search runs 4 values in its first pass and twice as many in each next one, up to
    attrkit's memory budget, and the binary search runs all attempts of a value in one pass; an int keeps
    Captum's meaning. Attacks are applied in Captum's order, so a random attack gives Captum's answer in
    linear mode; in binary mode with ``num_attempts`` > 1 it gives Captum's answer for
    ``perturbations_per_eval=num_attempts`` (Captum's default stops drawing at a value's first fooling
    attempt, so its later values see other random numbers).

    Args:
        forward_func: the model.
        attack: a :class:`~attrkit.robust.Perturbation` or any callable taking ``arg_name`` as a keyword.
        arg_name, arg_min, arg_max, arg_step: the parameter and its grid (``arg_max`` excluded).
        mode: ``"linear"`` or ``"binary"``.
        num_attempts: tries per value (for random attacks); one wrong try counts as fooled.
        preproc_fn, apply_before_preproc: optional preprocessing, and whether the attack runs before it.
        correct_fn: see above.

    Example:
        >>> import torch
        >>> from attrkit.robust import MinParamPerturbation
        >>> model = torch.nn.Linear(1, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0], [-1.0]])); _ = model.bias.zero_()
        >>> shift = lambda x, delta: x - delta
        >>> search = MinParamPerturbation(model, shift, "delta", arg_min=0.0, arg_max=3.0, arg_step=0.5)
        >>> _, delta = search.evaluate(torch.tensor([[1.2]]), target=0)
        >>> delta
        1.5
    """

    def __init__(self, forward_func: Callable, attack: Callable, arg_name: str, arg_min, arg_max, arg_step,
                 mode: str = "linear", num_attempts: int = 1, preproc_fn: Optional[Callable] = None,
                 apply_before_preproc: bool = False, correct_fn: Optional[Callable] = None) -> None:
        for name, fn in (("forward_func", forward_func), ("attack", attack)):
            if not callable(fn):
                raise TypeError(f"`{name}` must be callable.")
        if not isinstance(arg_name, str):
            raise TypeError("`arg_name` must be the name (a str) of the attack's keyword argument to search.")
        for name, value in (("arg_min", arg_min), ("arg_max", arg_max), ("arg_step", arg_step)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
        if not arg_step > 0:
            raise ValueError(f"`arg_step` must be positive, got {arg_step}.")
        if not arg_max > arg_min + arg_step:
            raise ValueError(f"`arg_step` ({arg_step}) must be smaller than the range from `arg_min` ({arg_min}) "
                             f"to `arg_max` ({arg_max}).")
        if not isinstance(mode, str) or mode.lower() not in _MODES:
            raise ValueError(f"`mode` must be 'linear' or 'binary', got {mode!r}.")
        for name, fn in (("preproc_fn", preproc_fn), ("correct_fn", correct_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"`{name}` must be callable or None.")
        self.forward_func = forward_func
        self.attack = attack
        self.arg_name = arg_name
        self.arg_min, self.arg_max, self.arg_step = arg_min, arg_max, arg_step
        self.mode = mode.lower()
        self.num_attempts = plumbing.check_positive_int(num_attempts, "num_attempts")
        self.preproc_fn = preproc_fn
        self.apply_before_preproc = apply_before_preproc
        self.correct_fn = correct_fn if correct_fn is not None else default_correct_fn

    def evaluate(self, inputs: Any, additional_forward_args: Any = None, target=None,
                 perturbations_per_eval: Optional[int] = None, attack_kwargs: Optional[Dict[str, Any]] = None,
                 correct_fn_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[Any, Any]:
        """``(perturbed inputs, parameter value)`` for the smallest value that fools the model, else
        ``(None, None)``. Give one example (or a ``correct_fn`` that says what fooling a batch means)."""
        for name, value in (("attack_kwargs", attack_kwargs), ("correct_fn_kwargs", correct_fn_kwargs)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"`{name}` must be a dict of keyword arguments or None.")
        if target is None and self.correct_fn is default_correct_fn:
            raise ValueError("`target` is required with the default `correct_fn` (the class each example should "
                             "get); give it, or a `correct_fn`.")
        args = plumbing.format_args(additional_forward_args)
        preprocessed = self.preproc_fn(inputs) if self.preproc_fn else inputs
        judge = dict(correct_fn_kwargs or {})
        if target is not None:
            judge = {"target": target, **judge}
        run = _Search(self, inputs, preprocessed, dict(attack_kwargs or {}), args, judge)
        with threads_beside_others():
            return run.linear(perturbations_per_eval) if self.mode == "linear" else run.binary(perturbations_per_eval)


class _Search:
    """One ``evaluate`` call: applies the attack and asks the model, a batch of parameter values at a time."""

    def __init__(self, owner: MinParamPerturbation, inputs, preprocessed, attack_kwargs, args, judge):
        self.o, self.inputs, self.preprocessed = owner, inputs, preprocessed
        self.attack_kwargs, self.args, self.judge = attack_kwargs, args, judge

    def attacked(self, value) -> Tuple[Any, Any]:
        """``(model input, attacked input)`` for one parameter value."""
        o = self.o
        kwargs = {**self.attack_kwargs, o.arg_name: value}
        if o.apply_before_preproc:
            out = o.attack(self.inputs, **kwargs)
            return (o.preproc_fn(out) if o.preproc_fn else out), out
        out = o.attack(self.preprocessed, **kwargs)
        return out, out

    def first_fooled(self, model_inputs: List[Any]) -> Optional[int]:
        """Index of the first of ``model_inputs`` the model gets wrong (one forward pass), else None."""
        for i, out in enumerate(forward_many(self.o.forward_func, model_inputs, self.args)):
            if not self.o.correct_fn(out, **self.judge):
                return i
        return None

    def linear(self, requested) -> Tuple[Any, Any]:
        o = self.o
        tries = ((value, attempt) for value in _grid(o.arg_min, o.arg_max, o.arg_step)
                 for attempt in range(o.num_attempts))
        size = requested if requested is not None else _FIRST_CHUNK
        cap = None
        while True:
            chunk = [(value, *self.attacked(value)) for value, _ in _take(tries, size)]
            if not chunk:
                return None, None
            if cap is None:
                cap = per_eval(chunk[0][1], self.args, requested, 1 << 30)
            hit = self.first_fooled([model_input for _, model_input, _ in chunk])
            if hit is not None:
                return chunk[hit][2], chunk[hit][0]
            if requested is None:
                size = min(2 * size, max(cap, 1))

    def binary(self, requested) -> Tuple[Any, Any]:
        o = self.o
        low, high = o.arg_min, o.arg_max
        best_value, best_input = None, None
        while high > low:
            half = ((high - low) // o.arg_step) // 2
            if half == 0 and low + o.arg_step < high:
                half = 1
            mid = low + half * o.arg_step
            fooled = self._fooled_at(mid, requested)
            if fooled is not None:
                high = mid
                if best_value is None or best_value > mid:
                    best_value, best_input = mid, fooled
            if math.isclose(low, mid):
                break
            if fooled is None:
                low = mid
        return best_input, best_value

    def _fooled_at(self, value, requested):
        """The first attacked input at ``value`` the model gets wrong, trying ``num_attempts`` times."""
        k = self.o.num_attempts if requested is None else plumbing.check_positive_int(requested,
                                                                                     "perturbations_per_eval")
        remaining = self.o.num_attempts
        while remaining > 0:
            chunk = [self.attacked(value) for _ in range(min(k, remaining))]
            remaining -= len(chunk)
            hit = self.first_fooled([model_input for model_input, _ in chunk])
            if hit is not None:
                return chunk[hit][1]
        return None


def _take(iterator, n: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out
