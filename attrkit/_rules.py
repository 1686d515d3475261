"""Modified backward passes: the one mechanism DeepLift, guided backprop/deconvolution and LRP share.

These methods run the model forward as usual and change only how the gradient
flows *backward* through some modules:

* a **rule** (:class:`BackwardRule`) is a small object with two methods:
  ``forward(module, x, y)`` looks at one call's input and output and returns
  whatever it needs later; ``backward(state, grad)`` receives the gradient
  arriving at that call's output and says where it goes:
  ``(to_input, through_module)`` — the first goes straight to the module's input,
  the second goes through the module's own derivative (either may be ``None``);
* a **rule set** (:class:`RuleSet`) says which module gets which rule, and its
  :meth:`RuleSet.applied` context puts the rules on a model and takes them off;
* :func:`rules_applied` puts a forward hook on every module that has a rule. At
  *each call* the hook wraps the output in a tiny autograd function whose
  backward asks the rule. Reused modules (ResNet calls one ``ReLU`` twice per
  block) therefore get one rule application per call, and the forward values
  are never changed;
* in-place modules (``ReLU(inplace=True)``) would overwrite the input the rule
  needs, so their ``inplace`` flag is switched off while the hooks are in place
  and switched back on afterwards, also when an error is raised. (A custom module
  that works in place needs such an ``inplace`` attribute; every ``torch.nn``
  activation has one.)

After that, the ordinary gradient (:func:`attrkit._plumbing.gradients`, or
:func:`attrkit._hooks.layer_gradients` at a layer) does the rest.

Nonlinearities called as functions inside ``forward()`` (``torch.relu(x)``,
``F.relu(x)``, ``x.sigmoid()``) have no module to hook. attrkit treats them as
Captum does — their ordinary gradient is used — and warns, naming the function
and the module whose ``forward`` calls it, so you can replace it with a module.
"""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ._hooks import hook_handles


# --------------------------------------------------------------------------- the mechanism
class BackwardRule:
    """How the gradient passes back through one call of a module.

    Subclasses override :meth:`forward` (what to remember from the forward pass)
    and :meth:`backward` (where the output gradient goes). The default passes the
    gradient through the module's own derivative, i.e. changes nothing.
    """

    def forward(self, module: nn.Module, x: Tensor, y: Tensor):
        """Called once per module call with its (detached) input ``x`` and output ``y``."""
        return None

    def backward(self, state, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Return ``(gradient for the input directly, gradient sent through the module)``."""
        return None, grad


class _Rewired(torch.autograd.Function):
    """Returns the module's output unchanged; in the backward pass the rule decides."""

    @staticmethod
    def forward(ctx, x, y, rule, state):
        ctx.rule, ctx.state = rule, state
        return y.clone()  # a fresh tensor, so later in-place operations cannot touch `y`

    @staticmethod
    def backward(ctx, grad):
        to_input, through_module = ctx.rule.backward(ctx.state, grad)
        return to_input, through_module, None, None


@contextmanager
def rules_applied(model: nn.Module, rule_for: Callable[[nn.Module], BackwardRule | None]) -> Iterator[dict]:
    """Apply ``rule_for(module)`` to every call of every module of ``model`` that gets a rule.

    Yields ``{module: name}`` of the modules with a rule. Hooks are removed and
    ``inplace`` flags restored when the block ends, also after an error.
    """
    hooked: dict[nn.Module, str] = {}
    switched: list[nn.Module] = []
    with hook_handles() as handles:
        try:
            for name, module in model.named_modules():
                rule = rule_for(module)
                if rule is None:
                    continue
                hooked[module] = name or type(module).__name__
                if getattr(module, "inplace", False) is True:
                    module.inplace = False
                    switched.append(module)
                handles.append(module.register_forward_hook(_rewiring_hook(rule, hooked[module])))
            yield hooked
        finally:
            for module in switched:
                module.inplace = True


def _rewiring_hook(rule: BackwardRule, name: str):
    def hook(module, args, out):
        x = args[0] if args else None
        if not isinstance(x, Tensor) or not isinstance(out, Tensor):
            raise TypeError(
                f"module `{name}` ({type(module).__name__}) must take a tensor and return a tensor for its "
                f"backward rule; it returned {type(out).__name__}."
            )
        state = rule.forward(module, x.detach(), out.detach())
        return _Rewired.apply(x, out, rule, state)

    return hook


# --------------------------------------------------------------------------- functional nonlinearities
class _FunctionalCallsSeen(TorchFunctionMode):
    """Notes calls of ``watched`` torch functions made outside the hooked modules."""

    def __init__(self, watched: set, hooked: dict):
        super().__init__()
        self.watched, self.hooked, self.seen = watched, hooked, {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.watched:
            caller = _innermost_module()
            if caller not in self.hooked:
                self.seen.setdefault(_function_name(func), type(caller).__name__ if caller else "forward_func")
        return func(*args, **(kwargs or {}))


def _innermost_module() -> nn.Module | None:
    """The module whose ``forward`` is running (walks the Python stack; only used when warning)."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module):
            return owner
        frame = frame.f_back
    return None


def _function_name(func) -> str:
    if "functional" in (getattr(func, "__module__", None) or ""):
        return f"F.{func.__name__}"
    owner = getattr(func, "__objclass__", None)
    is_method = isinstance(owner, type) and issubclass(Tensor, owner)
    return f"Tensor.{func.__name__}" if is_method else f"torch.{func.__name__}"


@contextmanager
def functional_calls_warned(method: str, watched: set, hooked: dict, what: str):
    """Warn once (per call of ``attribute``) about nonlinearities called as functions."""
    spy = _FunctionalCallsSeen(watched, hooked)
    with spy:
        yield
    if spy.seen:
        calls = " and ".join(f"{f} (in {owner}.forward)" for f, owner in spy.seen.items())
        verb = "is a function, not a module" if len(spy.seen) == 1 else "are functions, not modules"
        warnings.warn(
            f"{method}: {calls} {verb}, so no hook can change the backward pass there and the "
            f"ordinary gradient is used (as in Captum). {what}",
            stacklevel=_first_caller_outside_attrkit(),
        )


def _first_caller_outside_attrkit() -> int:
    """The ``stacklevel`` that points a warning at the user's line."""
    here = os.path.dirname(__file__)
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename.startswith(here) or "contextlib" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level



# --------------------------------------------------------------------------- rule sets
class RuleSet:
    """Which module gets which rule, and a context that applies and removes them.

    Args:
        rule_for: ``rule_for(module)`` returns the module's :class:`BackwardRule`, or None (ordinary gradient).
        method: the method's name, for the warning about nonlinearities called as functions.
        watched: the torch functions to warn about when a model calls them inside ``forward``.
        advice: the warning's last sentence (what to do about it).

    Example:
        >>> import torch
        >>> from attrkit._rules import BackwardRule, RuleSet
        >>> class Stop(BackwardRule):
        ...     def backward(self, state, grad):
        ...         return None, torch.zeros_like(grad)
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> stop_at_relu = RuleSet(lambda m: Stop() if isinstance(m, torch.nn.ReLU) else None)
        >>> x = torch.ones(1, 2, requires_grad=True)
        >>> with stop_at_relu.applied(model):
        ...     model(x).sum().backward()
        >>> x.grad
        tensor([[0., 0.]])
    """

    def __init__(self, rule_for: Callable[[nn.Module], BackwardRule | None], method: str = "",
                 watched: frozenset | set = frozenset(), advice: str = ""):
        self.rule_for, self.method, self.watched, self.advice = rule_for, method, set(watched), advice

    @classmethod
    def by_type(cls, table: dict, *rule_args, **warn) -> RuleSet:
        """Rules by module type: ``table[cls](*rule_args)`` for the first class of a module's type hierarchy
        (its ``__mro__``) found in ``table`` (subclasses match too)."""
        def rule_for(module: nn.Module) -> BackwardRule | None:
            for kind in type(module).__mro__:
                if kind in table:
                    return table[kind](*rule_args)
            return None

        return cls(rule_for, **warn)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[dict]:
        """Apply the rules to every call of ``model``'s modules while the block runs; yields ``{module: name}``
        of the modules with a rule, and warns about watched functions called outside them."""
        with rules_applied(model, self.rule_for) as hooked:
            if not self.watched:
                yield hooked
                return
            with functional_calls_warned(self.method, self.watched, hooked, self.advice):
                yield hooked
