"""attrkit — attribution for PyTorch, small enough to read, with Captum's public API.

Swap ``from captum.attr import IntegratedGradients`` for
``from attrkit import IntegratedGradients``; everything else stays the same.
"""
from .base import Attribution, GradientAttribution, LayerAttribution, NeuronAttribution, PerturbationAttribution
from .gradient import GradientShap, InputBaselineXGradient, InputXGradient, IntegratedGradients, Saliency
from .noise_tunnel import NoiseTunnel

__version__ = "0.1.0"

__all__ = [
    "Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution", "NeuronAttribution",
    "Saliency", "InputXGradient", "IntegratedGradients", "InputBaselineXGradient", "GradientShap", "NoiseTunnel",
]
