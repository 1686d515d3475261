"""Shared parts of the influence methods: data plumbing, checkpoints, per-example gradients, streaming top-k.

Every method here reads batches shaped like Captum's: a tuple ``(*features, labels)`` -- the model is called as
``model(*features)`` and the last element is the label given to the loss. The training set always streams through
a ``DataLoader``; nothing keeps one gradient per training example in memory.
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, Dataset


class KMostInfluentialResults(NamedTuple):
    """The ``k`` most influential training examples of each test example, best first.

    ``indices[i, j]`` is the position in the training set of the ``j``-th proponent (or opponent) of test example
    ``i``, and ``influence_scores[i, j]`` its score; both have shape ``(n_test, k)``.
    """
    indices: Tensor
    influence_scores: Tensor


class DataInfluence(ABC):
    """Base of every training-data influence method: ``influence(inputs, ...)`` explains test examples by the
    training examples that shaped the model (Captum's ``DataInfluence``)."""

    def __init__(self, model: nn.Module, train_dataset: Dataset | DataLoader, **kwargs: Any) -> None:
        self.model = model
        self.train_dataset = train_dataset

    @abstractmethod
    def influence(self, inputs: Any = None, **kwargs: Any) -> Any:
        """Influence of the training examples on ``inputs``."""

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__


# -- data ----------------------------------------------------------------------------------------------------------
def _train_loader(train_dataset, batch_size, name: str = "train_dataset") -> DataLoader:
    if isinstance(train_dataset, DataLoader):
        return train_dataset
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise TypeError(f"batch_size must be a positive int when {name} is a Dataset (got {batch_size!r}); "
                        "pass a DataLoader to control batching yourself")
    return DataLoader(train_dataset, batch_size, shuffle=False)


def _as_batches(inputs, name: str = "inputs") -> Iterable:
    """A DataLoader as it is; one batch tuple ``(*features, labels)`` as a one-batch list."""
    if isinstance(inputs, DataLoader):
        return inputs
    if not isinstance(inputs, (tuple, list)) or len(inputs) < 2:
        raise TypeError(f"{name} must be a tuple (*features, labels) -- the model gets every element but the last, "
                        f"the loss gets the last -- or a DataLoader of such tuples; got {type(inputs).__name__}"
                        + (f" of length {len(inputs)}" if isinstance(inputs, (tuple, list)) else ""))
    return [tuple(inputs)]


def _split(batch) -> tuple[tuple, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError("every batch must be a tuple (*features, labels); got "
                        f"{type(batch).__name__}" + (f" of length {len(batch)}" if hasattr(batch, '__len__') else ""))
    return tuple(batch[:-1]), batch[-1]


# -- checkpoints ---------------------------------------------------------------------------------------------------
def _natural_key(path: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _checkpoint_list(checkpoints) -> list[str]:
    """A directory (every file in it), a list of paths, or an iterator of paths; numbers sort naturally."""
    if isinstance(checkpoints, (str, os.PathLike)):
        found = sorted(glob.glob(os.path.join(os.fspath(checkpoints), "*")), key=_natural_key)
    elif isinstance(checkpoints, (list, tuple)) and checkpoints and all(
            isinstance(c, (str, os.PathLike)) for c in checkpoints):
        found = sorted((os.fspath(c) for c in checkpoints), key=_natural_key)
    elif isinstance(checkpoints, Iterable):
        found = list(checkpoints)
    else:
        raise TypeError(f"checkpoints must be a directory, a list of paths or an iterator; got {checkpoints!r}")
    if not found:
        raise ValueError(f"checkpoints: no checkpoint found in {checkpoints!r}")
    return found


def _load_flexible_state_dict(model: nn.Module, path: str) -> float:
    """Load a state dict saved with ``torch.save`` into ``model``; return its ``"learning_rate"`` entry (default 1).

    A ``"module."`` prefix (a model saved from ``nn.DataParallel``) is removed first.
    """
    state = torch.load(path, map_location=next(model.parameters()).device)
    state = dict(state)
    learning_rate = float(state.pop("learning_rate", 1.0))
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    target = model.module if isinstance(model, nn.DataParallel) else model
    target.load_state_dict(state)
    return learning_rate


class _Checkpoint(NamedTuple):
    learning_rate: float
    params: dict
    buffers: dict


def _snapshot_checkpoints(model: nn.Module, checkpoints: list, load_func: Callable) -> list[_Checkpoint]:
    """Load each checkpoint once and keep a copy of its weights; the model's own weights are restored after.

    Later passes evaluate the model at a checkpoint with ``torch.func.functional_call`` on the copy, so a file is
    read once per method, not once per training batch.
    """
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = []
    try:
        for path in checkpoints:
            if path is None:
                raise ValueError("checkpoints: None returned instead of a checkpoint")
            lr = load_func(model, path)
            lr = 1.0 if lr is None else float(lr)
            out.append(_Checkpoint(lr, {n: p.detach().clone() for n, p in model.named_parameters()},
                                   {n: b.detach().clone() for n, b in model.named_buffers()}))
    finally:
        model.load_state_dict(saved)
    return out


# -- layers and parameters -----------------------------------------------------------------------------------------
def _module(model: nn.Module, name, argument: str) -> nn.Module:
    if isinstance(name, nn.Module):
        return name
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a module name (str) or a module; got {name!r}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{argument}: the model has no submodule {name!r}") from None


def _parameter_names(model: nn.Module, layers) -> list[str]:
    """Names of the parameters the gradients are taken for: every trainable one, or those of ``layers``."""
    if layers is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not names:
            raise ValueError("the model has no trainable parameter; pass layers=[...] to choose some")
        return names
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"layers must be a non-empty list of module names; got {layers!r}")
    ids = {id(p) for name in layers for p in _module(model, name, "layers").parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    if not names:
        raise ValueError(f"layers: the modules {layers} have no parameters")
    return names


# -- losses ------------------------------------------------------------------------------------------------------
def _reduction(loss_fn, argument: str, reduced: bool) -> str:
    """The reduction a loss is declared with, checked as Captum checks it.

    ``reduced=False``: a per-example loss (``reduction="none"``); ``reduced=True``: a sum or mean over the batch.
    A loss without a ``reduction`` attribute is assumed to be of the expected kind (with a warning).
    """
    if loss_fn is None:
        return "sum"
    if not callable(loss_fn):
        raise TypeError(f"{argument} must be callable (a loss module or function); got {loss_fn!r}")
    reduction = getattr(loss_fn, "reduction", None)
    if reduction is None:
        warnings.warn(f"{argument} has no 'reduction' attribute; assuming it returns "
                      + ("the sum of the per-example losses" if reduced else "one loss per example"), stacklevel=3)
        return "sum" if reduced else "none"
    if reduced and reduction not in ("sum", "mean"):
        raise ValueError(f"{argument}.reduction must be 'sum' or 'mean' here (got {reduction!r})")
    if not reduced and reduction != "none":
        raise ValueError(f"{argument}.reduction must be 'none' when sample_wise_grads_per_batch is False "
                         f"(got {reduction!r}); use reduction='sum' or 'mean' with sample_wise_grads_per_batch=True")
    return str(reduction)


def _per_example_loss(loss_fn, out: Tensor, label) -> Tensor:
    """The loss of one example, given as a batch of one: a sum over the loss's entries (or the output's)."""
    if loss_fn is None:
        return out.sum()
    return loss_fn(out, label).sum()


# -- per-example gradients -----------------------------------------------------------------------------------------
def _batched(x) -> bool:
    return isinstance(x, Tensor) and x.dim() > 0


def _per_example_grads(model: nn.Module, ckpt: _Checkpoint, names: list[str], batch, loss_fn) -> Tensor:
    """The gradient of each example's loss with respect to the parameters ``names``, at checkpoint ``ckpt``.

    Returns ``(batch size, number of parameters)``. ``torch.func.vmap`` computes all of them in one pass; a model
    that vmap cannot trace (data-dependent Python control flow, ``.item()``) falls back to one example at a time.
    """
    features, labels = _split(batch)
    fixed = {n: t for n, t in ckpt.params.items() if n not in names}
    fixed.update(ckpt.buffers)
    chosen = {n: ckpt.params[n] for n in names}

    feat_batched, label_batched = tuple(_batched(f) for f in features), _batched(labels)

    def loss_of_one(params, feats, label):  # one example, given to the model as a batch of one
        feats = tuple(f.unsqueeze(0) if b else f for f, b in zip(feats, feat_batched))
        label = label.unsqueeze(0) if label_batched else label
        out = functional_call(model, ({**fixed, **params}), feats)
        return _per_example_loss(loss_fn, out, label)

    dims = (None, tuple(0 if b else None for b in feat_batched), 0 if label_batched else None)
    with torch.enable_grad():
        try:
            grads = vmap(grad(loss_of_one), in_dims=dims)(chosen, features, labels)
            rows = torch.cat([grads[n].flatten(1) for n in names], 1)
        except (RuntimeError, NotImplementedError):
            n = len(labels) if label_batched else next(f for f in features if _batched(f)).shape[0]
            rows = torch.stack([_flat_grad(loss_of_one, chosen, names, features, labels, i) for i in range(n)])
    return rows


def _flat_grad(loss_of_one, chosen, names, features, labels, i) -> Tensor:
    feats = tuple(f[i] if _batched(f) else f for f in features)
    g = grad(loss_of_one)(chosen, feats, labels[i] if _batched(labels) else labels)
    return torch.cat([g[n].flatten() for n in names])


# -- top-k over a stream of score blocks ---------------------------------------------------------------------------
class _TopK:
    """Keeps the ``k`` largest (proponents) or smallest (opponents) scores per row over blocks of columns."""

    def __init__(self, k: int, proponents: bool):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int or None; got {k!r}")
        self.k, self.sign = k, 1.0 if proponents else -1.0
        self.scores = self.indices = None
        self.seen = 0

    def add(self, block: Tensor) -> None:
        signed = block * self.sign
        cols = torch.arange(self.seen, self.seen + block.shape[1], device=block.device).expand_as(block)
        self.seen += block.shape[1]
        if self.scores is not None:
            signed = torch.cat([self.scores, signed], 1)
            cols = torch.cat([self.indices, cols], 1)
        top, where = torch.topk(signed, min(self.k, signed.shape[1]), dim=1)
        self.scores, self.indices = top, torch.gather(cols, 1, where)

    def result(self) -> KMostInfluentialResults:
        if self.scores is None:
            raise ValueError("train_dataset is empty")
        return KMostInfluentialResults(self.indices, self.scores * self.sign)


def _progress(iterable, show: bool, desc: str):
    if not show:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc)
