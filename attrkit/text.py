"""Helpers for text models: reference (baseline) token sequences, interpretable embedding layers, and
baselines sampled from a product of choices.

* :class:`TokenReferenceBase` — a baseline sequence made of one token (``<pad>``, ``<unk>``, ...).
* :func:`configure_interpretable_embedding_layer` / :func:`remove_interpretable_embedding_layer` — swap a
  model's embedding layer for a pass-through (:class:`InterpretableEmbeddingBase`), so that a primary method
  (IntegratedGradients, Saliency, ...) can be given the *embeddings* as its inputs. The layer methods
  (``LayerIntegratedGradients`` on the embedding layer) reach the same result without changing the model.
* :class:`ProductBaselines` — a callable that draws one baseline per feature from lists of candidates
  (for :class:`attrkit.TextTemplateInput`).

Names, arguments and behaviour follow Captum 0.9 (``captum.attr``); where Captum asserts, attrkit raises a
``ValueError`` naming the argument.
"""
from __future__ import annotations

import numbers
import random
import warnings
from typing import Any

import torch
from torch import nn


class TokenReferenceBase:
    """A reference (baseline) token sequence for text models: every position holds ``reference_token_idx``.

    The usual baseline of Integrated Gradients on text is "the same length, but every token a padding
    token" (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365, section 6.3). The token id and the
    length may be Python, NumPy or 0-d tensor integers (as in Captum).

    Example:
        >>> from attrkit import TokenReferenceBase
        >>> TokenReferenceBase(reference_token_idx=1).generate_reference(4, device="cpu")
        tensor([1, 1, 1, 1])
    """

    def __init__(self, reference_token_idx: int = 0) -> None:
        if reference_token_idx is None:
            raise ValueError("`reference_token_idx` is None (a tokenizer without a pad token gives pad_token_id = "
                             "None): give a token id, e.g. the unknown or end-of-sequence token's.")
        index = _as_int(reference_token_idx)
        if index is None:
            raise TypeError("`reference_token_idx` must be an integer token id (int, NumPy integer or 0-d tensor), "
                            f"got {type(reference_token_idx).__name__}.")
        self.reference_token_idx = index

    def generate_reference(self, sequence_length: int, device: torch.device | str) -> torch.Tensor:
        """A ``(sequence_length,)`` long tensor of the reference token on ``device`` (add the batch
        dimension with ``.unsqueeze(0)``)."""
        length = _as_int(sequence_length)
        if length is None or length < 0:
            raise ValueError(f"`sequence_length` must be a non-negative int, got {sequence_length!r}.")
        return torch.full((length,), self.reference_token_idx, dtype=torch.long, device=device)


def _as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (int, NumPy integer, 0-d integer tensor), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() \
            and not value.is_complex() and value.dtype != torch.bool:
        return int(value)
    return None


class InterpretableEmbeddingBase(nn.Module):
    """A pass-through that stands in for an embedding layer: it returns its first argument unchanged, so
    the model can be fed precomputed embeddings; :meth:`indices_to_embeddings` runs the original layer.

    Created by :func:`configure_interpretable_embedding_layer` (Sundararajan et al. 2017,
    https://arxiv.org/abs/1703.01365, attribute to the embedding vectors of the tokens).

    Example:
        >>> import torch
        >>> from attrkit import InterpretableEmbeddingBase
        >>> emb = InterpretableEmbeddingBase(torch.nn.Embedding(5, 2), "embedding")
        >>> vectors = emb.indices_to_embeddings(torch.tensor([[1, 2]]))
        >>> emb(vectors) is vectors, emb.num_embeddings, emb.embedding_dim
        (True, 5, 2)
    """

    def __init__(self, embedding: nn.Module, full_name: str) -> None:
        super().__init__()
        self.num_embeddings = getattr(embedding, "num_embeddings", None)
        self.embedding_dim = getattr(embedding, "embedding_dim", None)
        self.embedding = embedding
        self.full_name = full_name

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        """Return the precomputed embeddings: the first positional argument, else the first keyword one."""
        if inputs:
            return inputs[0]
        if kwargs:
            return next(iter(kwargs.values()))
        raise ValueError("InterpretableEmbeddingBase needs the precomputed embedding tensor as its first argument.")

    def indices_to_embeddings(self, *inputs: Any, **kwargs: Any) -> torch.Tensor:
        """The original layer applied to the given token indices (or whatever it takes)."""
        return self.embedding(*inputs, **kwargs)


def _resolve(model: nn.Module, dotted: str) -> tuple[nn.Module, str, nn.Module]:
    """``(parent, attribute, module)`` for a dotted submodule name such as ``"encoder.embed"``."""
    if not isinstance(dotted, str) or not dotted:
        raise ValueError(f"`embedding_layer_name` must be a dotted attribute name, got {dotted!r}.")
    *path, last = dotted.split(".")
    parent = model
    for part in path:
        if not hasattr(parent, part):
            raise ValueError(f"`embedding_layer_name`: the model has no submodule {dotted!r} (no {part!r}).")
        parent = getattr(parent, part)
    if not hasattr(parent, last):
        raise ValueError(f"`embedding_layer_name`: the model has no submodule {dotted!r} (no {last!r}).")
    return parent, last, getattr(parent, last)


def configure_interpretable_embedding_layer(model: nn.Module,
                                            embedding_layer_name: str = "embedding") -> InterpretableEmbeddingBase:
    """Replace ``model.<embedding_layer_name>`` by an :class:`InterpretableEmbeddingBase` wrapping it, and
    return the wrapper. The model then takes embeddings where it took token ids; undo with
    :func:`remove_interpretable_embedding_layer` (use ``try``/``finally``).

    Attributions to embeddings follow Sundararajan et al. (2017), https://arxiv.org/abs/1703.01365.
    Departure from Captum: configuring the same layer twice raises ``ValueError`` (Captum asserts), and a
    missing layer name raises ``ValueError`` naming ``embedding_layer_name``.

    Example:
        >>> import torch, warnings
        >>> from attrkit import (IntegratedGradients, configure_interpretable_embedding_layer,
        ...                      remove_interpretable_embedding_layer)
        >>> from attrkit.testing import TinyTextModel
        >>> model = TinyTextModel()
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     emb = configure_interpretable_embedding_layer(model, "embedding")
        >>> try:
        ...     vectors = emb.indices_to_embeddings(torch.tensor([[3, 1, 4]]))
        ...     attr = IntegratedGradients(model).attribute(vectors, target=1)
        ... finally:
        ...     remove_interpretable_embedding_layer(model, emb)
        >>> attr.shape, type(model.embedding).__name__
        (torch.Size([1, 3, 6]), 'Embedding')
    """
    parent, last, layer = _resolve(model, embedding_layer_name)
    if isinstance(layer, InterpretableEmbeddingBase):
        raise ValueError(f"`embedding_layer_name`: {embedding_layer_name!r} is already an "
                         "InterpretableEmbeddingBase; call remove_interpretable_embedding_layer first.")
    warnings.warn(f"{embedding_layer_name!r} is replaced by an interpretable embedding layer that takes embedding "
                  "vectors; restore it with remove_interpretable_embedding_layer when done.", stacklevel=2)
    wrapper = InterpretableEmbeddingBase(layer, embedding_layer_name)
    setattr(parent, last, wrapper)
    return wrapper


def remove_interpretable_embedding_layer(model: nn.Module, interpretable_emb: InterpretableEmbeddingBase) -> None:
    """Put back the original embedding layer that ``interpretable_emb`` wraps (see
    :func:`configure_interpretable_embedding_layer`; Sundararajan et al. 2017,
    https://arxiv.org/abs/1703.01365).

    Example:
        >>> import torch, warnings
        >>> from attrkit import configure_interpretable_embedding_layer, remove_interpretable_embedding_layer
        >>> from attrkit.testing import TinyTextModel
        >>> model = TinyTextModel()
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     emb = configure_interpretable_embedding_layer(model)
        >>> remove_interpretable_embedding_layer(model, emb)
        >>> model.embedding is emb.embedding
        True
    """
    if not isinstance(interpretable_emb, InterpretableEmbeddingBase):
        raise TypeError("`interpretable_emb` must be the InterpretableEmbeddingBase returned by "
                        f"configure_interpretable_embedding_layer, got {type(interpretable_emb).__name__}.")
    parent, last, _ = _resolve(model, interpretable_emb.full_name)
    setattr(parent, last, interpretable_emb.embedding)


class ProductBaselines:
    """A callable baseline: each call draws one value per feature from its list of candidates, i.e. a
    sample from the Cartesian product of the lists (Python's ``random``, as Captum, so ``random.seed``
    makes it repeatable). Give it to :class:`attrkit.TextTemplateInput` as ``baselines`` to average the
    attribution over several plausible replacements (Lundberg & Lee 2017, https://arxiv.org/abs/1705.07874:
    a baseline distribution instead of one reference).

    ``baseline_values`` is a list of lists (one list per feature) or a dict from feature name to list; a key
    may be a tuple of names whose values are drawn together (the list then holds tuples).

    Example:
        >>> import random
        >>> from attrkit import ProductBaselines
        >>> pb = ProductBaselines({"name": ["Alex", "Sam"], ("city", "country"): [("Paris", "France")]})
        >>> random.seed(0)
        >>> sorted(pb().items())
        [('city', 'Paris'), ('country', 'France'), ('name', 'Sam')]
    """

    def __init__(self, baseline_values: list[list[Any]] | dict[Any, list[Any]]) -> None:
        if isinstance(baseline_values, dict):
            self.dict_keys = list(baseline_values.keys())
            values = [baseline_values[k] for k in self.dict_keys]
        elif isinstance(baseline_values, (list, tuple)):
            self.dict_keys = []
            values = list(baseline_values)
        else:
            raise TypeError("`baseline_values` must be a list of lists or a dict of lists, got "
                            f"{type(baseline_values).__name__}.")
        for i, options in enumerate(values):
            if not isinstance(options, (list, tuple)) or not options:
                name = self.dict_keys[i] if self.dict_keys else i
                raise ValueError(f"`baseline_values`[{name!r}] must be a non-empty list of candidates.")
        self.baseline_values = values

    def sample(self) -> list[Any] | dict[str, Any]:
        """One draw: a list (list input) or a dict with every name of every key (dict input)."""
        drawn = [random.choice(options) for options in self.baseline_values]
        if not self.dict_keys:
            return drawn
        out: dict[str, Any] = {}
        for key, value in zip(self.dict_keys, drawn):
            names, values = (key, value) if isinstance(key, tuple) else ((key,), (value,))
            if len(names) != len(values):
                raise ValueError(f"`baseline_values`[{key!r}]: each candidate must be a tuple of {len(names)} values.")
            out.update(zip(names, values))
        return out

    def __call__(self) -> list[Any] | dict[str, Any]:
        return self.sample()
