"""Text and language-model attribution with Captum's API: interpretable inputs (prompt templates, tokens,
image segments), :class:`LLMAttribution` (perturbation), :class:`LLMGradientAttribution` (gradients on the
embedding layer), :class:`RemoteLLMAttribution` (a served model), and their result with plots.

:data:`SCORES` names what :class:`LLMAttribution` attributes (``attr_target``); add entries to extend it.
All names are also importable from :mod:`attrkit`; :mod:`attrkit.llm.testing` has a word tokenizer and a
tiny causal language model for examples and tests.
"""
from .inputs import ImageMaskInput, InterpretableInput, TextTemplateInput, TextTokenInput
from .result import LLMAttributionResult, merge_subword_tokens, pretty_tokens
from ._model import SCORES, context_length, find_embedding_layer, logits_of
from .attribution import DEFAULT_GEN_ARGS, BaseLLMAttribution, LLMAttribution
from .gradient import LLMGradientAttribution
from .remote import RemoteLLMAttribution, RemoteLLMProvider

__all__ = [
    "InterpretableInput", "TextTemplateInput", "TextTokenInput", "ImageMaskInput",
    "LLMAttribution", "LLMGradientAttribution", "LLMAttributionResult", "RemoteLLMAttribution",
    "RemoteLLMProvider", "merge_subword_tokens", "SCORES",
]
