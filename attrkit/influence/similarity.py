"""Similarity "influence": the training examples whose activations at a layer are closest to the test example's."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ._common import DataInfluence, _module, _TopK


def euclidean_distance(test: Tensor, train: Tensor) -> Tensor:
    """Pairwise Euclidean distances ``(n_test, n_train)`` between flattened rows (use with direction ``"min"``).

    Example::

        >>> import torch
        >>> euclidean_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([[5., 1.]])
    """
    return torch.cdist(test.reshape(test.shape[0], -1)[None], train.reshape(train.shape[0], -1)[None])[0]


def cosine_similarity(test: Tensor, train: Tensor, replace_nan: float = 0) -> Tensor:
    """Pairwise cosine similarities ``(n_test, n_train)`` of flattened rows; a pair with an all-zero vector gets
    ``replace_nan`` (Captum instead fills the zero vector with ``replace_nan``, so its products come out as
    arbitrary numbers rather than the flag value).

    Example::

        >>> import torch
        >>> cosine_similarity(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 0.0]]), replace_nan=-2)
        tensor([[ 1., -2.]])
    """
    test, train = test.reshape(test.shape[0], -1), train.reshape(train.shape[0], -1)
    tn, rn = test.norm(dim=1, keepdim=True), train.norm(dim=1, keepdim=True)
    sims = (test / tn.clamp_min(1e-30)) @ (train / rn.clamp_min(1e-30)).T
    zero = (tn == 0) | (rn == 0).T
    return torch.where(zero, torch.full_like(sims, float(replace_nan)), sims)


class SimilarityInfluence(DataInfluence):
    """The training examples most similar to a test example in a layer's activations (Captum's
    ``SimilarityInfluence``): a representer of "what the model thinks is alike", not of what taught it.

    Nearest neighbours in a learned representation are the classic example-based explanation (e.g. Papernot &
    McDaniel 2018, "Deep k-Nearest Neighbors", https://arxiv.org/abs/1803.04765); contrast them with TracIn, which
    measures what changed the loss. The source data set streams through a ``DataLoader``; each batch's first element
    (or the batch itself, if it is not a tuple) is the model's input. Activations of the source set are cached in
    ``activation_dir/model_id`` one batch per file and reused when ``load_src_from_disk`` is true.

    Args:
        module: the model. layers: a layer name or a list of names.
        influence_src_dataset: the ``Dataset`` searched. activation_dir, model_id: where activations are cached.
        similarity_metric: ``f(test, train) -> (n_test, n_train)``; default :func:`cosine_similarity`.
        similarity_direction: ``"max"`` (larger is more similar) or ``"min"`` (a distance).
        batch_size: the batch size for the source set. ``replace_nan`` (keyword): the cosine similarity given
            to pairs with an all-zero activation (default -2 for ``"max"``, 2 for ``"min"``); such pairs are
            listed under the key ``"zero_acts-<layer>"`` as ``[test index, source index]`` rows.

    Example::

        >>> import torch, tempfile
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit.influence import SimilarityInfluence
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> train = TensorDataset(torch.randn(10, 3), torch.zeros(10))
        >>> sim = SimilarityInfluence(model, "0", train, tempfile.mkdtemp(), batch_size=4)
        >>> indices, scores = sim.influence(train.tensors[0][:2], top_k=3)["0"]
        >>> indices[:, 0].tolist()                       # each example is its own nearest neighbour
        [0, 1]
    """

    def __init__(self, module: nn.Module, layers: str | list[str], influence_src_dataset: Dataset,
                 activation_dir: str, model_id: str = "", similarity_metric: Callable = cosine_similarity,
                 similarity_direction: str = "max", batch_size: int = 1, **kwargs: Any) -> None:
        if similarity_direction not in ("max", "min"):
            raise ValueError(f"similarity_direction must be 'max' or 'min'; got {similarity_direction!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise TypeError(f"batch_size must be a positive int; got {batch_size!r}")
        self.module = module
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self._modules = [_module(module, name, "layers") for name in self.layers]
        self.influence_src_dataset = influence_src_dataset
        self.activation_dir, self.model_id = activation_dir, model_id
        self.similarity_direction, self.batch_size = similarity_direction, batch_size
        self.replace_nan = None
        if similarity_metric is cosine_similarity:
            self.replace_nan = kwargs.get("replace_nan", -2 if similarity_direction == "max" else 2)
            metric = similarity_metric
            similarity_metric = lambda a, b: metric(a, b, replace_nan=self.replace_nan)  # noqa: E731
        self.similarity_metric = similarity_metric

    def _activations(self, inputs, additional_forward_args=None) -> list[Tensor]:
        seen = {}
        handles = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o))
                   for n, m in zip(self.layers, self._modules)]
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        extra = () if additional_forward_args is None else (
            additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,))
        try:
            with torch.no_grad():
                self.module(*args, *extra)
        finally:
            for h in handles:
                h.remove()
        return [seen[n].detach() for n in self.layers]

    def _source_batches(self, load_from_disk: bool):
        """Each source batch's activations (a list, one per layer), from the cache when allowed."""
        folder = os.path.join(self.activation_dir, self.model_id or "model", "src")
        done = os.path.join(folder, "complete")
        if load_from_disk and os.path.exists(done):
            n = int(open(done).read())
            for i in range(n):
                yield torch.load(os.path.join(folder, f"{i}.pt"))
            return
        os.makedirs(folder, exist_ok=True)
        i = -1
        for i, batch in enumerate(DataLoader(self.influence_src_dataset, self.batch_size, shuffle=False)):
            acts = self._activations(batch[0] if isinstance(batch, (tuple, list)) else batch)
            torch.save(acts, os.path.join(folder, f"{i}.pt"))
            yield acts
        with open(done, "w") as f:
            f.write(str(i + 1))

    def influence(self, inputs: Tensor | tuple, top_k: int = 1, additional_forward_args: Any = None,
                  load_src_from_disk: bool = True, **kwargs: Any) -> dict:
        """``{layer: (indices, similarities)}``, each ``(n_test, top_k)``, most similar first."""
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int; got {top_k!r}")
        tests = self._activations(inputs, additional_forward_args)
        n_test = tests[0].shape[0]
        tops = [_TopK(top_k, self.similarity_direction == "max") for _ in self.layers]
        zeros = [[] for _ in self.layers]
        for acts in self._source_batches(load_src_from_disk):
            for li, (test, src) in enumerate(zip(tests, acts)):
                sims = self.similarity_metric(test, src)
                if sims.shape != (n_test, src.shape[0]):
                    raise ValueError(f"similarity_metric must return (n_test, n_source) = {(n_test, src.shape[0])}; "
                                     f"got {tuple(sims.shape)}")
                if self.replace_nan is not None:
                    flagged = (sims == self.replace_nan).nonzero()
                    zeros[li].append(flagged + torch.tensor([0, tops[li].seen], device=flagged.device))
                tops[li].add(sims)
        out = {}
        for layer, top, zero in zip(self.layers, tops, zeros):
            out[layer] = tuple(top.result())
            if zero and sum(len(z) for z in zero):
                out[f"zero_acts-{layer}"] = torch.cat(zero)
        return out
