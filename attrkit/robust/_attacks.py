"""Gradient-sign attacks: :class:`FGSM` (one step) and :class:`PGD` (many projected steps).

Both follow ``captum.robust`` 0.9 argument for argument and give the same adversarial examples. The loss is
``loss_func(model_out, target)``, or by default ``-log(model_out)`` at ``target`` (the model is expected to
return probabilities). An untargeted attack climbs the loss of the true label; a targeted one descends the loss
of the wanted label.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from .. import _plumbing as plumbing
from .._threads import threads_beside_others


class Perturbation:
    """Base of every attack: a callable whose ``perturb(inputs, ...)`` returns perturbed inputs shaped as
    ``inputs`` (a tensor in, a tensor out; a tuple in, a tuple out). ``attack(x, ...)`` is ``attack.perturb(x, ...)``.
    """

    perturb: Callable

    def __call__(self, *args, **kwargs):
        return self.perturb(*args, **kwargs)


def _bounder(lower_bound: float, upper_bound: float) -> Callable[[Tensor], Tensor]:
    for name, value in (("lower_bound", lower_bound), ("upper_bound", upper_bound)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if lower_bound > upper_bound:
        raise ValueError(f"`lower_bound` ({lower_bound}) must not exceed `upper_bound` ({upper_bound}).")
    return lambda x: torch.clamp(x, min=lower_bound, max=upper_bound)


def _check_number(value, name: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}.")
    if not value >= minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return float(value)


def _format_masks(mask, inputs: tuple[Tensor, ...]) -> tuple:
    """``mask`` as one entry per input: 1 (perturb everything) when None, else tensors broadcastable to it."""
    if mask is None:
        return (1,) * len(inputs)
    masks = mask if isinstance(mask, tuple) else (mask,)
    if len(masks) != len(inputs) or not all(isinstance(m, Tensor) for m in masks):
        raise TypeError(f"`mask` must be a tensor, or a tuple of {len(inputs)} tensors (one per input).")
    for i, (m, x) in enumerate(zip(masks, inputs)):
        try:
            torch.broadcast_shapes(m.shape, x.shape)
        except RuntimeError:
            raise ValueError(f"`mask` {i} has shape {tuple(m.shape)}, which does not broadcast to the input's "
                             f"shape {tuple(x.shape)}.") from None
    return masks


def _check_inputs(inputs) -> tuple[tuple[Tensor, ...], bool]:
    items, is_tuple = plumbing.as_tuple(inputs)
    if not all(x.is_floating_point() for x in items):
        raise TypeError("`inputs` must be floating-point tensors: an attack moves them along the gradient.")
    return items, is_tuple


class FGSM(Perturbation):
    """Fast Gradient Sign Method: one step of size ``epsilon`` along the sign of the loss gradient.

    Goodfellow, Shlens & Szegedy (2015), *Explaining and Harnessing Adversarial Examples*,
    https://arxiv.org/abs/1412.6572. Untargeted: ``x + epsilon * sign(grad L(x, y))``; targeted:
    ``x - epsilon * sign(grad L(x, t))``. Elements whose gradient is below ``zero_thresh`` in magnitude stay
    put; results are clamped to ``[lower_bound, upper_bound]`` (the ``bound`` attribute).

    Args:
        forward_func: the model (or any callable).
        loss_func: ``loss_func(model_out, target)``; default ``-log(model_out)`` at ``target``.
        lower_bound, upper_bound: the valid input range (e.g. 0 and 1 for images).

    Example:
        >>> import torch
        >>> from attrkit.robust import FGSM
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
        >>> x = torch.tensor([[0.2, 0.5, 0.9]])
        >>> adv = FGSM(model, lower_bound=0.0, upper_bound=1.0).perturb(x, epsilon=0.1, target=0)
        >>> bool(((adv - x).abs() <= 0.1 + 1e-7).all())
        True
    """

    def __init__(self, forward_func: Callable, loss_func: Optional[Callable] = None,
                 lower_bound: float = float("-inf"), upper_bound: float = float("inf")) -> None:
        if not callable(forward_func):
            raise TypeError("`forward_func` must be callable (a model or a function).")
        if loss_func is not None and not callable(loss_func):
            raise TypeError("`loss_func` must be callable or None.")
        self.forward_func = forward_func
        self.loss_func = loss_func
        self.bound = _bounder(lower_bound, upper_bound)
        self.zero_thresh = 1e-6

    @threads_beside_others()
    def perturb(self, inputs, epsilon: float, target: Any, additional_forward_args: Any = None,
                targeted: bool = False, mask=None):
        """The adversarial inputs (same shapes as ``inputs``). ``target``: the true labels (untargeted) or the
        wanted labels (``targeted=True``); ``mask``: 1 where an element may change, 0 where it may not."""
        items, is_tuple = _check_inputs(inputs)
        epsilon = _check_number(epsilon, "epsilon")
        masks = _format_masks(mask, items)
        grads = self._loss_gradients(items, target, plumbing.format_args(additional_forward_args))
        stepped = self._step(items, grads, epsilon, targeted, masks)
        return plumbing.restore([self.bound(x) for x in stepped], is_tuple)

    def _loss_gradients(self, items: tuple[Tensor, ...], target, args: tuple) -> tuple[Tensor, ...]:
        leaves = tuple(x.detach().requires_grad_() for x in items)
        with torch.enable_grad():
            out = self.forward_func(*leaves, *args)
            if self.loss_func is not None:
                loss = self.loss_func(out, target)
            else:
                loss = plumbing.select_target(-torch.log(out), plumbing.validate_target(target))
            if not isinstance(loss, Tensor):
                raise TypeError(f"`loss_func` must return a tensor, got {type(loss).__name__}.")
            if loss.dim() > 1 or (loss.dim() == 1 and loss.shape[0] != plumbing.batch_size_of(leaves)):
                raise ValueError(f"the loss has shape {tuple(loss.shape)}, not one number per example: give "
                                 "`target` (a class index per example) or a `loss_func` that reduces the output.")
            grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))

    def _step(self, items, grads, epsilon: float, targeted: bool, masks) -> tuple[Tensor, ...]:
        sign = -1.0 if targeted else 1.0
        return tuple(torch.where(g.abs() > self.zero_thresh, x.detach() + sign * epsilon * torch.sign(g) * m,
                                 x.detach())
                     for x, g, m in zip(items, grads, masks))


class PGD(Perturbation):
    """Projected Gradient Descent: ``step_num`` FGSM steps of ``step_size``, each projected back onto the
    ``radius`` ball around the original inputs (``norm="Linf"`` or ``"L2"``, per example) and the bounds.

    Madry et al. (2018), *Towards Deep Learning Models Resistant to Adversarial Attacks*,
    https://arxiv.org/abs/1706.06083. ``random_start`` begins at a uniform random point of the ball (masked).

    Departure from Captum, on purpose: with ``norm="L2"`` and ``random_start=True`` Captum multiplies a
    per-example radius into the *last* dimension of the input (so it fails unless that dimension equals the
    batch size, and mixes up examples when it does); attrkit scales each example by its own radius. The
    ``Linf`` random start draws the same random numbers as Captum.

    Example:
        >>> import torch
        >>> from attrkit.robust import PGD
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
        >>> x = torch.tensor([[0.2, 0.5, 0.9]])
        >>> adv = PGD(model).perturb(x, radius=0.1, step_size=0.02, step_num=10, target=0)
        >>> bool(((adv - x).abs() <= 0.1 + 1e-7).all())
        True
    """

    def __init__(self, forward_func: Callable, loss_func: Optional[Callable] = None,
                 lower_bound: float = float("-inf"), upper_bound: float = float("inf")) -> None:
        self.forward_func = forward_func
        self.fgsm = FGSM(forward_func, loss_func)
        self.bound = _bounder(lower_bound, upper_bound)

    @threads_beside_others()
    def perturb(self, inputs, radius: float, step_size: float, step_num: int, target: Any,
                additional_forward_args: Any = None, targeted: bool = False, random_start: bool = False,
                norm: str = "Linf", mask=None):
        """The adversarial inputs after ``step_num`` projected steps (same shapes as ``inputs``)."""
        items, is_tuple = _check_inputs(inputs)
        radius = _check_number(radius, "radius")
        _check_number(step_size, "step_size")
        plumbing.check_positive_int(step_num, "step_num", minimum=0)
        plumbing.check_choice(norm, "norm", ("Linf", "L2"))
        masks = _format_masks(mask, items)
        current = tuple(x.detach() for x in items)
        if random_start:
            current = tuple(self.bound(self._random_point(x, radius, norm, m)) for x, m in zip(current, masks))
        for _ in range(step_num):
            stepped = self.fgsm.perturb(current, step_size, target, additional_forward_args, targeted,
                                        masks if mask is not None else None)
            current = tuple(self.bound(self._project(x, s, radius, norm)).detach() for x, s in zip(items, stepped))
        return plumbing.restore(list(current), is_tuple)

    @staticmethod
    def _project(origin: Tensor, moved: Tensor, radius: float, norm: str) -> Tensor:
        delta = moved - origin
        if norm == "Linf":
            return origin + delta.clamp(-radius, radius)
        return origin + torch.renorm(delta, 2, 0, radius)

    @staticmethod
    def _random_point(center: Tensor, radius: float, norm: str, mask) -> Tensor:
        if norm == "Linf":
            offset = (torch.rand_like(center) * 2 - 1) * radius
        else:
            direction = torch.randn_like(center).flatten(1)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            d = center[0].numel()
            r = torch.rand(center.shape[0], device=center.device) ** (1.0 / d) * radius
            offset = (r[:, None] * direction).view_as(center)
        return center + offset * mask
