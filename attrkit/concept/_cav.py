"""Concept activation vectors and the keys that make a cache safe: a CAV (or a concept's activations) read
back from disk belongs to the same model weights, layer and concept examples, or it is not read at all."""
from __future__ import annotations

import hashlib
import os

import torch
from torch import Tensor

from ._concept import Concept, concepts_to_str

__all__ = ["CAV"]


class CAV:
    """The classifier's result for one experimental set at one layer.

    ``stats`` holds ``"weights"`` (``C x F``, one row per class), ``"classes"`` (the concept id of each row)
    and whatever else the classifier reported (``"accs"``). With ``save_path`` set, :meth:`save` writes it to
    ``<save_path>/<model_id>/<concept ids>-<layer>[-<key>].pt``; TCAV passes a ``key`` made of the model's
    weights, the layer and the concepts' examples, so a changed model or concept set misses the cache.

    Example:
        >>> import torch
        >>> from attrkit.concept import CAV, Concept
        >>> cav = CAV([Concept(0, "a", None), Concept(1, "b", None)], "fc",
        ...           {"weights": torch.tensor([[-1., 0.], [1., 0.]]), "classes": [0, 1]})
        >>> cav.stats["weights"].shape
        torch.Size([2, 2])
    """

    def __init__(self, concepts: list[Concept], layer: str, stats: dict | None = None,
                 save_path: str | None = None, model_id: str = "default_model_id", key: str = "") -> None:
        self.concepts, self.layer, self.stats = concepts, layer, stats
        self.save_path, self.model_id, self.key = save_path, model_id, key

    @staticmethod
    def assemble_save_path(path: str, model_id: str, concepts: list[Concept], layer: str, key: str = "") -> str:
        suffix = f"-{key[:20]}" if key else ""
        return os.path.join(path, model_id, f"{concepts_to_str(concepts)}-{layer}{suffix}.pt")

    @staticmethod
    def create_cav_dir_if_missing(save_path: str, model_id: str) -> None:
        os.makedirs(os.path.join(save_path, model_id), exist_ok=True)

    def save(self) -> None:
        if self.save_path is None:
            return
        CAV.create_cav_dir_if_missing(self.save_path, self.model_id)
        stats = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in (self.stats or {}).items()}
        torch.save({"concept_ids": [c.id for c in self.concepts], "concept_names": [c.name for c in self.concepts],
                    "layer": self.layer, "key": self.key, "stats": stats},
                   CAV.assemble_save_path(self.save_path, self.model_id, self.concepts, self.layer, self.key))

    @staticmethod
    def load(cavs_path: str, model_id: str, concepts: list[Concept], layer: str, key: str = "") -> "CAV | None":
        """The saved CAV for these concepts, layer and key, or ``None`` when there is none."""
        file = CAV.assemble_save_path(cavs_path, model_id, concepts, layer, key)
        if not os.path.exists(file):
            return None
        saved = torch.load(file, weights_only=False)
        if saved.get("key", "") != key:
            return None
        labels = [Concept(i, n, None) for i, n in zip(saved["concept_ids"], saved["concept_names"])]
        return CAV(labels, saved["layer"], saved["stats"], cavs_path, model_id, key)


# ------------------------------------------------------------------------------------------- fingerprints
def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode() if not isinstance(p, bytes) else p)
    return h.hexdigest()


def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach()
    return t.to("cpu", copy=True).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the model's class and every parameter and buffer (names, dtypes, shapes, values)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict(keep_vars=True).items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def model_version(model: torch.nn.Module) -> tuple:
    """A cheap in-memory key: the identity and in-place version counter of every parameter and buffer
    (an optimiser step, ``load_state_dict`` or a BatchNorm update in train mode changes it)."""
    return tuple((name, id(t), t._version) for name, t in model.state_dict(keep_vars=True).items())


def data_fingerprint(batches) -> str:
    """sha256 over a concept's example batches (their shapes, dtypes and values)."""
    h = hashlib.sha256()
    for batch in batches:
        for t in (batch if isinstance(batch, (tuple, list)) else (batch,)):
            if isinstance(t, Tensor):
                h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
                h.update(_tensor_bytes(t))
            else:
                h.update(repr(t).encode())
    return h.hexdigest()
