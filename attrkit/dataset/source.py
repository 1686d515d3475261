"""Which examples :func:`attrkit.attribute_dataset` explains, and how it loads them.

Resume and sharding need examples by position, so the data is a map-style ``Dataset`` or a ``DataLoader`` over
one. A loader's sampler decides which examples are explained, in a fixed order (so an interrupted run resumes the
same work): sequential and shuffling samplers give every example in dataset order; ``SubsetRandomSampler`` gives
its subset in the order it holds; any other sampler whose order is the same on every pass gives that order;
``drop_last`` drops the last short batch. A sampler that draws differently each pass (with replacement, weighted)
or shards by itself (``DistributedSampler``; ``attribute_dataset`` shards under ``torch.distributed`` itself) is
refused, as is a custom ``batch_sampler``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from torch.utils.data import (BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler,
                              Subset, SubsetRandomSampler)
from torch.utils.data.dataloader import default_collate
from torch.utils.data.distributed import DistributedSampler


class DataSource:
    """The dataset, how to collate it, which positions to explain, and the loader's defaults."""

    def __init__(self, data, indices: Optional[Sequence[int]] = None, num_workers: Optional[int] = None):
        loader = data if isinstance(data, DataLoader) else None
        self.dataset: Dataset = _check_dataset(loader.dataset if loader is not None else data)
        self.collate: Callable = (loader.collate_fn or default_collate) if loader is not None else default_collate
        self.default_chunk_size: int = (loader.batch_size or 64) if loader is not None else 64
        loader_workers = loader.num_workers if loader is not None else 0
        self.workers: int = loader_workers if num_workers is None else num_workers
        if indices is not None:
            if loader is not None and not _yields_every_example(loader):
                raise ValueError("pass either `indices` or a DataLoader with a sampler that selects examples, "
                                 "not both.")
            self.positions: List[int] = [int(i) for i in indices]
        else:
            self.positions = _positions(loader) if loader is not None else list(range(len(self.dataset)))
        if not self.positions:
            raise ValueError("`data` (or `indices`) holds no example.")

    def example(self, i: int):
        """Example ``i`` (of the explained ones) as a batch of one."""
        return self.collate([self.dataset[self.positions[i]]])

    def loader(self, rows: List[int], batch_size: int) -> DataLoader:
        """A loader over the explained examples ``rows``, in that order."""
        subset = Subset(self.dataset, [self.positions[i] for i in rows])
        return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=self.collate,
                          num_workers=self.workers)


def _check_dataset(dataset):
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError("`data` must be a map-style Dataset (with __len__ and __getitem__) or a DataLoader over one; "
                        f"got {type(dataset).__name__} (resume and sharding need examples by index).")
    return dataset


def _yields_every_example(loader: DataLoader) -> bool:
    s = loader.sampler
    return (type(loader.batch_sampler) in (BatchSampler, type(None)) and not loader.drop_last
            and (type(s) is SequentialSampler
                 or (type(s) is RandomSampler and not s.replacement and s.num_samples == len(loader.dataset))))


def _positions(loader: DataLoader) -> List[int]:
    """The dataset positions the loader yields, in a fixed order (see the module's docstring)."""
    n = len(loader.dataset)
    if loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler:
        raise ValueError(f"the DataLoader's batch_sampler ({type(loader.batch_sampler).__name__}) is not supported: "
                         "pass a loader with a sampler, or the dataset with `indices`.")
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        raise ValueError("the DataLoader's sampler is a DistributedSampler: attribute_dataset shards the examples over "
                         "torch.distributed ranks itself; pass a loader without it (or the dataset).")
    if type(sampler) is SequentialSampler:
        positions = list(range(n))
    elif type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == n:
        positions = list(range(n))  # the same examples; dataset order, so a resumed run does the same work
    elif type(sampler) is SubsetRandomSampler:
        positions = [int(i) for i in sampler.indices]
    else:
        positions = [int(i) for i in sampler]
        if positions != [int(i) for i in sampler] or len(set(positions)) != len(positions):
            raise ValueError(f"the DataLoader's sampler ({type(sampler).__name__}) draws different or repeated "
                             "examples on every pass, so a run could not be resumed or checked: pass the examples to "
                             "explain with `indices=` (or a SubsetRandomSampler).")
    if loader.drop_last and loader.batch_size:
        positions = positions[:len(positions) - len(positions) % loader.batch_size]
    return positions
