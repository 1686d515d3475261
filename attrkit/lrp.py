"""Layer-wise relevance propagation (LRP): the output score, redistributed layer by layer.

LRP starts with the target output as the total *relevance* and passes it back
through the network; each layer splits the relevance of its outputs among its
inputs in proportion to their contributions. For a layer ``z = W a + b`` the
basic (epsilon) rule gives input ``i``

    R_i = a_i * sum_j W_ji * R_j / (z_j ± eps)

— the gradient of ``z`` weighted by ``R / z``, times the input. The rules differ
in the weights they use for ``W`` (:class:`GammaRule` boosts positive weights,
:class:`Alpha1_Beta0_Rule` keeps only positive ones) or skip the layer
(:class:`IdentityRule`).

Choose a rule per layer by setting its ``rule`` attribute, as in Captum::

    model.conv1.rule = GammaRule()

Layers without one get a default: the epsilon rule for linear layers,
convolutions, batch norm and pooling; ReLU, Tanh and dropout pass the relevance
on unchanged; Flatten and Identity are reshapes. Any other leaf module needs a
``rule`` (a ``TypeError`` says which). The rules run through the same per-call
hooks as DeepLift (:mod:`attrkit._rules`): the model's weights are never
changed, and modules used several times get the rule at every call.
:class:`~attrkit.LayerLRP` (in :mod:`attrkit.layer.lrp`) applies the same rules
and stops at a layer.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from . import _plumbing as plumbing
from ._rules import BackwardRule, RuleSet
from .base import GradientAttribution, require_module


# --------------------------------------------------------------------------- rules
class PropagationRule(BackwardRule):
    """Base of the LRP rules: ``R_in = a * grad(z'(a), a, R_out / (z' ± eps))``.

    ``z'`` is the layer applied to its input ``a`` with the parameters from
    :meth:`parameters` (the layer's own by default). Subclass it and override
    :meth:`parameters` to make a new rule.
    """

    STABILITY_FACTOR = 1e-9

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """Replacement parameters for the relevance pass (name -> tensor); empty keeps the layer's own."""
        return {}

    def forward(self, module, a, z):
        inputs = a if isinstance(a, tuple) else (a,)  # a module with several inputs (an addition) gets them all
        with torch.enable_grad():
            leaves = tuple(x.detach().requires_grad_() for x in inputs)
            z_ = _rerun(module, leaves, self.parameters(module))
        return inputs, leaves, z_, isinstance(a, tuple)

    def backward(self, state, relevance):
        inputs, leaves, z_, several = state
        z = z_.detach()
        stabilized = z + torch.where(z >= 0, self.STABILITY_FACTOR, -self.STABILITY_FACTOR)
        weighted = torch.autograd.grad(z_, leaves, relevance / stabilized)
        shares = tuple(x * w for x, w in zip(inputs, weighted))
        return (shares if several else shares[0]), None

    def __repr__(self):
        return f"{type(self).__name__}()"


def _rerun(module: nn.Module, inputs: tuple, parameters: dict) -> Tensor:
    """``module.forward(*inputs)`` on a shallow twin of the module whose parameters are replaced by
    ``parameters`` and whose buffers (BatchNorm's running statistics) are copies: nothing in
    the model changes, and no hooks run."""
    twin = copy.copy(module)
    twin._parameters = {**module._parameters, **parameters}
    twin._buffers = {name: None if b is None else b.clone() for name, b in module._buffers.items()}
    return twin.forward(*inputs)


def _weight_and_bias(module, weight_fn, zero_bias: bool) -> dict[str, Tensor]:
    out = {}
    if isinstance(getattr(module, "weight", None), Tensor):
        out["weight"] = weight_fn(module.weight.detach())
    if zero_bias and isinstance(getattr(module, "bias", None), Tensor):
        out["bias"] = torch.zeros_like(module.bias)
    return out


class EpsilonRule(PropagationRule):
    """The epsilon rule: ``R_i = a_i * sum_j w_ji R_j / (z_j ± epsilon)``; a larger
    ``epsilon`` absorbs weak, noisy relevance. A good choice for middle and upper layers.

    Example:
        >>> from attrkit import EpsilonRule
        >>> EpsilonRule(epsilon=1e-6).STABILITY_FACTOR
        1e-06
    """

    def __init__(self, epsilon: float = 1e-9):
        self.STABILITY_FACTOR = epsilon

    def __repr__(self):
        return f"EpsilonRule(epsilon={self.STABILITY_FACTOR})"


class GammaRule(PropagationRule):
    """The gamma rule: weights ``w + gamma * max(w, 0)`` favour positive contributions.
    A good choice for lower layers. ``set_bias_to_zero`` drops the layer's bias.

    Example:
        >>> import torch
        >>> from attrkit import GammaRule
        >>> GammaRule(gamma=0.5).parameters(torch.nn.Linear(2, 1, bias=False))["weight"].shape
        torch.Size([1, 2])
    """

    def __init__(self, gamma: float = 0.25, set_bias_to_zero: bool = False):
        self.gamma = gamma
        self.set_bias_to_zero = set_bias_to_zero

    def parameters(self, module):
        return _weight_and_bias(module, lambda w: w + self.gamma * w.clamp(min=0), self.set_bias_to_zero)

    def __repr__(self):
        return f"GammaRule(gamma={self.gamma}, set_bias_to_zero={self.set_bias_to_zero})"


class Alpha1_Beta0_Rule(PropagationRule):  # noqa: N801 - Captum's name
    """The alpha=1, beta=0 rule (deep Taylor decomposition): only positive weights pass
    relevance, which keeps it positive. Not meant for batch norm.

    Example:
        >>> from attrkit import Alpha1_Beta0_Rule
        >>> Alpha1_Beta0_Rule(set_bias_to_zero=True)
        Alpha1_Beta0_Rule(set_bias_to_zero=True)
    """

    def __init__(self, set_bias_to_zero: bool = False):
        self.set_bias_to_zero = set_bias_to_zero

    def parameters(self, module):
        return _weight_and_bias(module, lambda w: w.clamp(min=0), self.set_bias_to_zero)

    def __repr__(self):
        return f"Alpha1_Beta0_Rule(set_bias_to_zero={self.set_bias_to_zero})"


class IdentityRule(EpsilonRule):
    """Relevance passes through unchanged (the layer's input and output have the same
    shape), e.g. for batch norm or an activation. A module with several inputs (an
    addition) splits it by each input's share of the output, so the total is unchanged.

    Example:
        >>> from attrkit import IdentityRule
        >>> IdentityRule()
        IdentityRule()
    """

    def forward(self, module, a, z):
        return (a, z) if isinstance(a, tuple) else None

    def backward(self, state, relevance):
        if state is None:
            return relevance, None
        inputs, z = state  # several inputs (an addition): each gets its share x_i / z of the relevance
        share = relevance / (z + torch.where(z >= 0, self.STABILITY_FACTOR, -self.STABILITY_FACTOR))
        return tuple(x * share for x in inputs), None

    def __repr__(self):
        return "IdentityRule()"


# --------------------------------------------------------------------------- defaults
EPSILON_LAYERS = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
PASS_THROUGH_LAYERS = (nn.ReLU, nn.Tanh, nn.modules.dropout._DropoutNd)
RESHAPE_LAYERS = (nn.Flatten, nn.Unflatten, nn.Identity)


def default_rule(module: nn.Module) -> PropagationRule | None:
    """The rule a leaf module gets when it has no ``rule`` attribute (None: plain gradient)."""
    if isinstance(module, EPSILON_LAYERS):
        return EpsilonRule()
    if isinstance(module, PASS_THROUGH_LAYERS):
        return IdentityRule()
    if isinstance(module, RESHAPE_LAYERS):
        return None
    raise TypeError(
        f"LRP has no default rule for {type(module).__name__} ({module}). Set one on the module, e.g. "
        "`module.rule = EpsilonRule()` for a layer with weights or `module.rule = IdentityRule()` for an "
        "elementwise layer whose relevance should pass through."
    )


def check_rules(model: nn.Module):
    for name, module in model.named_modules():
        rule = getattr(module, "rule", None)
        if rule is not None and not isinstance(rule, PropagationRule):
            from_captum = type(rule).__module__.split(".")[0] == "captum"
            left_over = (" from Captum (set by code written for Captum, or left by a Captum LRP call that failed): "
                         "use the attrkit rule of the same name, or `del module.rule` for the default") \
                if from_captum else ""
            raise TypeError(
                f"`{name or 'model'}.rule` must be an attrkit LRP rule (attrkit.EpsilonRule(), GammaRule(), "
                f"Alpha1_Beta0_Rule(), IdentityRule() or a PropagationRule subclass), got "
                f"{type(rule).__name__}{left_over}."
            )


def lrp_rules(verbose: bool = False) -> RuleSet:
    """LRP's :class:`~attrkit._rules.RuleSet`: each leaf module's ``rule`` attribute, else its default."""
    def rule_for(module: nn.Module):
        if any(True for _ in module.children()):
            return None  # containers: their leaves carry the rules
        rule = getattr(module, "rule", None)
        rule = rule if rule is not None else default_rule(module)
        if verbose and rule is not None:
            print(f"Applied {rule} on layer {module}")
        return rule

    return RuleSet(rule_for, method="LRP", joins=_ADDITIONS, advice=_ADVICE)


#: Functions that add two activations (residual connections): relevance is not conserved there.
_ADDITIONS = {f: "addition" for f in (
    torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__radd__,
    torch.Tensor.__iadd__, torch.sub, torch.Tensor.sub, torch.Tensor.__sub__,
)}
_ADVICE = ("Relevance is not conserved there (a residual connection?): compute it in a module of its own and "
           "give that module a rule (`module.rule = EpsilonRule()` splits the relevance by each input's share).")


# --------------------------------------------------------------------------- LRP
class LRP(GradientAttribution):
    r"""Layer-wise relevance propagation with a rule per layer.

    The relevance of the target output (its value) is propagated back to the
    inputs with each layer's ``rule`` (see the module docstring for the defaults).
    With bias-free layers and small epsilons the relevance is conserved: the
    attributions add up to the output (the convergence delta is
    ``output - sum(attributions)``, as in Captum).

    Bach et al. (2015), *On Pixel-Wise Explanations for Non-Linear Classifier
    Decisions by Layer-Wise Relevance Propagation*,
    https://doi.org/10.1371/journal.pone.0130140 ; Montavon et al. (2019),
    *Layer-Wise Relevance Propagation: An Overview*,
    https://doi.org/10.1007/978-3-030-28954-6_10

    Args:
        model: an ``nn.Module``; set ``layer.rule`` on any layer to override its default.

    Example:
        >>> import torch
        >>> from attrkit import LRP, GammaRule
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> model.conv1.rule = GammaRule()
        >>> attr, delta = LRP(model).attribute(torch.rand(2, 1, 8, 8), target=0, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2]))
    """

    _multiplies_by_inputs = True
    _has_convergence_delta = True

    def __init__(self, model: nn.Module):
        super().__init__(require_module(model, type(self).__name__, "it hooks its layers"))
        self.model = model
        check_rules(model)

    def attribute(self, inputs, target=None, additional_forward_args=None, return_convergence_delta: bool = False,
                  verbose: bool = False):
        """Redistribute the target output backwards layer by layer with each module's rule.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            verbose: print the rule applied to each module.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); with
            ``return_convergence_delta=True``, ``(attributions, delta)`` with one delta per example.

        Example:
            >>> import torch
            >>> from attrkit import LRP
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LRP(model).attribute(x, target=1).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        check_rules(self.model)
        with lrp_rules(verbose).applied(self.model):
            per_unit_output = self.gradient_func(self.forward_func, xs, target, args)
        output = plumbing.scalar_outputs(self.forward_func, xs, target, args)
        relevance = tuple(times_rows(r, output) for r in per_unit_output)
        return self._with_delta(plumbing.restore(relevance, is_tuple), return_convergence_delta, relevance, output)

    def compute_convergence_delta(self, attributions, output: Tensor) -> Tensor:
        """Relevance lost on the way: ``output - sum(attributions)`` per example (Captum's sign)."""
        attrs, _ = plumbing.as_tuple(attributions, "attributions")
        return output.reshape(-1) - plumbing.sum_per_example(attrs).reshape(-1)


def times_rows(relevance: Tensor, output: Tensor) -> Tensor:
    """The propagation starts from a unit gradient; scale each example by its output value."""
    return relevance * output.reshape(-1, *([1] * (relevance.dim() - 1))).to(relevance.dtype)

