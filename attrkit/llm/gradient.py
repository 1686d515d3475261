"""Gradient attribution for language models, on the embedding layer (:class:`LLMGradientAttribution`)."""
from __future__ import annotations

from copy import copy
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._plumbing import as_tuple, baseline_distribution, format_args
from ..attnlrp import AttnLRP
from ..base import Attribution
from ..gradient import GradientShap
from ..layer._base import LayerSpace
from ..layer.gradient import LayerGradientShap, LayerGradientXActivation
from ..layer.path import LayerIntegratedGradients
from ._model import answer_log_probs, attention_mask, find_embedding_layer, logits_of
from .attribution import BaseLLMAttribution
from .inputs import TextTokenInput
from .result import LLMAttributionResult, pretty_tokens


class LLMGradientAttribution(BaseLLMAttribution):
    """Gradient attribution for language models, on the embedding layer: for each target token, the
    wrapped layer method (:class:`~attrkit.LayerIntegratedGradients`,
    :class:`~attrkit.LayerGradientXActivation` or :class:`~attrkit.LayerGradientShap`, created with the
    model and its embedding layer) attributes that token's log-probability to the prompt's token
    embeddings, summed over the embedding dimension. ``seq_attr`` is the sum over target tokens.

    The baseline is the prompt with every token replaced by the :class:`~attrkit.TextTokenInput`'s
    ``baselines`` token (the default ``baselines`` of the wrapped method, zeros, means "all absent").
    attrkit additions: :meth:`for_model` finds the embedding layer (``get_input_embeddings()``);
    ``return_convergence_delta=True`` stores one completeness delta per target token in
    ``result.convergence_delta``; ``skip_tokens`` (ids or token strings) are removed from the target.

    attrkit addition: :class:`~attrkit.AttnLRP` (created with the model, ``AttnLRP(model)``) gives the
    token-by-token relevance map at the cost of one forward and one backward pass per target token. It
    explains each target token's *logit* (the paper's and its reference implementation's objective;
    log-softmax has no LRP rule), and the relevance is taken at the embedding layer's output
    (``get_input_embeddings()``, or ``layer=`` in ``attribute``) and summed over the embedding dimension;
    ``return_convergence_delta=True`` gives ``logit - sum(relevance)`` per target token, the relevance
    at the earlier target tokens' positions included (Achtibat et al. 2024, https://arxiv.org/abs/2402.05602).

    Departure (Lundberg & Lee 2017, https://arxiv.org/abs/1705.07874): :class:`~attrkit.LayerGradientShap`
    draws its random points between the baseline prompt's and the prompt's *embeddings* (plus ``stdevs``
    noise there), as GradientSHAP at the embedding layer means to. Captum interpolates the 0/1 token
    mask instead, and every point strictly between 0 and 1 is the all-baseline prompt, so its result
    ignores the samples (the gradient at the baseline prompt times the embedding difference). Here the
    mean over many samples tends to Integrated Gradients on the embeddings.

    Example:
        >>> from attrkit import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput
        >>> from attrkit.llm.testing import TinyCausalLM, WordTokenizer
        >>> tok = WordTokenizer("the cat sat on a mat".split())
        >>> model = TinyCausalLM(len(tok))
        >>> lig = LLMGradientAttribution(LayerIntegratedGradients(model, model.embedding), tok)
        >>> inp = TextTokenInput("the cat sat on", tok, baselines="<pad>", skip_tokens=["<s>"])
        >>> res = lig.attribute(inp, target="a mat", n_steps=16, return_convergence_delta=True)
        >>> res.token_attr.shape, bool(res.convergence_delta.abs().max() < 1e-3)
        (torch.Size([2, 4]), True)
    """

    SUPPORTED_METHODS = (LayerGradientShap, LayerGradientXActivation, LayerIntegratedGradients, AttnLRP)
    SUPPORTED_INPUTS = (TextTokenInput,)

    def __init__(self, attr_method: Attribution, tokenizer: Any) -> None:
        super().__init__(attr_method, tokenizer)
        self.attr_method = copy(attr_method)

    @classmethod
    def for_model(cls, model: nn.Module, tokenizer: Any, method: type = LayerIntegratedGradients,
                  layer: nn.Module | None = None, **method_kwargs: Any) -> "LLMGradientAttribution":
        """``cls(method(model, layer or the model's embedding layer, **method_kwargs), tokenizer)``; for
        :class:`~attrkit.AttnLRP`, ``cls(AttnLRP(model, **method_kwargs), tokenizer)`` with relevance at
        ``layer`` (default: the embedding layer)."""
        if issubclass(method, AttnLRP):
            made = cls(method(model, **method_kwargs), tokenizer)
            made.lrp_layer = layer if layer is not None else made.lrp_layer
            return made
        return cls(method(model, layer if layer is not None else find_embedding_layer(model), **method_kwargs),
                   tokenizer)

    @property
    def lrp_layer(self) -> nn.Module:
        """Where :class:`~attrkit.AttnLRP`'s relevance is read: the embedding layer unless set."""
        layer = getattr(self, "_lrp_layer", None)
        return layer if layer is not None else find_embedding_layer(self.model)

    @lrp_layer.setter
    def lrp_layer(self, layer: nn.Module) -> None:
        self._lrp_layer = layer

    def _logit_func(self, perturbed_tensor: Tensor, inp: TextTokenInput, target_tokens: Tensor,
                    cur_target_idx: int) -> Tensor:
        """The logit of target token ``cur`` after the perturbed prompt and the target tokens before it."""
        ids = self._format_model_input(inp.to_model_input(perturbed_tensor))["input_ids"]
        answer = target_tokens[:cur_target_idx].to(ids.device)
        full = torch.cat([ids, answer.unsqueeze(0).expand(ids.shape[0], -1)], dim=1)
        extra = {"use_cache": False} if self._caller.accepts("use_cache") else {}
        logits = logits_of(self._caller({"input_ids": full, "attention_mask": attention_mask({}, full)}, **extra))
        return logits[:, -1, target_tokens[cur_target_idx]]

    def _forward_func(self, perturbed_tensor: Tensor, inp: TextTokenInput, target_tokens: Tensor,
                      cur_target_idx: int) -> Tensor:
        """``log p(target token cur | perturbed prompt, the target tokens before it)``, one per row."""
        ids = self._format_model_input(inp.to_model_input(perturbed_tensor))["input_ids"]
        answer = target_tokens[:cur_target_idx + 1]
        return answer_log_probs(self._caller, {"input_ids": ids}, answer, forward_in_tokens=False)[:, -1]

    def _attribute_one(self, forward: Callable, x: Tensor, kwargs: dict) -> Any:
        method = copy(self.attr_method)
        method.forward_func = forward
        if isinstance(method, LayerGradientShap):
            return _gradient_shap_in_embeddings(method, x, **kwargs)
        if isinstance(method, AttnLRP):
            return method.attribute(x, **{"layer": self.lrp_layer, **kwargs})
        return method.attribute(x, **kwargs)

    def attribute(self, inp: TextTokenInput, target: str | Tensor | list | None = None,
                  gen_args: dict | None = None, skip_tokens: list[int] | list[str] | None = None,
                  **kwargs: Any) -> LLMAttributionResult:
        """Attribute each target token's log-probability to the tokens of ``inp``.

        Args:
            inp: the prompt, a :class:`~attrkit.TextTokenInput` (its ``baselines`` token makes the baseline
                prompt; its ``skip_tokens`` are not attributed).
            target: the answer, a string or 1-D token ids; None generates it with ``gen_args``.
            gen_args: arguments of ``model.generate`` when ``target`` is None (default: greedy, 25 tokens).
            skip_tokens: token ids or strings left out of the target (e.g. a BOS token).
            **kwargs: passed to the wrapped method's ``attribute`` (``n_steps``, ``baselines``,
                ``internal_batch_size``, ``return_convergence_delta``...).

        Returns:
            An :class:`~attrkit.LLMAttributionResult`: ``token_attr`` (one row per target token, one column
            per attributed prompt token), ``seq_attr`` (its sum over the target tokens), the input and output
            tokens, and ``convergence_delta`` (one per target token, with ``return_convergence_delta=True``;
            else None).

        Example:
            >>> import torch
            >>> from attrkit import LayerGradientXActivation, LLMGradientAttribution, TextTokenInput
            >>> from attrkit.llm.testing import TinyCausalLM, WordTokenizer
            >>> tok = WordTokenizer("the cat sat on a mat".split())
            >>> model = TinyCausalLM(len(tok))
            >>> gxa = LLMGradientAttribution(LayerGradientXActivation(model, model.embedding), tok)
            >>> res = gxa.attribute(TextTokenInput("the cat sat on", tok, skip_tokens=["<s>"]), target="a mat")
            >>> res.input_tokens, res.output_tokens, res.token_attr.shape
            (['the', 'cat', 'sat', 'on'], ['a', 'mat'], torch.Size([2, 4]))
            >>> torch.allclose(res.token_attr.sum(0), res.seq_attr)
            True
        """
        target_tokens = self._get_target_tokens(inp, target, gen_args, skip_tokens)
        self._check_context(inp.inp_tensor.shape[1], len(target_tokens))
        x = inp.to_tensor().to(self.device)
        rows, deltas = [], []
        objective = self._logit_func if isinstance(self.attr_method, AttnLRP) else self._forward_func
        for i in range(len(target_tokens)):
            forward = partial(objective, inp=inp, target_tokens=target_tokens, cur_target_idx=i)
            out = self._attribute_one(forward, x, kwargs)
            if isinstance(out, tuple):
                out, delta = out
                deltas.append(delta.detach().reshape(-1))
            attr = out.detach()
            rows.append((attr[:, :attr.shape[1] - i] if i else attr).sum(-1))
        attr = torch.cat(rows, dim=0)
        if inp.itp_mask is not None:
            attr = attr[:, inp.itp_mask[0].to(attr.device)]
        result = LLMAttributionResult(seq_attr=attr.sum(0), token_attr=attr, input_tokens=list(inp.values),
                                      output_tokens=pretty_tokens(target_tokens, self.tokenizer), inp=inp)
        result.convergence_delta = torch.cat(deltas) if deltas else None
        return result


def _gradient_shap_in_embeddings(method: LayerGradientShap, inputs: Tensor, baselines: Any, n_samples: int = 5,
                                 stdevs: float = 0.0, target: Any = None, additional_forward_args: Any = None,
                                 return_convergence_delta: bool = False, attribute_to_layer_input: bool = False):
    """:class:`~attrkit.GradientShap` on the model re-rooted at the method's layer: the random points lie
    between the layer's values at the baseline prompts and at the prompt (the arguments are
    :meth:`LayerGradientShap.attribute`'s)."""
    xs, _ = as_tuple(inputs)
    space = LayerSpace(method.forward_func, method._layers(), xs, format_args(additional_forward_args),
                       attribute_to_layer_input)
    at_baselines = space.values_at(baseline_distribution(baselines, xs))
    shap = GradientShap(space.function, method.multiplies_by_inputs)
    out = shap.attribute(space.inputs, at_baselines, n_samples=n_samples, stdevs=stdevs, target=target,
                         additional_forward_args=space.model_args, return_convergence_delta=return_convergence_delta)
    attrs, delta = out if return_convergence_delta else (out, None)
    result = space.split(as_tuple(attrs)[0], several=isinstance(method.layer, list))
    return (result, delta) if return_convergence_delta else result
