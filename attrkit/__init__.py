"""attrkit — attribution for PyTorch, small enough to read, with Captum's public API.

Swap ``from captum.attr import IntegratedGradients`` for
``from attrkit import IntegratedGradients``; everything else stays the same.
"""
from .base import Attribution, GradientAttribution, LayerAttribution, NeuronAttribution, PerturbationAttribution
from .gradient import GradientShap, InputBaselineXGradient, InputXGradient, IntegratedGradients, Saliency
from .noise_tunnel import NoiseTunnel
from .deeplift import DeepLift, DeepLiftShap
from .backprop import Deconvolution, GuidedBackprop
from .lrp import LRP, Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule, PropagationRule
from .perturbation import FeatureAblation, FeaturePermutation, Occlusion
from .lime import KernelShap, Lime, LimeBase
from .shapley import ShapleyValues, ShapleyValueSampling
from .layer import (GuidedGradCam, InternalInfluence, LayerActivation, LayerConductance, LayerDeepLift,
                    LayerDeepLiftShap, LayerFeatureAblation, LayerFeaturePermutation, LayerGradCam,
                    LayerGradientShap, LayerGradientXActivation, LayerIntegratedGradients, LayerLRP)
from .neuron import (NeuronConductance, NeuronDeconvolution, NeuronDeepLift, NeuronDeepLiftShap,
                     NeuronFeatureAblation, NeuronGradient, NeuronGradientShap, NeuronGuidedBackprop,
                     NeuronIntegratedGradients)
from .dataset import (ClassSummarizer, CommonStats, Count, DataLoaderAttribution, Max, Mean, Min, MSE, StatValue,
                      StdDev, Sum, Summarizer, SummarizerSingleTensor, Var, attribute_dataset)
from .text import (InterpretableEmbeddingBase, ProductBaselines, TokenReferenceBase,
                   configure_interpretable_embedding_layer, remove_interpretable_embedding_layer)
from .llm import (ImageMaskInput, InterpretableInput, LLMAttribution, LLMAttributionResult, LLMGradientAttribution,
                  RemoteLLMAttribution, RemoteLLMProvider, TextTemplateInput, TextTokenInput, merge_subword_tokens)
from .layer import ModelInputWrapper
from .shapley import get_exp_kernel_similarity_function

__version__ = "0.1.0"

__all__ = [
    "Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution", "NeuronAttribution",
    "Saliency", "InputXGradient", "IntegratedGradients", "InputBaselineXGradient", "GradientShap", "NoiseTunnel",
    "DeepLift", "DeepLiftShap", "GuidedBackprop", "Deconvolution", "LRP", "LayerLRP",
    "PropagationRule", "EpsilonRule", "GammaRule", "Alpha1_Beta0_Rule", "IdentityRule",
    "FeatureAblation", "Occlusion", "FeaturePermutation", "ShapleyValueSampling", "ShapleyValues", "Lime",
    "KernelShap", "LimeBase",
    "LayerActivation", "LayerGradientXActivation", "LayerConductance", "InternalInfluence", "LayerGradCam",
    "LayerIntegratedGradients", "LayerGradientShap", "GuidedGradCam",
    "LayerDeepLift", "LayerDeepLiftShap", "LayerFeatureAblation", "LayerFeaturePermutation",
    "NeuronGradient", "NeuronIntegratedGradients", "NeuronConductance", "NeuronGradientShap",
    "NeuronDeepLift", "NeuronDeepLiftShap", "NeuronGuidedBackprop", "NeuronDeconvolution", "NeuronFeatureAblation",
    "DataLoaderAttribution", "Summarizer", "SummarizerSingleTensor", "ClassSummarizer", "CommonStats",
    "Mean", "Var", "StdDev", "Min", "Max", "Sum", "MSE", "Count", "attribute_dataset",
    "TokenReferenceBase", "InterpretableEmbeddingBase", "configure_interpretable_embedding_layer",
    "remove_interpretable_embedding_layer", "ProductBaselines",
    "InterpretableInput", "TextTemplateInput", "TextTokenInput", "ImageMaskInput", "LLMAttribution",
    "LLMGradientAttribution", "LLMAttributionResult", "RemoteLLMAttribution", "RemoteLLMProvider",
    "merge_subword_tokens",
    "ModelInputWrapper", "get_exp_kernel_similarity_function",
]

from .attention import AttentionRollout, GradientWeightedAttention, vit_token_grid  # noqa: E402

__all__ += ["AttentionRollout", "GradientWeightedAttention", "vit_token_grid"]

from .attnlrp import AttnLRP  # noqa: E402  (issue 25: LRP through transformers)
__all__ += ["AttnLRP"]
