"""Attribution for language models: which parts of the prompt make the model produce a given answer?

The objective is a score of the target answer given the prompt — by default its log-probability — for
the whole answer and for each of its tokens (:mod:`attrkit.llm._model` computes it, in one place).
:class:`LLMAttribution` wraps a perturbation method and switches prompt segments (an
:class:`~attrkit.InterpretableInput`) off and on; :class:`~attrkit.LLMGradientAttribution`
(:mod:`attrkit.llm.gradient`) wraps a layer gradient method on the embedding layer.

Works with Hugging Face ``transformers`` causal LMs (``.logits`` is taken from the ``ModelOutput``, an
attention mask is passed, the key/value cache is used for token-by-token scoring) and with a plain
``nn.Module`` that maps token ids ``(batch, length)`` to logits ``(batch, length, vocabulary)``.
Names, arguments and results follow Captum 0.9 (``captum.attr.LLMAttribution`` ...); bad input raises
``ValueError``/``TypeError`` naming the argument.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from copy import copy
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..base import Attribution
from ..perturbation import FeatureAblation, FeaturePermutation, Occlusion
from ..lime import KernelShap, Lime
from ..shapley import ShapleyValues, ShapleyValueSampling
from ._batched import batched_log_probs
from ._model import (ModelCaller, answer_log_probs, apply_score, context_length, greedy_decode,
                     score_function)
from .inputs import InterpretableInput, token_ids
from .result import LLMAttributionResult, pretty_tokens

DEFAULT_GEN_ARGS: dict[str, Any] = {"max_new_tokens": 25, "do_sample": False, "temperature": None, "top_p": None}


# --------------------------------------------------------------------------- shared by all LLM classes
class BaseLLMAttribution(Attribution):
    """What the LLM attribution classes share: the model behind the wrapped method, the tokenizer, the
    target tokens (given, or generated), and the formatting of model inputs."""

    SUPPORTED_METHODS: tuple[type, ...] = ()
    UNSUPPORTED_METHODS: tuple[type, ...] = ()
    SUPPORTED_INPUTS: tuple[type, ...] = (InterpretableInput,)

    def __init__(self, attr_method: Attribution, tokenizer: Any) -> None:
        self._check_method(attr_method)
        super().__init__(attr_method.forward_func)
        self.model = self.forward_func
        self.tokenizer = tokenizer
        self.device = self._device_of(self.model)
        self._caller = ModelCaller(self.model) if isinstance(self.model, nn.Module) else None

    def _check_method(self, attr_method: Any) -> None:
        name = type(attr_method).__name__
        if not isinstance(attr_method, self.SUPPORTED_METHODS) or isinstance(attr_method, self.UNSUPPORTED_METHODS):
            names = ", ".join(c.__name__ for c in self.SUPPORTED_METHODS)
            raise TypeError(f"`attr_method` must be one of {names} for {type(self).__name__}, got {name}.")
        if not isinstance(getattr(attr_method, "forward_func", None), nn.Module):
            got = type(getattr(attr_method, "forward_func", None)).__name__
            raise TypeError(f"`attr_method` must be created with the model itself (an nn.Module with forward and "
                            f"generate), e.g. {name}(model); got a {got}.")

    @staticmethod
    def _device_of(model: Any) -> torch.device:
        device = getattr(model, "device", None)
        if isinstance(device, (torch.device, str)):
            return torch.device(device)
        params = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        return params.device if params is not None else torch.device("cpu")

    def _check_input(self, inp: Any) -> None:
        if not isinstance(inp, self.SUPPORTED_INPUTS):
            names = ", ".join(c.__name__ for c in self.SUPPORTED_INPUTS)
            raise TypeError(f"`inp` must be one of {names} for {type(self).__name__}, got {type(inp).__name__}.")

    def _format_model_input(self, model_input: str | Tensor | Mapping) -> dict[str, Any]:
        """A dict of model inputs (``input_ids`` first) on the model's device, from a prompt string, token
        ids, or a processor's output."""
        if isinstance(model_input, str):
            model_input = torch.as_tensor(self.tokenizer.encode(model_input, return_tensors="pt")).reshape(1, -1)
        if isinstance(model_input, Tensor):
            return {"input_ids": model_input.to(self.device)}
        if not isinstance(model_input, Mapping) or "input_ids" not in model_input:
            raise TypeError("the input's to_model_input() must give a prompt string, token ids, or a mapping with "
                            f"'input_ids'; got {type(model_input).__name__}.")
        return {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in model_input.items()}

    def _check_context(self, n_prompt: int, n_target: int, what: str = "the target") -> None:
        limit = context_length(self.model) if isinstance(self.model, nn.Module) else None
        if limit is not None and n_prompt + n_target > limit:
            name = "gen_args" if what != "the target" else "inp"
            raise ValueError(f"`{name}`: the prompt has {n_prompt} tokens and {what} {n_target}; together they are "
                             f"longer than the model's context of {limit} tokens (max_position_embeddings).")

    def _get_target_tokens(self, inp: InterpretableInput, target: str | Tensor | list | None = None,
                           gen_args: dict | None = None, skip_tokens: list | None = None) -> Tensor:
        """The target token ids (1-D, on the model's device): encoded from a string (no special tokens), as
        given, or generated from the unperturbed prompt with ``gen_args``; ``skip_tokens`` removed."""
        self._check_input(inp)
        if target is None:
            ids = self._generate(self._format_model_input(inp.to_model_input()), gen_args)
        elif gen_args is not None:
            raise ValueError("`gen_args` is only used to generate the target; it must be None when `target` is given.")
        else:
            ids = _target_ids(target, self.tokenizer)
        if skip_tokens:
            skip = torch.tensor(token_ids(skip_tokens, self.tokenizer, "skip_tokens"), device=ids.device)
            ids = ids[~torch.isin(ids, skip)]
            if ids.numel() == 0:
                raise ValueError("`skip_tokens` removes every token of the target; nothing is left to attribute.")
        return ids.to(self.device, torch.long)

    def _generate(self, model_inp: dict, gen_args: dict | None) -> Tensor:
        gen_args = dict(gen_args or DEFAULT_GEN_ARGS)
        n_prompt = model_inp["input_ids"].shape[1]
        max_new = gen_args.get("max_new_tokens")
        if max_new is None and isinstance(gen_args.get("max_length"), int):
            max_new = gen_args["max_length"] - n_prompt
        self._check_context(n_prompt, max_new if isinstance(max_new, int) else 0, "max_new_tokens")
        generate = getattr(self.model, "generate", None)
        if not callable(generate):
            return self._greedy(model_inp, gen_args)
        if gen_args.get("pad_token_id") is None:  # no pad token: the end-of-sequence one, else none (as Captum)
            pad = getattr(self.tokenizer, "pad_token_id", None)
            pad = getattr(self.tokenizer, "eos_token_id", None) if pad is None else pad
            if pad is not None:
                gen_args["pad_token_id"] = pad
        out = generate(**model_inp, **gen_args)
        return torch.as_tensor(out)[0, n_prompt:]

    def _greedy(self, model_inp: dict, gen_args: dict) -> Tensor:
        """Greedy decoding for a model without ``.generate`` (attrkit addition; Captum needs ``generate``)."""
        if gen_args.get("do_sample"):
            raise ValueError("`gen_args`: do_sample=True needs a model with .generate(); this one decodes greedily.")
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return greedy_decode(self._caller, model_inp, int(gen_args.get("max_new_tokens", 25)), eos)

    def attribute_future(self) -> Callable:
        raise NotImplementedError(f"attribute_future is not implemented for {type(self).__name__}.")


def _target_ids(target: Any, tokenizer: Any) -> Tensor:
    """A given target as 1-D token ids: a string (encoded without special tokens) or ids (a 1-D tensor, a
    ``(1, n)`` one, or a list); a batch of targets, strings in a list, and negative ids are refused."""
    if isinstance(target, str):
        ids = torch.as_tensor(tokenizer.encode(target, add_special_tokens=False), dtype=torch.long).reshape(-1)
        if ids.numel() == 0:
            raise ValueError(f"`target` {target!r} tokenizes to no tokens; give a non-empty answer.")
        return ids
    if isinstance(target, (list, tuple)) and any(isinstance(t, str) for t in target):
        raise TypeError(f"`target` is a list of strings ({list(target)!r}); give the answer as one string, or as "
                        "token ids. One attribution explains one answer.")
    if not isinstance(target, (Tensor, list, tuple)):
        raise TypeError(f"`target` must be a string, token ids (a 1-D tensor) or None, got {type(target).__name__}.")
    if isinstance(target, (list, tuple)) and not all(isinstance(t, (numbers.Integral, Tensor)) for t in target):
        raise TypeError(f"`target` token ids must be integers, got {list(target)!r}.")
    ids = torch.as_tensor(target)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise TypeError(f"`target` token ids must be integers, got {ids.dtype}.")
    if ids.dim() > 2 or (ids.dim() == 2 and ids.shape[0] != 1):
        raise ValueError(f"`target` must be one answer, 1-D token ids (or shape (1, n)); got shape {tuple(ids.shape)}"
                         " — a batch of targets is not supported: attribute each answer on its own.")
    ids = ids.reshape(-1)
    if ids.numel() == 0:
        raise ValueError("`target` holds no token ids.")
    if int(ids.min()) < 0:
        raise ValueError(f"`target` token ids must be non-negative, got {int(ids.min())}.")
    return ids


# --------------------------------------------------------------------------- perturbation methods
class LLMAttribution(BaseLLMAttribution):
    """Perturbation attribution for language models: how much does switching off each prompt feature
    change the log-probability (or probability) of the target answer?

    Wraps :class:`~attrkit.FeatureAblation`, :class:`~attrkit.ShapleyValueSampling`,
    :class:`~attrkit.ShapleyValues`, :class:`~attrkit.Lime` or :class:`~attrkit.KernelShap`, created
    with the model. The first three also give one row per target token (``token_attr``); Lime and
    KernelShap give the sequence attribution only. ``attr_target`` names the score attributed:
    ``"log_prob"``, ``"prob"``, another name in :data:`attrkit.llm.SCORES`, or a function of
    log-probabilities (applied to the answer's and to each token's, e.g. ``lambda lp: -lp``).

    The answer's score is computed token by token as in generation (``forward_in_tokens=True``, with the
    key/value cache of a Hugging Face model when ``use_cached_outputs``), or in one pass over prompt and
    answer (``forward_in_tokens=False``). attrkit additions: ``target`` may also be a list of token ids; a
    model without ``.generate`` decodes greedily; ``output_probs`` of the result holds the target tokens'
    probabilities under the unperturbed prompt (Captum leaves it None); any :class:`InterpretableInput`
    subclass is accepted; ``attr_target`` may be a function. ``skip_tokens`` (ids or token strings) are
    removed from the target, as Captum 0.8 did. Departure: the cached token-by-token scores equal an
    uncached forward pass (Captum 0.9's cached path, under transformers 5, drifts from the second answer
    token on — about 1e-2 in log-probability on a tiny Llama), and the cache is used only when the model
    input is just ``input_ids`` and ``attention_mask`` (other inputs go to every full pass).

    attrkit addition (``batch_prompts=True``, the default): when the input gives plain token ids, the
    perturbed prompts of one forward call of the wrapped method are scored together, in one pass over prompt
    and answer, right-padded, reusing the key/value cache of the prefix they share with the unperturbed
    prompt (:mod:`attrkit.llm._batched`). The scores are the token-by-token ones up to float rounding
    (tested against the uncached path); ``use_cached_outputs`` and ``forward_in_tokens`` then change nothing.

    Example:
        >>> from attrkit import FeatureAblation, LLMAttribution, TextTemplateInput
        >>> from attrkit.llm.testing import TinyCausalLM, WordTokenizer
        >>> tok = WordTokenizer("the cat sat on a mat".split())
        >>> model = TinyCausalLM(len(tok))
        >>> llm_attr = LLMAttribution(FeatureAblation(model), tok)
        >>> inp = TextTemplateInput("{} {} sat on", values=["the", "cat"])
        >>> res = llm_attr.attribute(inp, target="the mat")
        >>> res.seq_attr.shape, res.token_attr.shape, res.output_tokens
        (torch.Size([2]), torch.Size([2, 2]), ['the', 'mat'])
    """

    SUPPORTED_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues, Lime, KernelShap)
    UNSUPPORTED_METHODS = (Occlusion, FeaturePermutation)  # subclasses of FeatureAblation that need a batch/window
    SUPPORTED_PER_TOKEN_ATTR_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues)

    def __init__(self, attr_method: Attribution, tokenizer: Any,
                 attr_target: str | Callable[[Tensor], Tensor] = "log_prob") -> None:
        super().__init__(attr_method, tokenizer)
        self.score = score_function(attr_target)
        self.attr_target = attr_target
        self.attr_method = copy(attr_method)
        self.include_per_token_attr = isinstance(attr_method, self.SUPPORTED_PER_TOKEN_ATTR_METHODS)

    # the objective --------------------------------------------------------------------------------
    def _log_probs(self, model_input: Any, target_tokens: Tensor, use_cached_outputs: bool,
                   forward_in_tokens: bool) -> Tensor:
        """``log p(target token i | prompt, target tokens before i)`` for every i, shape ``(n_target,)``."""
        model_inp = self._format_model_input(model_input)
        self._check_context(model_inp["input_ids"].shape[1], len(target_tokens))
        return answer_log_probs(self._caller, model_inp, target_tokens, forward_in_tokens, use_cached_outputs)[0]

    def _prompt_text(self, model_input: Any) -> str:
        return self.tokenizer.decode(self._format_model_input(model_input)["input_ids"][0])

    def _forward_func(self, perturbed_tensor: Tensor | None, inp: InterpretableInput, target_tokens: Tensor,
                      use_cached_outputs: bool = False, _inspect_forward: Callable | None = None,
                      forward_in_tokens: bool = True, _unperturbed: list | None = None,
                      _reference: Tensor | None = None) -> Tensor:
        """The wrapped method's forward: ``(1 + n_target,)`` scores (the whole answer, then each token) for
        per-token methods, one score otherwise. The log-probabilities under the unperturbed prompt are
        appended to ``_unperturbed`` (a list of this call's own). With ``_reference`` (the unperturbed
        prompt's token ids) every row of ``perturbed_tensor`` is a prompt, all scored together
        (:mod:`attrkit.llm._batched`), and the scores have one row per prompt."""
        if _reference is not None:
            return self._batched_forward(perturbed_tensor, inp, target_tokens, _inspect_forward, _unperturbed,
                                         _reference)
        model_input = inp.to_model_input(perturbed_tensor)
        log_probs = self._log_probs(model_input, target_tokens, use_cached_outputs, forward_in_tokens).detach()
        if _unperturbed is not None and (perturbed_tensor is None or bool((perturbed_tensor == 1).all())):
            _unperturbed.append(log_probs)
        rows = torch.cat([log_probs.sum().reshape(1), log_probs]) if self.include_per_token_attr else log_probs.sum()
        if _inspect_forward is not None:
            prompt = self._prompt_text(model_input)
            _inspect_forward(prompt, self.tokenizer.decode(target_tokens), rows.exp().reshape(-1).tolist())
        return apply_score(self.score, rows)

    def _batched_forward(self, perturbed_tensor: Tensor | None, inp: InterpretableInput, target_tokens: Tensor,
                         _inspect_forward: Callable | None, _unperturbed: list | None, reference: Tensor) -> Tensor:
        """:meth:`_forward_func` for a batch of perturbations: ``(k, 1 + n_target)`` or ``(k,)`` scores."""
        masks = [None] if perturbed_tensor is None else list(perturbed_tensor.split(1))
        model_inputs = [inp.to_model_input(m) for m in masks]
        prompts = [self._format_model_input(m)["input_ids"] for m in model_inputs]
        for ids in prompts:
            self._check_context(ids.shape[1], len(target_tokens))
        pad = getattr(self.tokenizer, "pad_token_id", None)
        pad = getattr(self.tokenizer, "eos_token_id", None) if pad is None else pad
        log_probs = batched_log_probs(self._caller, [ids[0] for ids in prompts], target_tokens, reference,
                                      int(pad) if pad is not None else 0).detach()
        for mask, row in zip(masks, log_probs):
            if _unperturbed is not None and (mask is None or bool((mask == 1).all())):
                _unperturbed.append(row)
        rows = torch.cat([log_probs.sum(1, keepdim=True), log_probs], 1) if self.include_per_token_attr \
            else log_probs.sum(1)
        if _inspect_forward is not None:
            for model_input, row in zip(model_inputs, rows):
                _inspect_forward(self._prompt_text(model_input), self.tokenizer.decode(target_tokens),
                                 row.exp().reshape(-1).tolist())
        return apply_score(self.score, rows)

    def _batchable_reference(self, inp: InterpretableInput) -> Tensor | None:
        """The unperturbed prompt's token ids when perturbed prompts can be scored in batches: the model is an
        ``nn.Module`` and the input gives plain token ids (no image features, no attention mask of its own),
        and no subclass scores prompts its own way (:class:`~attrkit.RemoteLLMAttribution`)."""
        if self._caller is None or type(self)._log_probs is not LLMAttribution._log_probs:
            return None
        model_inp = self._format_model_input(inp.to_model_input())
        if set(model_inp) != {"input_ids"} or model_inp["input_ids"].shape[0] != 1:
            return None
        return model_inp["input_ids"][0]

    # the public call -----------------------------------------------------------------------------
    def attribute(self, inp: InterpretableInput, target: str | Tensor | list | None = None, num_trials: int = 1,
                  gen_args: dict | None = None, use_cached_outputs: bool = True,
                  _inspect_forward: Callable | None = None, forward_in_tokens: bool = True,
                  skip_tokens: list[int] | list[str] | None = None, batch_prompts: bool = True,
                  **kwargs: Any) -> LLMAttributionResult:
        """Attribute the target answer's score to the features of ``inp``.

        Args:
            inp: the prompt (an :class:`~attrkit.InterpretableInput`).
            target: the answer, a string or 1-D token ids; None generates it with ``gen_args``.
            num_trials: average over this many runs (for sampling methods and random baselines).
            gen_args: arguments of ``model.generate`` when ``target`` is None (default: greedy, 25 tokens).
            use_cached_outputs: score token by token with the model's key/value cache.
            forward_in_tokens: token by token (True) or prompt and answer in one pass (False).
            skip_tokens: token ids or strings left out of the target (e.g. a BOS token).
            batch_prompts: score the perturbed prompts of a forward pass together, in one pass over prompt and
                answer that reuses the unperturbed prompt's shared prefix (attrkit addition; see
                :mod:`attrkit.llm._batched`); ``use_cached_outputs`` and ``forward_in_tokens`` then change
                nothing but float rounding. Used when the input gives plain token ids to an ``nn.Module``.
            **kwargs: passed to the wrapped method's ``attribute`` (``n_samples``, ``feature_mask``...).

        Returns:
            An :class:`~attrkit.LLMAttributionResult`: ``seq_attr`` (one number per feature of ``inp``, for
            the whole answer), ``token_attr`` (one row per target token; None for Lime and KernelShap),
            ``input_tokens``, ``output_tokens`` and ``output_probs`` (the target tokens' probabilities
            under the unperturbed prompt).

        Example:
            >>> import torch
            >>> from attrkit import LLMAttribution, ShapleyValues, TextTemplateInput
            >>> from attrkit.llm.testing import TinyCausalLM, WordTokenizer
            >>> tok = WordTokenizer("the cat sat on a mat".split())
            >>> llm_attr = LLMAttribution(ShapleyValues(TinyCausalLM(len(tok))), tok)
            >>> inp = TextTemplateInput("{} {} sat on", values=["the", "cat"])
            >>> res = llm_attr.attribute(inp, target="a mat")
            >>> res.input_tokens, res.output_tokens, res.token_attr.shape
            (['the', 'cat'], ['a', 'mat'], torch.Size([2, 2]))
            >>> torch.allclose(res.token_attr.sum(0), res.seq_attr)  # the answer's log-prob sums its tokens'
            True
        """
        if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
            raise ValueError(f"`num_trials` must be a positive int, got {num_trials!r}.")
        target_tokens = self._get_target_tokens(inp, target, gen_args, skip_tokens)
        n_rows = 1 + len(target_tokens) if self.include_per_token_attr else 1
        unperturbed: list[Tensor] = []  # this call's own: calls on one object may interleave
        reference = self._batchable_reference(inp) if batch_prompts else None
        forward = partial(self._forward_func, inp=inp, target_tokens=target_tokens,
                          use_cached_outputs=use_cached_outputs, forward_in_tokens=forward_in_tokens,
                          _reference=reference)
        method = copy(self.attr_method)
        method.forward_func = partial(forward, _inspect_forward=_inspect_forward, _unperturbed=unperturbed)
        total = torch.zeros(n_rows, inp.n_itp_features, device=self.device)
        for _ in range(num_trials):
            attr = method.attribute(inp.to_tensor().to(self.device), **kwargs)
            total += attr.reshape(n_rows, inp.n_itp_features).to(total)
        attr = inp.format_attr(total / num_trials)
        if not unperturbed:
            with torch.no_grad():
                forward(None, _unperturbed=unperturbed)
        return LLMAttributionResult(
            seq_attr=attr[0], token_attr=attr[1:] if self.include_per_token_attr else None,
            input_tokens=list(inp.values), output_tokens=pretty_tokens(target_tokens, self.tokenizer),
            output_probs=unperturbed[0].reshape(-1).exp(), inp=inp)
