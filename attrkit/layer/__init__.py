"""Layer methods: the primary estimators re-rooted at a layer's activations, one module per family.

* :mod:`attrkit.layer.gradient` — :class:`LayerActivation`, :class:`LayerGradientXActivation`,
  :class:`LayerGradCam`, :class:`LayerGradientShap`, :class:`GuidedGradCam`;
* :mod:`attrkit.layer.path` — :class:`InternalInfluence`, :class:`LayerConductance`,
  :class:`LayerIntegratedGradients`;
* :mod:`attrkit.layer.deeplift` — :class:`LayerDeepLift`, :class:`LayerDeepLiftShap`;
* :mod:`attrkit.layer.perturbation` — :class:`LayerFeatureAblation`, :class:`LayerFeaturePermutation`;
* :mod:`attrkit.layer.lrp` — :class:`LayerLRP`;
* :mod:`attrkit.layer.input_wrapper` — :class:`ModelInputWrapper`, the model's inputs as layers.

What they share beyond :class:`attrkit.LayerAttribution` (the layer checks and the delta in
layer space) is in :mod:`attrkit.layer._base`; the one gradient with respect to a layer is
:func:`attrkit._hooks.layer_gradients`. Every class is also importable from ``attrkit``.
"""
from .deeplift import LayerDeepLift, LayerDeepLiftShap
from .gradient import GuidedGradCam, LayerActivation, LayerGradCam, LayerGradientShap, LayerGradientXActivation
from .input_wrapper import ModelInputWrapper
from .lrp import LayerLRP
from .path import InternalInfluence, LayerConductance, LayerIntegratedGradients
from .perturbation import LayerFeatureAblation, LayerFeaturePermutation

__all__ = [
    "LayerActivation", "LayerGradientXActivation", "LayerGradCam", "InternalInfluence", "LayerConductance",
    "LayerIntegratedGradients", "LayerGradientShap", "GuidedGradCam",
    "LayerDeepLift", "LayerDeepLiftShap", "LayerFeatureAblation", "LayerFeaturePermutation", "LayerLRP",
    "ModelInputWrapper",
]
