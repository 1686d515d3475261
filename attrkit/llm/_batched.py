"""Scoring many perturbed prompts at once: the batched path of :class:`~attrkit.LLMAttribution`.

A perturbation method asks for the answer's log-probabilities under many perturbed prompts. Token by token,
one prompt at a time, each answer token costs a pass that reads every weight of the model for one position.
Here the prompts of one call are scored together, in one pass over prompt and answer (teacher forcing: the
same numbers as token by token, up to float rounding):

* **right padding**: every prompt is followed by the answer, and the rows are padded *at the end*. In a
  causal model no token attends to a later one, so no real token ever sees a pad and the positions of the
  real tokens are those of the unpadded row: exact without position ids; the attention mask marks the pads
  all the same;
* **shared prefix**: perturbed prompts agree with the unperturbed prompt up to their first changed token.
  The key/value cache of the prefix every row of a pass shares is computed once (one row) and repeated over
  the rows, which then run only from there (Hugging Face models, whose cache has ``batch_repeat_interleave``);
* **only the logits needed**: a model that takes ``logits_to_keep`` (Hugging Face) applies its head to the
  answer positions only.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._model import ModelCaller, _check_ids, answer_token_log_probs, logits_of

#: prompt and answer tokens per forward pass (rows are grouped up to this many, at least one row a pass)
TOKENS_PER_PASS = 1024


def shared_prefix(rows: list[Tensor], reference: Tensor) -> int:
    """How many leading tokens every row shares with ``reference`` (1-D id tensors), leaving each row at
    least its last token (whose logits predict the first answer token)."""
    p = min(len(r) for r in rows) - 1
    p = min(p, len(reference))
    for row in rows:
        differs = (row[:p] != reference[:p]).nonzero()
        if len(differs):
            p = int(differs[0])
    return max(p, 0)


def _prefix_cache(call: ModelCaller, reference: Tensor, p: int, n_rows: int) -> Any:
    """The key/value cache of ``reference[:p]``, repeated for ``n_rows`` rows; None when the model has none."""
    if p == 0 or not call.cacheable:
        return None
    ids = reference[:p].unsqueeze(0)
    out = call({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, use_cache=True)
    past = getattr(out, "past_key_values", None)
    if past is None or not hasattr(past, "batch_repeat_interleave"):
        return None
    past.batch_repeat_interleave(n_rows)
    return past


def _one_pass(call: ModelCaller, rows: list[Tensor], answer: Tensor, reference: Tensor | None,
              pad_id: int) -> Tensor:
    """``log p(answer[j] | row, answer[:j])`` for each row (1-D ids), shape ``(len(rows), len(answer))``."""
    p = shared_prefix(rows, reference) if reference is not None else 0
    past = _prefix_cache(call, reference, p, len(rows)) if p else None
    p = p if past is not None else 0
    seqs = [torch.cat([row[p:], answer[:-1]]) for row in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=answer.device)
    mask = torch.zeros(len(rows), p + width, dtype=torch.long, device=answer.device)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :p + len(s)] = 1
    starts = torch.tensor([len(row) - 1 - p for row in rows], device=answer.device)  # logits for answer[0]
    lo, hi = int(starts.min()), int(starts.max()) + len(answer)
    extra: dict[str, Any] = {"use_cache": past is not None} if call.accepts("use_cache") else {}
    if past is not None:
        extra["past_key_values"] = past
    if call.accepts("logits_to_keep"):
        extra["logits_to_keep"] = torch.arange(lo, hi, device=answer.device)
    else:
        lo = 0
    logits = logits_of(call({"input_ids": ids, "attention_mask": mask}, **extra))
    if logits.shape[1] != hi - lo:  # a model that takes any keyword but ignored logits_to_keep
        lo = 0
    _check_ids(answer, logits.shape[-1])
    where = (starts - lo).unsqueeze(1) + torch.arange(len(answer), device=answer.device)
    return answer_token_log_probs(logits.gather(1, where.unsqueeze(2).expand(-1, -1, logits.shape[-1])), answer)


def batched_log_probs(call: ModelCaller, rows: list[Tensor], answer: Tensor, reference: Tensor | None = None,
                      pad_id: int = 0, tokens_per_pass: int = TOKENS_PER_PASS) -> Tensor:
    """``log p(answer[j] | rows[i], answer[:j])``, shape ``(len(rows), len(answer))``, for prompts of any
    lengths (1-D token ids), grouped into passes of about ``tokens_per_pass`` tokens; the cache of the prefix
    shared with ``reference`` (the unperturbed prompt) is reused when the model has one."""
    answer = answer.reshape(-1)
    out, start = [], 0
    while start < len(rows):
        stop, longest = start, 0
        while stop < len(rows):
            longest = max(longest, len(rows[stop]) + len(answer))
            if stop > start and longest * (stop + 1 - start) > tokens_per_pass:
                break
            stop += 1
        out.append(_one_pass(call, rows[start:stop], answer, reference, pad_id))
        start = stop
    return torch.cat(out)
