"""Gradient-based layer methods: the primary estimators, re-rooted at a layer's activations.

Every layer method attributes to the neurons of ``layer`` (its output, or its input
with ``attribute_to_layer_input=True``) and returns the layer's shape: a tensor, or
a tuple when the layer hands back several tensors (a list when several layers are
given, where Captum allows it). Nothing re-implements an estimator:

* the layer's gradient at a point (:func:`attrkit._hooks.layer_gradients`) gives
  :class:`LayerGradientXActivation` and :class:`LayerGradCam`;
* :class:`~attrkit.NoiseTunnel` over a one-point layer gradient gives
  :class:`LayerGradientShap`, exactly as it gives :class:`~attrkit.GradientShap`;
* :class:`GuidedGradCam` multiplies :class:`~attrkit.GuidedBackprop` by the
  upsampled :class:`LayerGradCam`.

The other families sit beside this module in :mod:`attrkit.layer`: the path methods
(:mod:`attrkit.layer.path`: InternalInfluence, LayerConductance, LayerIntegratedGradients), DeepLift's
multipliers at a layer (:mod:`attrkit.layer.deeplift`), ablation of a layer's
neurons (:mod:`attrkit.layer.perturbation`) and LayerLRP (:mod:`attrkit.layer.lrp`).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _plumbing as plumbing
from .._hooks import capture, layer_gradients, layer_values
from ..backprop import GuidedBackprop
from ..base import GradientAttribution, LayerAttribution
from ..gradient import InputBaselineXGradient
from ..noise_tunnel import NoiseTunnel
from ._base import LayerGradientAttribution, layer_result

__all__ = [
    "LayerActivation", "LayerGradientXActivation", "LayerGradCam", "LayerGradientShap", "GuidedGradCam",
]


# --------------------------------------------------------------------------- activations and one-point gradients
class LayerActivation(LayerGradientAttribution):
    """The layer's activations themselves (no gradient).

    Example:
        >>> import torch
        >>> from attrkit import LayerActivation
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> LayerActivation(model, model.conv2).attribute(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 6, 3, 3])
    """

    _accepts_layer_list = True
    _multiplies_by_inputs = True

    def attribute(self, inputs, additional_forward_args=None, attribute_to_layer_input: bool = False):
        """The layer's activations for ``inputs`` (no target: nothing is differentiated).

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_layer_input: attribute to the layer's input instead of its output.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several.

        Example:
            >>> import torch
            >>> from attrkit import LayerActivation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LayerActivation(model, model[0]).attribute(x).shape
            torch.Size([2, 4])
        """
        xs, _ = plumbing.as_tuple(inputs)
        args = plumbing.format_args(additional_forward_args)
        return self._for_each_layer(
            lambda layer: layer_result(layer_values(self.forward_func, layer, xs, args, attribute_to_layer_input)[0])
        )


class LayerGradientXActivation(LayerGradientAttribution):
    r"""The layer's activation times the gradient of the target output with respect to it:
    :math:`a \odot \partial F / \partial a` (the layer version of Input X Gradient).

    Shrikumar et al. (2016), *Not Just a Black Box*, https://arxiv.org/abs/1605.01713

    Args:
        multiply_by_inputs: multiply by the activation; ``False`` gives the layer gradient alone.
        memory_efficient: accepted for Captum compatibility (results do not change).

    Example:
        >>> import torch
        >>> from attrkit import LayerGradientXActivation
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> LayerGradientXActivation(model, model.fc).attribute(torch.rand(2, 1, 8, 8), target=1).shape
        torch.Size([2, 3])
    """

    _accepts_layer_list = True

    def __init__(self, forward_func: Callable, layer, device_ids=None, multiply_by_inputs: bool = True,
                 memory_efficient: bool = False):
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)

    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  grad_kwargs: dict | None = None):
        """The target's gradient with respect to the layer's activations, times those activations.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            grad_kwargs: keyword arguments passed to ``torch.autograd.grad``.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several.

        Example:
            >>> import torch
            >>> from attrkit import LayerGradientXActivation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LayerGradientXActivation(model, model[0]).attribute(x, target=1).shape
            torch.Size([2, 4])
        """
        xs, _ = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)

        def one(layer):
            grads, acts = layer_gradients(self.forward_func, layer, xs, target, args, attribute_to_layer_input,
                                          grad_kwargs=grad_kwargs)
            return layer_result(tuple(g * a for g, a in zip(grads, acts)) if self.multiplies_by_inputs else grads)

        return self._for_each_layer(one)


class LayerGradCam(LayerGradientAttribution):
    r"""Grad-CAM: the layer's channels weighted by their spatially averaged gradients,
    :math:`\sum_c \bar{g}_c\, a_c` (summed over channels unless ``attr_dim_summation=False``,
    passed through a ReLU with ``relu_attributions=True``). Layers without spatial
    dimensions use the gradient as it is. Upsample the map to the input's size with
    :meth:`LayerAttribution.interpolate`.

    On a vision transformer the layer's output is a token sequence (N, 1+P, D), not a
    channel grid: pass ``reshape_transform=attrkit.vit_token_grid`` (or any function of
    one tensor) and Grad-CAM runs on what it returns, here the patch grid (N, D, h, w)
    without the class token (as pytorch-grad-cam's ``reshape_transform``). The default
    ``None`` leaves the layer's values as they are (Captum's behaviour). Choose a layer
    before the last block's attention (e.g. torchvision's ``encoder.layers[-1].ln_1``):
    the last block's output reaches the head only through the class token.

    Selvaraju et al. (2017), *Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization*, https://arxiv.org/abs/1610.02391

    Example:
        >>> import torch
        >>> from attrkit import LayerGradCam, LayerAttribution
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> cam = LayerGradCam(model, model.conv2).attribute(torch.rand(2, 1, 8, 8), target=0, relu_attributions=True)
        >>> cam.shape, LayerAttribution.interpolate(cam, (8, 8)).shape
        (torch.Size([2, 1, 3, 3]), torch.Size([2, 1, 8, 8]))
    """

    def attribute(self, inputs, target=None, additional_forward_args=None, attribute_to_layer_input: bool = False,
                  relu_attributions: bool = False, attr_dim_summation: bool = True, grad_kwargs: dict | None = None,
                  reshape_transform: Callable | None = None):
        """Grad-CAM at the layer: its activations weighted by the spatially averaged gradients, summed over
        channels.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            relu_attributions: apply a ReLU to the map (keep only positive evidence, as Grad-CAM does).
            attr_dim_summation: sum the weighted activations over channels (True, the Grad-CAM map) or keep one map
                per channel.
            grad_kwargs: keyword arguments passed to ``torch.autograd.grad``.
            reshape_transform: None (Captum's behaviour), or a function applied to the layer's activations and
                gradients before the map is made, e.g. :func:`attrkit.vit_token_grid` to turn a vision
                transformer's tokens into its patch grid (an attrkit addition).

        Returns:
            The map, shaped like the layer's output with one channel when ``attr_dim_summation`` is True.

        Example:
            >>> import torch
            >>> from attrkit import LayerGradCam
            >>> from attrkit.testing import SmallCNN
            >>> model, x = SmallCNN(), torch.rand(2, 1, 8, 8)
            >>> LayerGradCam(model, model.conv2).attribute(x, target=0).shape
            torch.Size([2, 1, 3, 3])
        """
        xs, _ = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError("`reshape_transform` must be None or a function of one tensor (e.g. "
                            f"attrkit.vit_token_grid), got {type(reshape_transform).__name__}.")
        grads, acts = layer_gradients(self.forward_func, self.layer, xs, target, args, attribute_to_layer_input,
                                      grad_kwargs=grad_kwargs)
        if reshape_transform is not None:  # a linear re-arrangement: the gradient moves with its activation
            grads, acts = tuple(map(reshape_transform, grads)), tuple(map(reshape_transform, acts))

        def cam(g: Tensor, a: Tensor) -> Tensor:
            channel_weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
            weighted = channel_weights * a
            weighted = weighted.sum(dim=1, keepdim=True) if attr_dim_summation else weighted
            return F.relu(weighted) if relu_attributions else weighted

        return layer_result(tuple(cam(g, a) for g, a in zip(grads, acts)))


# --------------------------------------------------------------------------- expectations
class _LayerInputBaselineXGradient(LayerGradientAttribution):
    """The layer gradient at one random point between input and baseline, times the change
    of the layer's activation from baseline to input: one sample of :class:`LayerGradientShap`.

    Several layers (a list) share the random point; the result is one flat tuple over all
    the layers' tensors (:func:`_tensors_per_layer` says how to cut it)."""

    _has_convergence_delta = True
    _accepts_layer_list = True

    def __init__(self, forward_func: Callable, layer, multiply_by_inputs: bool = True):
        super().__init__(forward_func, layer, multiply_by_inputs=multiply_by_inputs)

    def attribute(self, inputs, baselines, target=None, additional_forward_args=None,
                  return_convergence_delta: bool = False, attribute_to_layer_input: bool = False):
        xs, _ = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)

        def flat_layer_gradients(f, points, t, a):
            grads = layer_gradients(f, self._layers(), points, t, a, attribute_to_layer_input)[0]
            return tuple(g for gs in grads for g in gs)

        at_random_point = InputBaselineXGradient(self.forward_func, multiply_by_inputs=False)
        at_random_point.gradient_func = flat_layer_gradients
        attrs = at_random_point.attribute(xs, bs, target=target, additional_forward_args=args)
        if self.multiplies_by_inputs:
            def values(points):
                return [v for layer in self._layers()
                        for v in layer_values(self.forward_func, layer, points, args, attribute_to_layer_input)[0]]
            attrs = tuple(g * (x - b) for g, x, b in zip(attrs, values(xs), values(bs)))
        return self._with_delta(attrs, return_convergence_delta, attrs, bs, xs, target, args)


class LayerGradientShap(LayerGradientAttribution):
    r"""GradientSHAP at a layer: the expected layer gradient at random points between
    (noisy) inputs and baselines drawn from a reference distribution, times the
    change of the layer's activation from baseline to input.

    Several layers can be given as a list: they share the random draws, and a list
    comes back with, for each layer, what a call with that layer alone gives for the
    same draws (Captum 0.9 fails on a list).

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*,
    https://arxiv.org/abs/1705.07874

    Example:
        >>> import torch
        >>> from attrkit import LayerGradientShap
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> gs = LayerGradientShap(model, model.conv1)
        >>> gs.attribute(torch.rand(2, 1, 8, 8), baselines=torch.rand(5, 1, 8, 8), n_samples=10, target=0).shape
        torch.Size([2, 4, 6, 6])
    """

    _has_convergence_delta = True
    _accepts_layer_list = True

    def __init__(self, forward_func: Callable, layer, device_ids=None, multiply_by_inputs: bool = True):
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)

    def attribute(self, inputs, baselines, n_samples: int = 5, stdevs=0.0, target=None,
                  additional_forward_args=None, return_convergence_delta: bool = False,
                  attribute_to_layer_input: bool = False):
        """GradientShap at the layer: gradient times activation difference at random points between noisy inputs and
        baselines.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            n_samples: random samples drawn per example.
            stdevs: standard deviation of the Gaussian noise added to each sample: a float, or one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            attribute_to_layer_input: attribute to the layer's input instead of its output.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Example:
            >>> import torch
            >>> from attrkit import LayerGradientShap
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> LayerGradientShap(model, model[0]).attribute(x, baselines=torch.zeros(3, 3), n_samples=4, target=0).shape
            torch.Size([2, 4])
        """
        xs, _ = plumbing.as_tuple(inputs)
        one_sample = _LayerInputBaselineXGradient(self.forward_func, self.layer, self.multiplies_by_inputs)
        out = NoiseTunnel(one_sample).attribute(
            xs, nt_type="smoothgrad", nt_samples=plumbing.check_positive_int(n_samples, "n_samples"), stdevs=stdevs,
            draw_baseline_from_distrib=True, baselines=plumbing.baseline_distribution(baselines, xs), target=target,
            additional_forward_args=additional_forward_args, return_convergence_delta=return_convergence_delta,
            attribute_to_layer_input=attribute_to_layer_input,
        )
        attrs, delta = out if return_convergence_delta else (out, None)
        flat, per_layer = plumbing.as_tuple(attrs)[0], []
        args = plumbing.format_args(additional_forward_args)
        for size in _tensors_per_layer(self.forward_func, self._layers(), xs, args, attribute_to_layer_input):
            per_layer.append(layer_result(flat[:size]))
            flat = flat[size:]
        result = per_layer if isinstance(self.layer, list) else per_layer[0]
        return (result, delta) if return_convergence_delta else result


def _tensors_per_layer(forward_func: Callable, layers: list, xs: tuple, args: tuple, to_input: bool) -> list[int]:
    """How many tensors each layer produces (or receives): one forward pass without a graph."""
    with torch.no_grad(), contextlib.ExitStack() as stack:
        records = [stack.enter_context(capture(layer, to_input)) for layer in layers]
        forward_func(*xs, *args)
    return [len(record.single()) for record in records]


# --------------------------------------------------------------------------- combined
class GuidedGradCam(GradientAttribution):
    r"""Guided Grad-CAM: guided backpropagation times the Grad-CAM map of ``layer``
    (with its ReLU), upsampled to each input's spatial size. Grad-CAM says *where*
    the class evidence is, guided backpropagation adds pixel-level detail. An input
    whose size the map cannot be interpolated to gets an empty tensor and a warning
    (as Captum).

    Selvaraju et al. (2017), *Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization*, https://arxiv.org/abs/1610.02391

    Example:
        >>> import torch
        >>> from attrkit import GuidedGradCam
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> GuidedGradCam(model, model.conv2).attribute(torch.rand(2, 1, 8, 8), target=1).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, device_ids=None):
        super().__init__(model)
        self.grad_cam = LayerGradCam(model, layer, device_ids)
        self.guided_backprop = GuidedBackprop(model)

    def attribute(self, inputs, target=None, additional_forward_args=None, interpolate_mode: str = "nearest",
                  attribute_to_layer_input: bool = False):
        """Guided backpropagation times the layer's Grad-CAM map upsampled to the input.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            interpolate_mode: how the layer's map is upsampled to the input size (a
                ``torch.nn.functional.interpolate`` mode).
            attribute_to_layer_input: attribute to the layer's input instead of its output.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import GuidedGradCam
            >>> from attrkit.testing import SmallCNN
            >>> model, x = SmallCNN(), torch.rand(2, 1, 8, 8)
            >>> GuidedGradCam(model, model.conv2).attribute(x, target=2).shape
            torch.Size([2, 1, 8, 8])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        cam = self.grad_cam.attribute(xs, target, additional_forward_args, attribute_to_layer_input,
                                      relu_attributions=True)
        if isinstance(cam, tuple):
            raise ValueError("GuidedGradCam needs a `layer` that produces one tensor; this one produces "
                             f"{len(cam)}.")
        guided = self.guided_backprop.attribute(xs, target, additional_forward_args)
        upsampled = tuple(_times_upsampled(g, cam, x, interpolate_mode) for g, x in zip(guided, xs))
        return plumbing.restore(upsampled, is_tuple)


def _times_upsampled(guided: Tensor, cam: Tensor, x: Tensor, mode: str) -> Tensor:
    try:
        return guided * LayerAttribution.interpolate(cam, tuple(x.shape[2:]), mode)
    except (ValueError, RuntimeError):
        warnings.warn(f"GuidedGradCam: the Grad-CAM map of shape {tuple(cam.shape)} cannot be interpolated to an "
                      f"input of shape {tuple(x.shape)}; that input gets an empty attribution.", stacklevel=3)
        return torch.empty(0, device=x.device)
