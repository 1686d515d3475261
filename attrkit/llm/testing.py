"""A word tokenizer and a tiny causal language model, for the examples and tests of :mod:`attrkit.llm`
(no download, no ``transformers``). They follow the small part of the Hugging Face interface that the LLM
classes use: ``tokenizer.encode / decode / convert_ids_to_tokens / convert_tokens_to_ids``, calling the
tokenizer with ``return_offsets_mapping``, and a model that maps token ids ``(batch, length)`` to logits
``(batch, length, vocabulary)``.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


class WordTokenizer:
    """Splits on whitespace; the vocabulary is ``<unk>``, ``<s>`` (BOS, prepended when
    ``add_special_tokens``), ``</s>`` (EOS), optionally ``<pad>``, then ``words``.

    Example:
        >>> from attrkit.llm.testing import WordTokenizer
        >>> tok = WordTokenizer(["hello", "world"])
        >>> tok.encode("hello there world")
        [1, 4, 0, 5]
        >>> tok.decode([4, 5])
        'hello world'
    """

    def __init__(self, words: Iterable[str], pad: bool = True) -> None:
        specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if pad else [])
        self.vocab: list[str] = []
        for w in [*specials, *words]:
            if w not in self.vocab:
                self.vocab.append(w)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.unk_token, self.bos_token, self.eos_token = "<unk>", "<s>", "</s>"
        self.pad_token = "<pad>" if pad else None

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def unk_token_id(self) -> int:
        return 0

    @property
    def bos_token_id(self) -> int:
        return 1

    @property
    def eos_token_id(self) -> int:
        return 2

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.ids[self.pad_token]

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], None
        for i, ch in enumerate(text + " "):
            if ch.isspace() and start is not None:
                spans.append((start, i))
                start = None
            elif not ch.isspace() and start is None:
                start = i
        return spans

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 return_tensors: str | None = None, **_: Any) -> dict:
        spans = self._spans(text)
        ids = [self.ids.get(text[s:e], 0) for s, e in spans]
        if add_special_tokens:
            ids, spans = [self.bos_token_id, *ids], [(0, 0), *spans]
        out: dict = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        if return_tensors == "pt":
            out = {k: torch.tensor([v]) for k, v in out.items()}
        return out

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None, **_: Any):
        return self(text, add_special_tokens=add_special_tokens, return_tensors=return_tensors)["input_ids"]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.vocab[ids]
        return [self.vocab[int(i)] for i in ids]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.ids.get(tokens, 0)
        return [self.ids.get(t, 0) for t in tokens]

    def decode(self, ids, skip_special_tokens: bool = False, **_: Any) -> str:
        ids = [int(ids)] if isinstance(ids, int) or (torch.is_tensor(ids) and ids.dim() == 0) else \
            [int(i) for i in (ids.flatten().tolist() if torch.is_tensor(ids) else ids)]
        special = {0, 1, 2} | ({self.pad_token_id} if self.pad_token else set())
        return " ".join(self.vocab[i] for i in ids if not (skip_special_tokens and i in special))


class TinyCausalLM(nn.Module):
    """A causal language model small enough to read: the hidden state at position ``t`` is
    ``tanh(W · (sum of the embeddings of tokens 0..t))``, and a linear head gives the next-token logits.
    Tokens whose embedding row is zero (``dead_ids``) change nothing, exactly. ``max_position_embeddings``
    is its context length (prompts longer than it are refused by the LLM classes).

    Example:
        >>> import torch
        >>> from attrkit.llm.testing import TinyCausalLM
        >>> TinyCausalLM(vocab_size=10)(torch.tensor([[1, 4, 5]])).shape
        torch.Size([1, 3, 10])
    """

    def __init__(self, vocab_size: int, dim: int = 16, seed: int = 0, dead_ids: Iterable[int] = (),
                 max_position_embeddings: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embedding = nn.Embedding(vocab_size, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
            for i in dead_ids:
                self.embedding.weight[i].zero_()
        self.max_position_embeddings = max_position_embeddings

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embedding(input_ids)
        if attention_mask is not None:
            e = e * attention_mask.unsqueeze(-1).to(e.dtype)
        return self.head(torch.tanh(self.mix(e.cumsum(dim=1))))
