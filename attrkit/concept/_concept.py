"""Concepts (a name, an id and example inputs) and the small data helpers Captum's TCAV tutorials import."""
from __future__ import annotations

import glob
import os
from typing import Callable, Iterator

from torch.utils.data import DataLoader, Dataset, IterableDataset

__all__ = ["Concept", "ConceptInterpreter", "concepts_to_str", "CustomIterableDataset", "dataset_to_dataloader"]


class Concept:
    """A human idea ("stripes", "positive adjectives") given by example inputs.

    Args:
        id: an integer unique among the concepts one interpreter sees; it is the concept's label when a
            classifier separates concepts, and part of the result keys (``"0-1"``).
        name: a readable name.
        data_iter: an iterable of input batches (a ``DataLoader``, a list of tensors, ...); ``None`` when the
            concept is only a label (a CAV read back from disk).

    Example:
        >>> import torch
        >>> from attrkit.concept import Concept
        >>> stripes = Concept(0, "stripes", [torch.rand(4, 3, 8, 8)])
        >>> stripes.identifier
        'stripes-0'
    """

    def __init__(self, id: int, name: str, data_iter) -> None:
        if isinstance(id, bool) or not isinstance(id, int):
            raise TypeError(f"`id` must be an int, got {type(id).__name__}.")
        self.id = id
        self.name = name
        self.data_iter = data_iter

    @property
    def identifier(self) -> str:
        return f"{self.name}-{self.id}"

    def __repr__(self) -> str:
        return f"Concept({self.id!r}, {self.name!r})"


class ConceptInterpreter:
    """Base class of concept-based interpreters: holds ``model``; subclasses define ``interpret(inputs, ...)``."""

    def __init__(self, model) -> None:
        self.model = model

    def interpret(self, inputs, *args, **kwargs):
        raise NotImplementedError


def concepts_to_str(concepts) -> str:
    """The key of an experimental set in TCAV's results: the concept ids joined by ``-`` (``"0-3"``)."""
    return "-".join(str(c.id) for c in concepts)


class CustomIterableDataset(IterableDataset):
    """Iterates over the files of a directory (``path`` ending in ``/``), mapping each file name through
    ``transform_filename_to_tensor``; for a path that is not a directory, yields what the function returns
    for that path.

    Example:
        >>> from attrkit.concept import CustomIterableDataset, dataset_to_dataloader
        >>> ds = CustomIterableDataset(lambda f: torch.load(f), "concepts/striped/")   # doctest: +SKIP
        >>> loader = dataset_to_dataloader(ds, batch_size=16)                           # doctest: +SKIP
    """

    def __init__(self, transform_filename_to_tensor: Callable, path: str) -> None:
        self.path = path
        self.transform_filename_to_tensor = transform_filename_to_tensor
        self.file_itr = sorted(glob.glob(path + "*")) if os.path.isdir(path) else None

    def __iter__(self) -> Iterator:
        if self.file_itr is None:
            return iter(self.transform_filename_to_tensor(self.path))
        return map(self.transform_filename_to_tensor, self.file_itr)


def dataset_to_dataloader(dataset: Dataset, batch_size: int = 64) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` in batches of ``batch_size`` (the concept's ``data_iter``)."""
    return DataLoader(dataset, batch_size=batch_size)
