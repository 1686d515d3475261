"""TracIn on the last fully-connected layer in closed form, and its random-projection index for fast queries."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from ._common import (KMostInfluentialResults, _as_batches, _load_flexible_state_dict, _module, _progress,
                      _reduction, _split, _TopK)
from .tracincp import TracInCPBase


class TracInCPFast(TracInCPBase):
    """TracIn restricted to the weight of the last fully-connected layer, without forming any gradient.

    Pruthi et al., "Estimating Training Data Influence by Tracing Gradient Descent", NeurIPS 2020
    (https://arxiv.org/abs/2002.08484), section 3.2. For ``y = W a + b`` the gradient of the loss with respect to
    ``W`` is the outer product ``(dL/dy) a^T``, so the dot product of two such gradients factorises:
    ``(dL/dy . dL/dy') * (a . a')``. One forward pass per batch and checkpoint gives both factors; nothing of size
    ``|W|`` is ever built. As in Captum the bias is left out, ``dL/dy`` is taken with respect to the *model's
    output* (so ``final_fc_layer`` must produce it, as a ``(batch, outputs)`` tensor), and ``loss_fn`` must reduce
    the batch by ``"sum"`` or ``"mean"`` (a mean is undone).

    Args (besides :class:`TracInCPBase`'s): ``final_fc_layer`` -- the layer (module or name) whose input ``a`` is
    used; ``vectorize`` is accepted for Captum compatibility (the Jacobian is one backward pass here).

    The training set's factors are computed on the first pass and kept (while they fit in ``cache_bytes``, 256 MiB,
    and the loader does not shuffle), so further ``influence`` / ``self_influence`` calls on the same object --
    proponents, then opponents, then self influence, as Captum's tutorial asks -- run no forward pass on the
    training set; Captum runs one per call. Assign ``checkpoints`` again to recompute.

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit.influence import TracInCPFast
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> train = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
        >>> load = lambda m, path: 1.0                        # one "checkpoint": the model as it is
        >>> fast = TracInCPFast(model, "2", train, ["now"], load, loss_fn=torch.nn.CrossEntropyLoss(), batch_size=8)
        >>> fast.self_influence().shape
        torch.Size([20])
        >>> fast.influence((torch.randn(2, 3), torch.tensor([1, 0])), k=5, proponents=False).indices.shape
        torch.Size([2, 5])
    """

    def __init__(self, model: nn.Module, final_fc_layer: nn.Module | str, train_dataset: Dataset | DataLoader,
                 checkpoints, checkpoints_load_func: Callable[[nn.Module, str], float] = _load_flexible_state_dict,
                 loss_fn: Callable | None = None, batch_size: int | None = 1, test_loss_fn: Callable | None = None,
                 vectorize: bool = False) -> None:
        super().__init__(model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size, test_loss_fn)
        if loss_fn is None:
            raise ValueError(f"loss_fn is required by {self.get_name()} (a loss with reduction 'sum' or 'mean')")
        self.final_fc_layer = _module(model, final_fc_layer, "final_fc_layer")
        self.vectorize = vectorize
        self.reduction_type = _reduction(loss_fn, "loss_fn", True)
        self.test_reduction_type = (self.reduction_type if test_loss_fn is None else
                                    _reduction(test_loss_fn, "test_loss_fn", True))
        self.cache_bytes, self._cache = 256 * 2 ** 20, None

    def _factors(self, ckpt, batch, loss_fn, reduction) -> tuple[Tensor, Tensor]:
        """``dL/dy`` (batch, outputs) and the flattened input ``a`` of the final layer (batch, inputs)."""
        features, labels = _split(batch)
        seen = {}
        handle = self.final_fc_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("a", i[0]))
        try:
            with torch.no_grad():
                out = functional_call(self.model, ({**ckpt.params, **ckpt.buffers}), features)
        finally:
            handle.remove()
        if "a" not in seen:
            raise ValueError("final_fc_layer was not called in the model's forward pass")
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"{self.get_name()} needs the model's output as (batch, outputs); got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        out = out.detach().requires_grad_()
        with torch.enable_grad():
            loss = loss_fn(out, labels)
            if loss.dim() != 0:
                raise ValueError("loss_fn must reduce the batch to one number ('sum' or 'mean')")
            (jac,) = torch.autograd.grad(loss, out)
        if reduction == "mean":
            jac = jac * out.shape[0]
        return jac, seen["a"].detach().reshape(out.shape[0], -1)

    def _train_factors(self):
        """Per training batch, ``[(dL/dy, a) per checkpoint]``: streamed on the first pass, then from a cache.

        The first full pass keeps the factors when they fit in ``cache_bytes`` and the loader's order is fixed (a
        sequential sampler); later ``influence`` and ``self_influence`` calls then run no forward pass on the
        training set. Setting ``checkpoints`` again empties the cache.
        """
        states, loader = self._states(), self.train_dataloader
        if self._cache is not None and self._cache[0] is states and self._cache[1] is loader:
            yield from self._cache[2]
            return
        kept, size = ([] if _fixed_order(loader) else None), 0
        for batch in loader:
            factors = [self._factors(ckpt, batch, self.loss_fn, self.reduction_type) for ckpt in states]
            if kept is not None:
                size += sum(j.nbytes + a.nbytes for j, a in factors)
                if size <= self.cache_bytes:
                    kept.append(factors)
                else:
                    kept = None
            yield factors
        if kept is not None:
            self._cache = (states, loader, kept)

    def _scores(self, inputs, k, proponents, show_progress):
        tests = [[self._factors(ckpt, b, self.test_loss_fn, self.test_reduction_type) for b in _as_batches(inputs)]
                 for ckpt in self._states()]
        tests = [(torch.cat([j for j, _ in t]) * c.learning_rate, torch.cat([a for _, a in t]))
                 for t, c in zip(tests, self._states())]

        def block(factors):
            total = 0
            for (jt, at), (j, a) in zip(tests, factors):
                total = total + (jt @ j.T) * (at @ a.T)
            return total

        return self._stream_scores(block, k, proponents, show_progress, f"{self.get_name()}: training batches",
                                   batches=self._train_factors())

    def influence(self, inputs, k: int | None = None, proponents: bool = True,
                  show_progress: bool = False) -> Tensor | KMostInfluentialResults:
        """Scores ``(n_test, n_train)`` (``k=None``) or the ``k`` strongest proponents/opponents per test
        example; ``inputs`` is a tuple ``(*features, labels)`` or a ``DataLoader`` of them."""
        return self._route(inputs, k, proponents, show_progress)

    def self_influence(self, inputs=None, show_progress: bool = False,
                       outer_loop_by_checkpoints: bool = False) -> Tensor:
        """``sum_c lr_c * |dL/dy|^2 * |a|^2`` for each example of ``inputs`` (default: the training set)."""
        if inputs is None:
            data = self._train_factors()
        else:
            data = ([self._factors(ckpt, batch, self.loss_fn, self.reduction_type) for ckpt in self._states()]
                    for batch in _as_batches(inputs))
        out = []
        for factors in _progress(data, show_progress, f"{self.get_name()}: self influence"):
            total = 0
            for (j, a), ckpt in zip(factors, self._states()):
                total = total + j.pow(2).sum(1) * a.pow(2).sum(1) * ckpt.learning_rate
            out.append(total)
        if not out:
            raise ValueError("train_dataset is empty" if inputs is None else "inputs has no batch")
        return torch.cat(out)


def _fixed_order(loader) -> bool:
    """Whether every pass over ``loader`` yields the same batches in the same order (a sequential sampler)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    return (isinstance(loader, DataLoader) and isinstance(batch_sampler, BatchSampler)
            and isinstance(batch_sampler.sampler, SequentialSampler))


class NearestNeighbors(ABC):
    """An index over vectors answering "which stored vectors have the largest inner product with this query?"
    (Captum's interface: ``setup(data)`` then ``get_nearest_neighbors(query, k) -> (indices, scores)``).

    Example::

        >>> from attrkit.influence import NearestNeighbors, TopKNearestNeighbors
        >>> issubclass(TopKNearestNeighbors, NearestNeighbors)
        True
    """

    @abstractmethod
    def setup(self, data: Tensor) -> None:
        """Index ``data`` (one vector per row)."""

    @abstractmethod
    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """For each row of ``query``: the ``k`` rows of ``data`` with the largest inner product, and the products."""


class TopKNearestNeighbors(NearestNeighbors):
    """Exact maximum-inner-product search with ``torch.topk``, ``chunk_size`` stored rows at a time.

    Every query costs one matrix product with all stored vectors: at 10k training examples and a few hundred
    dimensions a query takes about a millisecond on a CPU. It stays fine up to a few million rows x a few hundred
    dimensions (the index is the ``(N, d)`` tensor itself); beyond that, or for many queries, an approximate index
    (Annoy, FAISS) fits behind the same two methods. Captum's default is Annoy (approximate, an extra package).

    Example::

        >>> import torch
        >>> index = TopKNearestNeighbors()
        >>> index.setup(torch.eye(3))
        >>> index.get_nearest_neighbors(torch.tensor([[0.0, 2.0, 1.0]]), k=2)
        (tensor([[1, 2]]), tensor([[2., 1.]]))
    """

    def __init__(self, chunk_size: int = 65536) -> None:
        self.chunk_size = chunk_size
        self.data = None

    def setup(self, data: Tensor) -> None:
        self.data = data.reshape(data.shape[0], -1)

    def get_nearest_neighbors(self, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if self.data is None:
            raise ValueError("call setup(data) before get_nearest_neighbors")
        query = query.reshape(query.shape[0], -1)
        top = _TopK(k, proponents=True)
        for start in range(0, self.data.shape[0], self.chunk_size):
            top.add(query @ self.data[start:start + self.chunk_size].T)
        return tuple(top.result())


class TracInCPFastRandProj(TracInCPFast):
    """:class:`TracInCPFast` with the training set's gradients kept as a small index, for fast repeated queries.

    Pruthi et al., "Estimating Training Data Influence by Tracing Gradient Descent", NeurIPS 2020
    (https://arxiv.org/abs/2002.08484), section 3.2. Each example becomes the vector
    ``sqrt(lr_c) * vec((dL/dy) P_1 (a P_2)^T)`` per checkpoint (concatenated), so TracIn scores are inner
    products and proponents are maximum-inner-product neighbours. With ``projection_dim``, ``dL/dy`` and ``a`` are
    first multiplied by Gaussian matrices of ``sqrt(projection_dim)`` columns each (entries of variance
    ``1/columns``; Johnson-Lindenstrauss), which keeps scores in expectation. The index is built once, in
    ``__init__``, streaming the training set; it holds ``n_train x checkpoints x projection_dim`` numbers.

    Args (besides :class:`TracInCPFast`'s): ``nearest_neighbors`` -- a :class:`NearestNeighbors` (default
    :class:`TopKNearestNeighbors`, exact); ``projection_dim`` -- ``None`` for no projection; ``seed`` -- seeds
    the projection: drawn as Captum draws it after ``torch.manual_seed(seed)`` (the same matrices), inside
    ``torch.random.fork_rng``, so the caller's global random state is left as it was (Captum resets it). Training
    examples use ``loss_fn`` (Captum uses ``test_loss_fn`` for them too). As in Captum, ``influence`` defaults to
    ``k=5`` and ``self_influence`` is not offered (use :class:`TracInCPFast`).

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit.influence import TracInCPFastRandProj
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        >>> train = TensorDataset(torch.randn(30, 3), torch.randint(0, 4, (30,)))
        >>> proj = TracInCPFastRandProj(model, "2", train, ["now"], lambda m, p: 1.0,
        ...                             loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), batch_size=10,
        ...                             projection_dim=9, seed=1)
        >>> proj.src_intermediate_quantities.shape               # 3 x 3 projected numbers per example
        torch.Size([30, 9])
        >>> proj.influence((torch.randn(2, 3), torch.tensor([0, 3])), k=4).indices.shape
        torch.Size([2, 4])
    """

    def __init__(self, model: nn.Module, final_fc_layer: nn.Module | str, train_dataset: Dataset | DataLoader,
                 checkpoints, checkpoints_load_func: Callable[[nn.Module, str], float] = _load_flexible_state_dict,
                 loss_fn: Callable | None = None, batch_size: int | None = 1, test_loss_fn: Callable | None = None,
                 vectorize: bool = False, nearest_neighbors: NearestNeighbors | None = None,
                 projection_dim: int | None = None, seed: int = 0) -> None:
        super().__init__(model, final_fc_layer, train_dataset, checkpoints, checkpoints_load_func, loss_fn,
                         batch_size, test_loss_fn, vectorize)
        if projection_dim is not None and (not isinstance(projection_dim, int) or projection_dim < 1):
            raise ValueError(f"projection_dim must be a positive int or None; got {projection_dim!r}")
        self.projection_dim, self.seed = projection_dim, seed
        self.nearest_neighbors = TopKNearestNeighbors() if nearest_neighbors is None else nearest_neighbors
        self.projection_quantities = self._projections()
        self.src_intermediate_quantities = self._quantities(self.train_dataloader, self.loss_fn, self.reduction_type)
        self.nearest_neighbors.setup(self.src_intermediate_quantities)

    def _projections(self):
        if self.projection_dim is None:
            return None
        with torch.random.fork_rng(devices=[]):    # Captum's draws from the seeded CPU generator, then restored
            torch.default_generator.manual_seed(self.seed)   # (torch.manual_seed would reseed accelerators too)
            first = next(iter(self.train_dataloader))  # a DataLoader's iterator takes one number from that state
            jac, act = self._factors(self._states()[0], first, self.loss_fn, self.reduction_type)
            n_out, n_in = jac.shape[1], act.shape[1]
            if n_out * n_in <= self.projection_dim:
                return None
            side = int(self.projection_dim ** 0.5)
            p_out, p_in = min(side, n_out), min(side, n_in)
            proj_out = torch.normal(torch.zeros(n_out, p_out), 1.0 / p_out ** 0.5)
            proj_in = torch.normal(torch.zeros(n_in, p_in), 1.0 / p_in ** 0.5)
        return (proj_out.to(jac.device, jac.dtype), proj_in.to(act.device, act.dtype))

    def _quantities(self, batches, loss_fn, reduction) -> Tensor:
        rows = []
        for batch in batches:
            per_ckpt = []
            for ckpt in self._states():
                jac, act = self._factors(ckpt, batch, loss_fn, reduction)
                if self.projection_quantities is not None:
                    jac, act = jac @ self.projection_quantities[0], act @ self.projection_quantities[1]
                per_ckpt.append((jac[:, :, None] * act[:, None, :]).flatten(1) * ckpt.learning_rate ** 0.5)
            rows.append(torch.cat(per_ckpt, 1))
        return torch.cat(rows)

    def compute_intermediate_quantities(self, inputs) -> Tensor:
        """The index vectors of ``inputs`` (a tuple ``(*features, labels)`` or a ``DataLoader``)."""
        return self._quantities(_as_batches(inputs), self.loss_fn, self.reduction_type)

    def influence(self, inputs=None, k: int | None = 5, proponents: bool = True) -> Tensor | KMostInfluentialResults:
        """The ``k`` (default 5) strongest proponents/opponents from the index, or all scores with ``k=None``."""
        if inputs is None:
            raise ValueError("inputs is required; TracInCPFastRandProj offers no self influence "
                             "(use TracInCPFast.self_influence)")
        query = self._quantities(_as_batches(inputs), self.test_loss_fn, self.test_reduction_type)
        if k is None:
            return query @ self.src_intermediate_quantities.T
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int or None; got {k!r}")
        sign = 1.0 if proponents else -1.0
        indices, scores = self.nearest_neighbors.get_nearest_neighbors(query * sign, k)
        return KMostInfluentialResults(indices, scores * sign)

    def self_influence(self, inputs=None, show_progress: bool = False,
                       outer_loop_by_checkpoints: bool = False) -> Tensor:
        raise NotImplementedError("TracInCPFastRandProj has no self influence: projections only approximate it "
                                  "and save nothing there; use TracInCPFast.self_influence")
