"""Attribution for language models: which parts of the prompt make the model produce a given answer?

The objective is the log-probability (or probability) of the target answer given the prompt, for the
whole answer and for each of its tokens. :class:`LLMAttribution` wraps a perturbation method and switches
prompt segments (an :class:`~attrkit.InterpretableInput`) off and on; :class:`LLMGradientAttribution` wraps
a layer gradient method on the embedding layer and integrates from the baseline tokens' embeddings.

Works with Hugging Face ``transformers`` causal LMs (``.logits`` is taken from the ``ModelOutput``, an
attention mask is passed, the key/value cache is used for token-by-token scoring) and with a plain
``nn.Module`` that maps token ids ``(batch, length)`` to logits ``(batch, length, vocabulary)``.
Names, arguments and results follow Captum 0.9 (``captum.attr.LLMAttribution`` ...); bad input raises
``ValueError``/``TypeError`` naming the argument.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from copy import copy
from functools import partial
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .. import (Attribution, FeatureAblation, KernelShap, LayerGradientShap, LayerGradientXActivation,
                LayerIntegratedGradients, Lime, ShapleyValues, ShapleyValueSampling)
from .inputs import InterpretableInput, TextTokenInput
from .result import LLMAttributionResult, pretty_tokens

DEFAULT_GEN_ARGS: dict[str, Any] = {"max_new_tokens": 25, "do_sample": False, "temperature": None, "top_p": None}


# --------------------------------------------------------------------------- calling the model
def logits_of(output: Any) -> Tensor:
    """The ``(batch, length, vocabulary)`` logits in a model's output: a tensor, ``output.logits``
    (Hugging Face ``ModelOutput``), ``output["logits"]`` or ``output[0]``."""
    if hasattr(output, "logits"):
        output = output.logits
    elif isinstance(output, Mapping):
        output = output["logits"]
    elif isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, Tensor):
        raise TypeError("the model must return logits (a tensor or an object with .logits), "
                        f"got {type(output).__name__}.")
    if output.dim() == 4:  # (batch, 1, length, vocabulary), e.g. Llama 4
        output = output[:, 0]
    if output.dim() != 3:
        raise ValueError("the model must return logits of shape (batch, length, vocabulary), "
                         f"got {tuple(output.shape)}.")
    return output


def _keywords(model: nn.Module) -> set[str] | None:
    """The keyword arguments ``model.forward`` accepts (None: any, it has ``**kwargs``)."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def context_length(model: nn.Module) -> int | None:
    """The model's context length: ``config.max_position_embeddings`` (or ``n_positions``,
    ``max_seq_len``) of a Hugging Face model, or the same attribute on the model itself; None if unknown."""
    for owner in (getattr(model, "config", None), model):
        for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def find_embedding_layer(model: nn.Module) -> nn.Module:
    """The token embedding layer: ``model.get_input_embeddings()`` when the model has it (Hugging Face),
    else its first ``nn.Embedding``."""
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        layer = get()
        if isinstance(layer, nn.Module):
            return layer
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise ValueError("`model` has no get_input_embeddings() and no nn.Embedding; pass the embedding `layer`.")


class _Model:
    """Calls the model the way it accepts: keywords (``input_ids=``, ``attention_mask=``, ...) when it
    takes them, the token ids positionally otherwise; returns the logits."""

    def __init__(self, model: nn.Module) -> None:
        self.module = model
        self.keywords = _keywords(model)
        self.cacheable = self.keywords is None or "past_key_values" in self.keywords

    def accepts(self, name: str) -> bool:
        return self.keywords is None or name in self.keywords

    def __call__(self, inputs: dict, **extra: Any) -> Any:
        kwargs = {k: v for k, v in {**inputs, **extra}.items() if self.accepts(k)}
        if self.accepts("input_ids"):
            return self.module(**kwargs)
        return self.module(inputs["input_ids"], **kwargs)


def _mask(model_inp: dict, ids: Tensor) -> Tensor:
    """The attention mask for ``ids`` (the prompt, perhaps followed by answer tokens): the input's own mask
    (a processor's, with zeros for padding) extended by ones, or all ones."""
    given = model_inp.get("attention_mask")
    if not isinstance(given, Tensor) or given.dim() != 2 or given.shape[1] > ids.shape[1]:
        return torch.ones(ids.shape, dtype=torch.long, device=ids.device)
    extra = torch.ones(given.shape[0], ids.shape[1] - given.shape[1], dtype=given.dtype, device=given.device)
    return torch.cat([given, extra], dim=1)


# --------------------------------------------------------------------------- shared by all LLM classes
class BaseLLMAttribution(Attribution):
    """What the LLM attribution classes share: the model behind the wrapped method, the tokenizer, the
    target tokens (given, or generated), and the formatting of model inputs."""

    SUPPORTED_METHODS: tuple[type, ...] = ()
    SUPPORTED_INPUTS: tuple[type, ...] = (InterpretableInput,)

    def __init__(self, attr_method: Attribution, tokenizer: Any) -> None:
        if not isinstance(attr_method, self.SUPPORTED_METHODS):
            names = ", ".join(c.__name__ for c in self.SUPPORTED_METHODS)
            raise TypeError(f"`attr_method` must be one of {names} for {type(self).__name__}, "
                            f"got {type(attr_method).__name__}.")
        super().__init__(attr_method.forward_func)
        self.model = self.forward_func
        self.tokenizer = tokenizer
        self.device = self._device_of(self.model)
        self._caller = _Model(self.model) if isinstance(self.model, nn.Module) else None

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

    def _check_context(self, n_prompt: int, n_target: int) -> None:
        limit = context_length(self.model) if isinstance(self.model, nn.Module) else None
        if limit is not None and n_prompt + n_target > limit:
            raise ValueError(f"`inp`: the prompt has {n_prompt} tokens and the target {n_target}; together they are "
                             f"longer than the model's context of {limit} tokens (max_position_embeddings).")

    def _get_target_tokens(self, inp: InterpretableInput, target: str | Tensor | list | None = None,
                           gen_args: dict | None = None) -> Tensor:
        """The target token ids (1-D, on the model's device): encoded from a string (no special tokens), as
        given, or generated from the unperturbed prompt with ``gen_args``."""
        self._check_input(inp)
        if target is None:
            ids = self._generate(self._format_model_input(inp.to_model_input()), gen_args)
        else:
            if gen_args is not None:
                raise ValueError("`gen_args` is only used to generate the target; it must be None when "
                                 "`target` is given.")
            if isinstance(target, str):
                ids = torch.as_tensor(self.tokenizer.encode(target, add_special_tokens=False), dtype=torch.long)
                if ids.numel() == 0:
                    raise ValueError(f"`target` {target!r} tokenizes to no tokens; give a non-empty answer.")
            elif isinstance(target, (Tensor, list, tuple)):
                ids = torch.as_tensor(target)
                if ids.dtype.is_floating_point or ids.dtype == torch.bool:
                    raise TypeError(f"`target` token ids must be integers, got {ids.dtype}.")
            else:
                raise TypeError("`target` must be a string, token ids (a 1-D tensor) or None, "
                                f"got {type(target).__name__}.")
            ids = ids.reshape(-1)
            if ids.numel() == 0:
                raise ValueError("`target` holds no token ids.")
        return ids.to(self.device, torch.long)

    def _generate(self, model_inp: dict, gen_args: dict | None) -> Tensor:
        gen_args = dict(gen_args or DEFAULT_GEN_ARGS)
        n_prompt = model_inp["input_ids"].shape[1]
        self._check_context(n_prompt, 0)
        generate = getattr(self.model, "generate", None)
        if callable(generate):
            if gen_args.get("pad_token_id") is None:
                pad = getattr(self.tokenizer, "pad_token_id", None)
                pad = getattr(self.tokenizer, "eos_token_id", None) if pad is None else pad
                config = getattr(self.model, "generation_config", None)
                if pad is None and getattr(config, "pad_token_id", None) is None \
                        and getattr(config, "eos_token_id", None) is None:
                    raise ValueError("`tokenizer` has no pad token (nor an end-of-sequence token), which generation "
                                     "needs: set tokenizer.pad_token, pass gen_args={'pad_token_id': ...}, or give "
                                     "the `target`.")
                if pad is not None:
                    gen_args["pad_token_id"] = pad
            out = generate(**model_inp, **gen_args)
            return torch.as_tensor(out)[0, n_prompt:]
        return self._greedy(model_inp, gen_args)

    def _greedy(self, model_inp: dict, gen_args: dict) -> Tensor:
        """Greedy decoding for a model without ``.generate`` (attrkit addition; Captum needs ``generate``)."""
        if gen_args.get("do_sample"):
            raise ValueError("`gen_args`: do_sample=True needs a model with .generate(); this one decodes greedily.")
        ids, eos = model_inp["input_ids"], getattr(self.tokenizer, "eos_token_id", None)
        new: list[int] = []
        with torch.no_grad():
            for _ in range(int(gen_args.get("max_new_tokens", 25))):
                step = {**model_inp, "input_ids": ids, "attention_mask": _mask(model_inp, ids)}
                logits = logits_of(self._caller(step))
                token = int(logits[0, -1].argmax())
                new.append(token)
                if token == eos:
                    break
                ids = torch.cat([ids, torch.tensor([[token]], device=ids.device)], dim=1)
        return torch.tensor(new, dtype=torch.long)

    def attribute_future(self) -> Callable:
        raise NotImplementedError(f"attribute_future is not implemented for {type(self).__name__}.")


# --------------------------------------------------------------------------- perturbation methods
class LLMAttribution(BaseLLMAttribution):
    """Perturbation attribution for language models: how much does switching off each prompt feature
    change the log-probability (or probability) of the target answer?

    Wraps :class:`~attrkit.FeatureAblation`, :class:`~attrkit.ShapleyValueSampling`,
    :class:`~attrkit.ShapleyValues`, :class:`~attrkit.Lime` or :class:`~attrkit.KernelShap`, created
    with the model. The first three also give one row per target token (``token_attr``); Lime and
    KernelShap give the sequence attribution only. ``attr_target``: ``"log_prob"`` or ``"prob"``.

    The answer's score is computed token by token as in generation (``forward_in_tokens=True``, with the
    key/value cache of a Hugging Face model when ``use_cached_outputs``), or in one pass over prompt and
    answer (``forward_in_tokens=False``). attrkit additions: ``target`` may also be a list of token ids; a
    model without ``.generate`` decodes greedily; ``output_probs`` of the result holds the target tokens'
    probabilities under the unperturbed prompt (Captum leaves it None); any :class:`InterpretableInput`
    subclass is accepted. Departure: the cached token-by-token scores equal an uncached forward pass
    (Captum 0.9's cached path, under transformers 5, drifts from the second answer token on — about 1e-2
    in log-probability on a tiny Llama; its uncached path agrees with ours to float precision).

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
    SUPPORTED_PER_TOKEN_ATTR_METHODS = (FeatureAblation, ShapleyValueSampling, ShapleyValues)

    def __init__(self, attr_method: Attribution, tokenizer: Any, attr_target: str = "log_prob") -> None:
        super().__init__(attr_method, tokenizer)
        if attr_target not in ("log_prob", "prob"):
            raise ValueError(f"`attr_target` must be 'log_prob' or 'prob', got {attr_target!r}.")
        self.attr_target = attr_target
        self.attr_method = copy(attr_method)
        self.include_per_token_attr = isinstance(attr_method, self.SUPPORTED_PER_TOKEN_ATTR_METHODS)
        self._unperturbed: Tensor | None = None

    # the objective --------------------------------------------------------------------------------
    def _token_log_probs(self, model_inp: dict, target_tokens: Tensor, use_cached_outputs: bool,
                         forward_in_tokens: bool) -> Tensor:
        """``log p(target token i | prompt, target tokens before i)`` for every i, shape ``(n_target,)``."""
        ids = model_inp["input_ids"]
        self._check_context(ids.shape[1], len(target_tokens))
        if not forward_in_tokens:
            full = torch.cat([ids, target_tokens.unsqueeze(0).to(ids.device)], dim=1)
            full_inp = {**model_inp, "input_ids": full, "attention_mask": _mask(model_inp, full)}
            logits = logits_of(self._caller(full_inp))
            n = ids.shape[1]
            steps = torch.log_softmax(logits[0, n - 1:n - 1 + len(target_tokens)], dim=-1)
            return steps.gather(1, target_tokens.unsqueeze(1)).squeeze(1)
        if use_cached_outputs and self._caller.cacheable:
            return self._cached_log_probs(model_inp, target_tokens)
        out, inputs = [], dict(model_inp)
        for token in target_tokens:
            ids = inputs["input_ids"]
            logits = logits_of(self._caller({**inputs, "attention_mask": _mask(model_inp, ids)}, use_cache=False))
            out.append(torch.log_softmax(logits[0, -1], dim=-1)[token])
            inputs["input_ids"] = torch.cat([ids, token.reshape(1, 1).to(ids.device)], dim=1)
        return torch.stack(out)

    def _cached_log_probs(self, model_inp: dict, target_tokens: Tensor) -> Tensor:
        ids = model_inp["input_ids"]
        mask = _mask(model_inp, ids)
        output = self._caller({**model_inp, "attention_mask": mask}, use_cache=True)
        out = []
        for i, token in enumerate(target_tokens):
            out.append(torch.log_softmax(logits_of(output)[0, -1], dim=-1)[token])
            if i + 1 < len(target_tokens):
                step = token.reshape(1, 1).to(ids.device)
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                output = self._caller({"input_ids": step, "attention_mask": mask},
                                      past_key_values=output.past_key_values, use_cache=True)
        return torch.stack(out)

    def _forward_func(self, perturbed_tensor: Tensor | None, inp: InterpretableInput, target_tokens: Tensor,
                      use_cached_outputs: bool = False, _inspect_forward: Callable | None = None,
                      forward_in_tokens: bool = True) -> Tensor:
        """The wrapped method's forward: ``(1 + n_target,)`` scores (the whole answer, then each token) for
        per-token methods, one score otherwise."""
        model_inp = self._format_model_input(inp.to_model_input(perturbed_tensor))
        log_probs = self._token_log_probs(model_inp, target_tokens, use_cached_outputs, forward_in_tokens).detach()
        if perturbed_tensor is None or bool((perturbed_tensor == 1).all()):
            self._unperturbed = log_probs.clone()
        scores = torch.cat([log_probs.sum().reshape(1), log_probs]) if self.include_per_token_attr else log_probs.sum()
        if _inspect_forward is not None:
            prompt = self.tokenizer.decode(model_inp["input_ids"][0])
            _inspect_forward(prompt, self.tokenizer.decode(target_tokens), scores.exp().reshape(-1).tolist())
        return scores if self.attr_target == "log_prob" else scores.exp()

    # the public call -----------------------------------------------------------------------------
    def attribute(self, inp: InterpretableInput, target: str | Tensor | list | None = None, num_trials: int = 1,
                  gen_args: dict | None = None, use_cached_outputs: bool = True,
                  _inspect_forward: Callable | None = None, forward_in_tokens: bool = True,
                  **kwargs: Any) -> LLMAttributionResult:
        """Attribute the target answer's score to the features of ``inp``.

        Args:
            inp: the prompt (an :class:`~attrkit.InterpretableInput`).
            target: the answer, a string or token ids; None generates it with ``gen_args``.
            num_trials: average over this many runs (for sampling methods and random baselines).
            gen_args: arguments of ``model.generate`` when ``target`` is None (default: greedy, 25 tokens).
            use_cached_outputs: score token by token with the model's key/value cache.
            forward_in_tokens: token by token (True) or prompt and answer in one pass (False).
            **kwargs: passed to the wrapped method's ``attribute`` (``n_samples``, ``feature_mask``...).
        """
        if isinstance(num_trials, bool) or not isinstance(num_trials, int) or num_trials < 1:
            raise ValueError(f"`num_trials` must be a positive int, got {num_trials!r}.")
        target_tokens = self._get_target_tokens(inp, target, gen_args)
        n_rows = 1 + len(target_tokens) if self.include_per_token_attr else 1
        method = copy(self.attr_method)
        method.forward_func = partial(self._forward_func, inp=inp, target_tokens=target_tokens,
                                      use_cached_outputs=use_cached_outputs, _inspect_forward=_inspect_forward,
                                      forward_in_tokens=forward_in_tokens)
        self._unperturbed = None
        total = torch.zeros(n_rows, inp.n_itp_features, device=self.device)
        for _ in range(num_trials):
            attr = method.attribute(inp.to_tensor().to(self.device), **kwargs)
            total += attr.reshape(n_rows, inp.n_itp_features).to(total)
        attr = inp.format_attr(total / num_trials)
        if self._unperturbed is None:
            with torch.no_grad():
                self._forward_func(None, inp, target_tokens, use_cached_outputs, None, forward_in_tokens)
        return LLMAttributionResult(
            seq_attr=attr[0], token_attr=attr[1:] if self.include_per_token_attr else None,
            input_tokens=list(inp.values), output_tokens=pretty_tokens(target_tokens, self.tokenizer),
            output_probs=self._unperturbed.exp(), inp=inp)


# --------------------------------------------------------------------------- gradient methods
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
    ``result.convergence_delta``.

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

    SUPPORTED_METHODS = (LayerGradientShap, LayerGradientXActivation, LayerIntegratedGradients)
    SUPPORTED_INPUTS = (TextTokenInput,)

    def __init__(self, attr_method: Attribution, tokenizer: Any) -> None:
        super().__init__(attr_method, tokenizer)
        self.attr_method = copy(attr_method)

    @classmethod
    def for_model(cls, model: nn.Module, tokenizer: Any, method: type = LayerIntegratedGradients,
                  layer: nn.Module | None = None, **method_kwargs: Any) -> "LLMGradientAttribution":
        """``cls(method(model, layer or the model's embedding layer, **method_kwargs), tokenizer)``."""
        return cls(method(model, layer if layer is not None else find_embedding_layer(model), **method_kwargs),
                   tokenizer)

    def _forward_func(self, perturbed_tensor: Tensor, inp: TextTokenInput, target_tokens: Tensor,
                      cur_target_idx: int) -> Tensor:
        """``log p(target token cur | perturbed prompt, the target tokens before it)``, one per row."""
        ids = self._format_model_input(inp.to_model_input(perturbed_tensor))["input_ids"]
        if cur_target_idx:
            ids = torch.cat([ids, target_tokens[:cur_target_idx].unsqueeze(0).expand(ids.shape[0], -1)], dim=1)
        logits = logits_of(self._caller({"input_ids": ids}))[:, -1]
        return torch.log_softmax(logits, dim=-1)[:, target_tokens[cur_target_idx]]

    def attribute(self, inp: TextTokenInput, target: str | Tensor | list | None = None,
                  gen_args: dict | None = None, **kwargs: Any) -> LLMAttributionResult:
        """Attribute each target token's log-probability to the tokens of ``inp``; ``**kwargs`` go to the
        wrapped method (``n_steps``, ``baselines``, ``internal_batch_size``, ``return_convergence_delta``...)."""
        target_tokens = self._get_target_tokens(inp, target, gen_args)
        self._check_context(inp.inp_tensor.shape[1], len(target_tokens))
        x = inp.to_tensor().to(self.device)
        rows, deltas = [], []
        for i in range(len(target_tokens)):
            method = copy(self.attr_method)
            method.forward_func = partial(self._forward_func, inp=inp, target_tokens=target_tokens, cur_target_idx=i)
            out = method.attribute(x, **kwargs)
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
