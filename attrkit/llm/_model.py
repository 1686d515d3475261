"""Asking a causal language model how likely an answer is: the one scoring function of :mod:`attrkit.llm`.

:func:`answer_log_probs` gives ``log p(answer token i | prompt, answer tokens before i)`` for every answer
token, in one pass over prompt and answer or token by token as in generation (with the model's key/value
cache when it has one); :func:`greedy_decode` walks the same token-by-token path choosing the likeliest
token. :data:`SCORES` names what is attributed: a function applied to log-probabilities (``"log_prob"``,
``"prob"``, and any the user adds). Works with Hugging Face causal LMs and with a plain ``nn.Module`` that
maps token ids ``(batch, length)`` to logits ``(batch, length, vocabulary)``.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import Tensor, nn

#: What an LLM attribution attributes, by name: a function from log-probabilities to scores, applied to the
#: whole answer's log-probability and to each token's. Add an entry to make a new name available to
#: ``attr_target``, e.g. ``SCORES["surprisal"] = lambda lp: -lp``.
SCORES: dict[str, Callable[[Tensor], Tensor]] = {"log_prob": lambda log_prob: log_prob, "prob": torch.exp}


def score_function(attr_target: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The score named ``attr_target`` in :data:`SCORES`, or ``attr_target`` itself when it is callable."""
    if callable(attr_target):
        return attr_target
    if not isinstance(attr_target, str):
        raise TypeError("`attr_target` must be the name of a score or a function of log-probabilities, "
                        f"got {type(attr_target).__name__}.")
    if attr_target not in SCORES:
        raise ValueError(f"`attr_target` must be one of {', '.join(map(repr, SCORES))} (names in "
                         f"attrkit.llm.SCORES) or a function of log-probabilities, got {attr_target!r}.")
    return SCORES[attr_target]


def apply_score(score: Callable[[Tensor], Tensor], log_probs: Tensor) -> Tensor:
    """``score(log_probs)``, checked to keep the shape (one score per log-probability)."""
    out = score(log_probs)
    if not isinstance(out, Tensor) or out.shape != log_probs.shape or not out.is_floating_point():
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"`attr_target` must map log-probabilities of shape {tuple(log_probs.shape)} to "
                         f"floating-point scores of the same shape, got {shape}.")
    return out


# --------------------------------------------------------------------------- the model and its output
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


class ModelCaller:
    """Calls the model the way it accepts: keywords (``input_ids=``, ``attention_mask=``, ...) when it
    takes them, the token ids positionally otherwise; keywords it does not take are left out."""

    def __init__(self, model: nn.Module) -> None:
        self.module = model
        params = inspect.signature(model.forward).parameters
        self.keywords = None if any(p.kind is p.VAR_KEYWORD for p in params.values()) else set(params)
        self.cacheable = self.keywords is None or "past_key_values" in self.keywords

    def accepts(self, name: str) -> bool:
        return self.keywords is None or name in self.keywords

    def __call__(self, inputs: dict, **extra: Any) -> Any:
        kwargs = {k: v for k, v in {**inputs, **extra}.items() if self.accepts(k)}
        if self.accepts("input_ids"):
            return self.module(**kwargs)
        kwargs.pop("input_ids", None)
        return self.module(inputs["input_ids"], **kwargs)


def attention_mask(model_inp: dict, ids: Tensor) -> Tensor:
    """The attention mask for ``ids`` (the prompt, perhaps followed by answer tokens): the input's own mask
    (a processor's, with zeros for padding) extended by ones, or all ones."""
    given = model_inp.get("attention_mask")
    if not isinstance(given, Tensor) or given.dim() != 2 or given.shape[1] > ids.shape[1]:
        return torch.ones(ids.shape, dtype=torch.long, device=ids.device)
    extra = torch.ones(given.shape[0], ids.shape[1] - given.shape[1], dtype=given.dtype, device=given.device)
    return torch.cat([given.expand(ids.shape[0], -1), extra.expand(ids.shape[0], -1)], dim=1)


# --------------------------------------------------------------------------- walking the answer
class _Steps:
    """The next-token logits after the prompt, then after each appended token. With ``use_cache`` (and a
    model that returns ``past_key_values``) each step feeds only the new token; the cache is used only when
    the model input is nothing but ``input_ids`` and ``attention_mask``, since other inputs (image
    features, ...) would have to be repeated or not at each step in a model-specific way. Otherwise every
    step is one full pass over everything (exact, as the uncached path)."""

    def __init__(self, call: ModelCaller, model_inp: dict, use_cache: bool) -> None:
        self.call, self.model_inp, self.ids = call, model_inp, model_inp["input_ids"]
        self.use_cache = use_cache and call.cacheable and set(model_inp) <= {"input_ids", "attention_mask"}
        self.output = self._full_pass()

    def _full_pass(self) -> Any:
        inputs = {**self.model_inp, "input_ids": self.ids, "attention_mask": attention_mask(self.model_inp, self.ids)}
        return self.call(inputs, use_cache=self.use_cache)

    def logits(self) -> Tensor:
        """The next-token logits, ``(batch, vocabulary)``."""
        return logits_of(self.output)[:, -1]

    def append(self, token: Tensor) -> None:
        new = token.reshape(-1, 1).to(self.ids.device).expand(self.ids.shape[0], 1)
        self.ids = torch.cat([self.ids, new], dim=1)
        past = getattr(self.output, "past_key_values", None) if self.use_cache else None
        if past is None:
            self.output = self._full_pass()
            return
        step = {"input_ids": new, "attention_mask": attention_mask(self.model_inp, self.ids)}
        self.output = self.call(step, past_key_values=past, use_cache=True)


def _check_ids(answer: Tensor, vocabulary: int) -> None:
    if int(answer.max()) >= vocabulary:
        raise ValueError(f"`target`: token id {int(answer.max())} is outside the model's vocabulary of "
                         f"{vocabulary} tokens.")


def answer_token_log_probs(step_logits: Tensor, answer: Tensor) -> Tensor:
    """``log p(answer[j])`` from the logits at each answer step, ``(rows, len(answer), vocabulary)`` →
    ``(rows, len(answer))``: the one place that turns step logits into the answer's log-probabilities."""
    log_probs = torch.log_softmax(step_logits, dim=-1)
    return log_probs.gather(2, answer.view(1, -1, 1).expand(step_logits.shape[0], -1, 1)).squeeze(2)


def answer_log_probs(call: ModelCaller, model_inp: dict, answer: Tensor, forward_in_tokens: bool = True,
                     use_cache: bool = False) -> Tensor:
    """``log p(answer[i] | prompt, answer[:i])`` for each row of the prompt, shape ``(batch, n_answer)``.

    ``forward_in_tokens=False``: one pass over the prompt followed by the answer (but its last token);
    ``True``: token by token as in generation, with the key/value cache when ``use_cache`` (see
    :class:`_Steps`). ``model_inp`` holds ``input_ids`` ``(batch, n_prompt)`` and any other model inputs."""
    ids = model_inp["input_ids"]
    answer = answer.to(ids.device)
    if not forward_in_tokens:
        full = torch.cat([ids, answer[:-1].unsqueeze(0).expand(ids.shape[0], -1)], dim=1)
        logits = logits_of(call({**model_inp, "input_ids": full, "attention_mask": attention_mask(model_inp, full)}))
        _check_ids(answer, logits.shape[-1])
        return answer_token_log_probs(logits[:, ids.shape[1] - 1:], answer)
    walk, out = _Steps(call, model_inp, use_cache), []
    _check_ids(answer, walk.logits().shape[-1])
    for i, token in enumerate(answer):
        out.append(torch.log_softmax(walk.logits(), dim=-1)[:, token])
        if i + 1 < len(answer):
            walk.append(token)
    return torch.stack(out, dim=1)


def greedy_decode(call: ModelCaller, model_inp: dict, max_new_tokens: int, eos: int | None) -> Tensor:
    """The likeliest token, step by step, until ``eos`` or ``max_new_tokens`` (first row of the prompt)."""
    walk, new = _Steps(call, {**model_inp, "input_ids": model_inp["input_ids"][:1]}, use_cache=True), []
    with torch.no_grad():
        for i in range(max_new_tokens):
            token = walk.logits()[0].argmax()
            new.append(int(token))
            if new[-1] == eos or i + 1 == max_new_tokens:
                break
            walk.append(token)
    return torch.tensor(new, dtype=torch.long)
