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
``F.relu(x)``, ``x.sigmoid()``) have no module to hook, and ``torch.nn`` modules
without a rule (LayerNorm, attention, adaptive max pooling) are not covered either.
attrkit treats them as Captum does — their ordinary gradient is used — and warns,
naming the module, or the function and the module whose ``forward`` calls it. A
method may also name *joins*, functions that combine two activations (a product
for DeepLift, as in squeeze-excitation; an addition for LRP, as in a residual
connection), to be warned about outside modules with a rule.
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
        """Called once per module call with its (detached) input ``x`` and output ``y``; ``x`` is a tuple
        when the module takes several tensors (an addition module)."""
        return None

    def backward(self, state, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Return ``(gradient for the input directly, gradient sent through the module)``; the first is a
        tuple (one entry per input) when ``forward`` received a tuple."""
        return None, grad


class _Rewired(torch.autograd.Function):
    """Returns the module's output unchanged; in the backward pass the rule decides."""

    @staticmethod
    def forward(ctx, y, rule, state, *xs):
        ctx.rule, ctx.state = rule, state
        return y.clone()  # a fresh tensor, so later in-place operations cannot touch `y`

    @staticmethod
    def backward(ctx, grad):
        to_input, through_module = ctx.rule.backward(ctx.state, grad)
        return (through_module, None, None, *(to_input if isinstance(to_input, tuple) else (to_input,)))


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
        tensors = tuple(a for a in args if isinstance(a, Tensor))
        if not tensors or not isinstance(out, Tensor):
            raise TypeError(
                f"module `{name}` ({type(module).__name__}) must take tensors and return a tensor for its "
                f"backward rule; it took ({', '.join(type(x).__name__ for x in args)}) and returned "
                f"{type(out).__name__}."
            )
        x = tensors[0].detach() if len(tensors) == 1 else tuple(t.detach() for t in tensors)
        state = rule.forward(module, x, out.detach())
        return _Rewired.apply(out, rule, state, *tensors)

    return hook


# --------------------------------------------------------------------------- what the rules do not cover
class _UncoveredCalls(TorchFunctionMode):
    """Notes, outside the modules with a rule, calls of ``watched`` torch functions (nonlinearities) and of
    ``joins`` (function -> noun, e.g. "product") that combine two activations: by the ``torch.nn`` module
    that makes them (``modules``), else by function (``functions``, ``joined``)."""

    def __init__(self, watched: set, joins: dict, hooked: dict, names: dict):
        super().__init__()
        self.watched, self.joins, self.hooked, self.names = watched, joins, hooked, names
        self.modules: dict[str, str] = {}
        self.functions: dict[str, str] = {}
        self.joined: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.watched or (func in self.joins and _two_activations(args)):
            self._note(func)
        return func(*args, **(kwargs or {}))

    def _note(self, func):
        callers = _running_modules()
        if any(m in self.hooked for m in callers):
            return  # inside a module with a rule (its forward, or the rule re-running it): covered
        caller = callers[0] if callers else None
        owner = type(caller).__name__ if caller is not None else "forward_func"
        if caller is not None and type(caller).__module__.startswith("torch.nn"):
            self.modules.setdefault(f"`{self.names.get(caller, owner)}` ({owner})", owner)
        elif func in self.joins:
            self.joined.setdefault(f"{_function_name(func)} in {owner}.forward", self.joins[func])
        else:
            self.functions.setdefault(f"{_function_name(func)} (in {owner}.forward)", owner)


def _two_activations(args) -> bool:
    """Whether at least two arguments are tensors on the gradient's path (parameters and their views aside)."""
    def activation(t) -> bool:
        return isinstance(t, Tensor) and t.requires_grad and not isinstance(t, nn.Parameter) \
            and not isinstance(t._base, nn.Parameter)
    return sum(map(activation, args)) >= 2


def _running_modules() -> list[nn.Module]:
    """The modules whose ``forward`` (or hooks) are running, innermost first (walks the Python stack; only
    when a watched function is called)."""
    frame, found = sys._getframe(1), []
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and (not found or found[-1] is not owner):
            found.append(owner)
        frame = frame.f_back
    return found


def _function_name(func) -> str:
    if "functional" in (getattr(func, "__module__", None) or ""):
        return f"F.{func.__name__}"
    owner = getattr(func, "__objclass__", None)
    is_method = isinstance(owner, type) and issubclass(Tensor, owner)
    return f"Tensor.{func.__name__}" if is_method else f"torch.{func.__name__}"


@contextmanager
def uncovered_calls_warned(method: str, model: nn.Module, watched: set, joins: dict, hooked: dict, what: str):
    """Warn once (per call of ``attribute``) about what no rule covers: ``torch.nn`` modules without a rule
    (LayerNorm, attention, adaptive max pooling), nonlinearities called as functions, and ``joins`` of two
    activations (products for DeepLift, additions for LRP), each named."""
    spy = _UncoveredCalls(watched, joins, hooked, {m: n for n, m in model.named_modules()})
    with spy:
        yield
    parts = []
    if spy.modules:
        verb = "has" if len(spy.modules) == 1 else "have"
        parts.append(f"{' and '.join(spy.modules)} {verb} no {method} rule")
    if spy.functions:
        verb = "is a function, not a module" if len(spy.functions) == 1 else "are functions, not modules"
        parts.append(f"{' and '.join(spy.functions)} {verb}")
    for where, noun in spy.joined.items():
        parts.append(f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} of two activations ({where}) is not a module")
    if parts:
        warnings.warn(f"{method}: {'; '.join(parts)}, so no rule changes the backward pass there and the "
                      f"ordinary gradient is used (as in Captum). {what}", stacklevel=_first_caller_outside_attrkit())


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
        method: the method's name, for the warning about what the rules do not cover.
        watched: the torch functions (nonlinearities) to warn about when called outside a module with a rule;
            the warning names the ``torch.nn`` module that calls them (LayerNorm, attention) or the function.
        joins: torch functions -> a noun ("product", "addition"): warn when one combines two activations
            outside a module with a rule.
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
                 watched: frozenset | set = frozenset(), advice: str = "", joins: dict | None = None):
        self.rule_for, self.method, self.watched, self.advice = rule_for, method, set(watched), advice
        self.joins = joins or {}

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
        of the modules with a rule, and warns about watched functions and joins called outside them."""
        with rules_applied(model, self.rule_for) as hooked:
            if not (self.watched or self.joins):
                yield hooked
                return
            with uncovered_calls_warned(self.method, model, self.watched, self.joins, hooked, self.advice):
                yield hooked
