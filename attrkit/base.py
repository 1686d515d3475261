"""The class roles every algorithm plays.

* :class:`Attribution` — holds the ``forward_func`` and answers the two questions
  Captum users ask of any method: ``has_convergence_delta()`` and
  ``multiplies_by_inputs``.
* :class:`GradientAttribution` — estimators built from gradients.
* :class:`PerturbationAttribution` — estimators built from output differences.
* :class:`LayerAttribution` / :class:`NeuronAttribution` — the same estimators
  re-rooted at a layer, or aimed at one neuron.

Every subclass's ``attribute`` is entered through :func:`_attribute_entry` (set up by
``__init_subclass__``): the outermost call warns once when the model is left in training
mode with batch norm or dropout and drops intra-op threads on a busy machine, and deprecated argument
names are renamed there.
"""
from __future__ import annotations

import contextvars
import functools
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _plumbing as plumbing
from ._threads import threads_beside_others
from ._hooks import module_of

#: True while an ``attribute`` call runs (methods built from other methods check the model once)
_ATTRIBUTING = contextvars.ContextVar("attrkit_attributing", default=False)
_MODE_DEPENDENT = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd)


def _attribute_entry(attribute: Callable) -> Callable:
    """Wrap a class's ``attribute``: rename deprecated arguments; on the outermost call, warn about
    modules in training mode (cheap: one walk over the model's modules) and use fewer intra-op threads
    while other processes keep the cores busy (:func:`attrkit._threads.threads_beside_others`)."""
    @functools.wraps(attribute)
    def entry(self, *args, **kwargs):
        kwargs = self._renamed_arguments(kwargs)
        if _ATTRIBUTING.get():
            return attribute(self, *args, **kwargs)
        if isinstance(self, LayerAttribution) and self.layer is None:
            raise ValueError(f"`layer` is None: set `{type(self).__name__}(...).layer` to a module of the model "
                             "before calling attribute() (TCAV does this for each of its layers).")
        token = _ATTRIBUTING.set(True)
        try:
            warning = self._mode_warning()
            if warning:
                warnings.warn(warning, UserWarning, stacklevel=2)
            with threads_beside_others():
                return attribute(self, *args, **kwargs)
        finally:
            _ATTRIBUTING.reset(token)

    return entry


def _training_warning(forward_func, method: str) -> str | None:
    """The warning for a model left in training mode with batch norm or (active) dropout, or None."""
    model = module_of(forward_func)
    if model is None:
        return None
    for name, module in model.named_modules():
        if module.training and isinstance(module, _MODE_DEPENDENT) and getattr(module, "p", 1) != 0:
            return (f"{method}: the model is in training mode and `{name}` ({type(module).__name__}) behaves "
                    "differently there (batch statistics, random dropout), so the attributions change from call to "
                    "call and may not explain the model you deploy. Call model.eval() first.")
    return None


class Attribution:
    """Base of every attribution method.

    Args:
        forward_func: the model, or any callable ``f(*inputs, *additional_forward_args)``
            returning a tensor whose first dimension is the batch.
    """

    #: whether ``attribute(..., return_convergence_delta=True)`` is supported (a class fact)
    _has_convergence_delta = False
    #: the default of :attr:`multiplies_by_inputs`; a ``multiply_by_inputs`` argument overrides it
    _multiplies_by_inputs = False

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool | None = None):
        if not callable(forward_func):
            raise TypeError(f"`forward_func` must be callable (a model or a function), got {type(forward_func).__name__}.")
        self.forward_func = forward_func
        if multiply_by_inputs is not None:
            self._multiplies_by_inputs = multiply_by_inputs

    def _mode_warning(self) -> str | None:
        """What to warn about the model's mode before attributing (once per outermost call), or None. A method
        whose batching depends on the mode (Occlusion) says it in one warning of its own."""
        return _training_warning(self.forward_func, type(self).__name__)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "attribute" in cls.__dict__:
            cls.attribute = _attribute_entry(cls.__dict__["attribute"])

    def attribute(self, inputs, *args, **kwargs):  # pragma: no cover - every method overrides it
        raise NotImplementedError

    def attribute_future(self, *args, **kwargs):
        """Attribute with a ``forward_func`` that returns a ``torch.futures.Future``. Only some
        perturbation methods support it (as in Captum); the others raise ``NotImplementedError``."""
        raise NotImplementedError(
            f"{type(self).__name__} does not support attribute_future (nor does Captum's); call attribute() "
            "with a forward_func that returns tensors.")

    def _renamed_arguments(self, kwargs: dict) -> dict:
        """Deprecated keyword names mapped to the current ones (none here; see :class:`NeuronAttribution`)."""
        return kwargs

    def has_convergence_delta(self) -> bool:
        """Whether ``attribute(..., return_convergence_delta=True)`` is supported."""
        return self._has_convergence_delta

    def _with_delta(self, result, return_convergence_delta: bool, *delta_args):
        """The ending every method with a delta shares: ``result``, or ``(result, delta)`` when asked,
        ``delta = self.compute_convergence_delta(*delta_args)``."""
        if not return_convergence_delta:
            return result
        return result, self.compute_convergence_delta(*delta_args)

    @property
    def multiplies_by_inputs(self) -> bool:
        """Whether attributions are multiplied by ``inputs - baselines`` (global attribution)."""
        return self._multiplies_by_inputs

    def compute_convergence_delta(
        self, attributions, start_point, end_point, target=None, additional_forward_args=None
    ) -> Tensor:
        """Completeness error per example: ``sum(attributions) - (f(end_point) - f(start_point))``.

        Example:
            >>> import torch
            >>> from attrkit import IntegratedGradients
            >>> model = torch.nn.Linear(3, 1)
            >>> ig = IntegratedGradients(model)
            >>> x = torch.rand(2, 3)
            >>> attr = ig.attribute(x)
            >>> ig.compute_convergence_delta(attr, torch.zeros(2, 3), x).abs().max() < 1e-5
            tensor(True)
        """
        attrs, _ = plumbing.as_tuple(attributions, "attributions")
        end, _ = plumbing.as_tuple(end_point, "end_point")
        start = plumbing.format_baselines(start_point, end, "start_point")
        for a, x in zip(attrs, end):
            if a.shape != x.shape:
                raise ValueError(f"`attributions` shape {tuple(a.shape)} differs from the inputs' {tuple(x.shape)}.")
        target = plumbing.validate_target(target)
        args = plumbing.format_args(additional_forward_args)
        gain = plumbing.scalar_outputs(self.forward_func, end, target, args) - plumbing.scalar_outputs(
            self.forward_func, start, target, args
        )
        return plumbing.sum_per_example(attrs).to(gain.dtype) - gain


class GradientAttribution(Attribution):
    """An attribution computed from gradients of the target output.

    ``gradient_func`` is the one place gradients are taken; modified-backward methods
    (DeepLift, guided backprop, LRP) change the backward pass with hooks, not this.
    """

    def __init__(self, forward_func: Callable, multiply_by_inputs: bool | None = None):
        # Attribution's, named: a class that is also a LayerAttribution (LayerLRP) calls this and
        # LayerAttribution.__init__ each in turn, and the layer is LayerAttribution's to check
        Attribution.__init__(self, forward_func, multiply_by_inputs)
        self.gradient_func = plumbing.gradients


class PerturbationAttribution(Attribution):
    """An attribution computed from output changes when inputs are perturbed."""

    _multiplies_by_inputs = True


class LayerAttribution(Attribution):
    """An attribution to the neurons of ``layer`` (its output, or its input with
    ``attribute_to_layer_input=True``). Methods that attribute to several layers at
    once (``_accepts_layer_list``) accept a list of modules and return a list.
    ``device_ids`` is accepted for Captum compatibility; DataParallel models work as
    they are. ``layer=None`` is accepted (Captum's TCAV tutorial builds
    ``LayerIntegratedGradients(model, None, multiply_by_inputs=False)`` and TCAV sets
    ``method.layer`` before each call); ``attribute`` refuses to run until it is set.
    The convergence delta is taken in layer space: the layer's attributions
    summed, minus ``f(end_point) - f(start_point)``."""

    _accepts_layer_list = False

    def __init__(self, forward_func: Callable, layer, device_ids=None, multiply_by_inputs: bool | None = None):
        super().__init__(forward_func, multiply_by_inputs)
        layers = layer if isinstance(layer, list) else [layer]
        if layer is not None and (not layers or not all(isinstance(m, torch.nn.Module) for m in layers)):
            raise TypeError(f"`layer` must be a torch.nn.Module (or a list of them), got {type(layer).__name__}.")
        if isinstance(layer, list) and not self._accepts_layer_list:
            raise TypeError(f"`layer` must be one torch.nn.Module for {type(self).__name__}, got a list.")
        self.layer = layer
        self.device_ids = device_ids

    def _layers(self) -> list:
        return self.layer if isinstance(self.layer, list) else [self.layer]

    def _for_each_layer(self, attribute_one: Callable):
        """``attribute_one(layer)`` for the layer, or a list over the layers when given several."""
        results = [attribute_one(layer) for layer in self._layers()]
        return results if isinstance(self.layer, list) else results[0]

    def compute_convergence_delta(self, attributions, start_point, end_point, target=None,
                                  additional_forward_args=None) -> Tensor:
        """Completeness error per example: attributions summed over the layer minus ``f(end) - f(start)``."""
        layer_attrs = flatten(attributions)
        end, _ = plumbing.as_tuple(end_point, "end_point")
        start = plumbing.format_baselines(start_point, end, "start_point")
        n = plumbing.batch_size_of(end)
        if any(a.shape[0] != n for a in layer_attrs):
            raise ValueError(f"`attributions` must have one row per example ({n}); got batch sizes "
                             f"{[a.shape[0] for a in layer_attrs]}.")
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        gain = plumbing.scalar_outputs(self.forward_func, end, target, args) - plumbing.scalar_outputs(
            self.forward_func, start, target, args)
        return plumbing.sum_per_example(layer_attrs).to(gain.dtype) - gain

    @staticmethod
    def interpolate(layer_attribution: Tensor, interpolate_dims, interpolate_mode: str = "nearest") -> Tensor:
        """Upsample a layer map (N, C, *spatial) to ``interpolate_dims`` (e.g. the input's H, W).

        Example:
            >>> import torch
            >>> from attrkit import LayerAttribution
            >>> LayerAttribution.interpolate(torch.ones(1, 1, 7, 7), (224, 224)).shape
            torch.Size([1, 1, 224, 224])
        """
        size = (interpolate_dims,) if isinstance(interpolate_dims, int) else tuple(interpolate_dims)
        if layer_attribution.dim() != len(size) + 2:
            raise ValueError(
                f"`interpolate_dims` {size} needs a layer attribution with {len(size) + 2} dimensions "
                f"(N, C, *spatial); got shape {tuple(layer_attribution.shape)}."
            )
        return F.interpolate(layer_attribution, size=size, mode=interpolate_mode)


class NeuronAttribution(Attribution):
    """An attribution of one neuron of ``layer`` (chosen by ``neuron_selector``) to the inputs."""

    def __init__(self, forward_func: Callable, layer: torch.nn.Module, device_ids=None,
                 multiply_by_inputs: bool | None = None):
        super().__init__(forward_func, multiply_by_inputs)
        if not isinstance(layer, torch.nn.Module):
            raise TypeError(f"`layer` must be a torch.nn.Module, got {type(layer).__name__}.")
        self.layer = layer
        self.device_ids = device_ids

    def _renamed_arguments(self, kwargs: dict) -> dict:
        """``neuron_index=`` (Captum before 0.6) is a deprecated alias of ``neuron_selector=``."""
        if "neuron_index" not in kwargs:
            return kwargs
        if "neuron_selector" in kwargs:
            raise TypeError("give `neuron_selector` only (`neuron_index` is its deprecated old name).")
        warnings.warn("`neuron_index` is deprecated (as in Captum); use `neuron_selector` instead.",
                      DeprecationWarning, stacklevel=3)
        kwargs = dict(kwargs)
        kwargs["neuron_selector"] = kwargs.pop("neuron_index")
        return kwargs


def flatten(attributions) -> tuple[Tensor, ...]:
    """Tensors out of a tensor, a tuple, or a list (one entry per layer) of those."""
    if isinstance(attributions, Tensor):
        return (attributions,)
    return tuple(t for a in attributions for t in flatten(a))


def require_module(model, method: str, why: str) -> torch.nn.Module:
    """``model``, checked to be an ``nn.Module`` (methods that hook its modules need one)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module for {method} ({why}), got {type(model).__name__}.")
    return model
