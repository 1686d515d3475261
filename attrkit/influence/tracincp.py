"""TracIn with saved checkpoints (Pruthi et al. 2020): the base class and the method on any set of parameters."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ._common import (DataInfluence, KMostInfluentialResults, _as_batches, _checkpoint_list, _load_flexible_state_dict,
                      _parameter_names, _per_example_grads, _progress, _reduction, _snapshot_checkpoints, _TopK,
                      _train_loader)


class TracInCPBase(DataInfluence):
    """What every TracIn variant shares: a model, a training set that streams through a ``DataLoader``, the saved
    checkpoints and the loss.

    TracIn (G. Pruthi, F. Liu, S. Kale, M. Sundararajan, "Estimating Training Data Influence by Tracing Gradient
    Descent", NeurIPS 2020, https://arxiv.org/abs/2002.08484) scores a training example ``z`` for a test example
    ``z'`` by ``sum_c lr_c * grad L(z'; w_c) . grad L(z; w_c)`` over the checkpoints ``w_c``: how much the steps
    taken on ``z`` lowered the loss on ``z'`` (positive: a *proponent*; negative: an *opponent*).

    Args:
        model: the network; it is called as ``model(*features)``.
        train_dataset: a ``Dataset`` or a ``DataLoader`` whose items/batches are tuples ``(*features, label)``.
        checkpoints: a directory (every file in it, numbers sorted naturally), a list of paths, or an iterator.
        checkpoints_load_func: ``f(model, path) -> learning rate`` loads a checkpoint into the model; the default
            reads a ``torch.save``-d state dict and its optional ``"learning_rate"`` entry (else 1).
        loss_fn: the training loss (``None``: the model's output itself is differentiated).
        batch_size: the batch size of the ``DataLoader`` made from a ``Dataset`` (ignored for a ``DataLoader``).
        test_loss_fn: the loss for the test examples (default: ``loss_fn``).

    Every checkpoint is loaded once (its weights copied) and the model's own weights are put back afterwards;
    Captum instead leaves the last checkpoint loaded in the model. Example::

        >>> import torch
        >>> from attrkit.influence import TracInCPBase, TracInCP
        >>> issubclass(TracInCP, TracInCPBase), TracInCP.get_name()
        (True, 'TracInCP')
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset | DataLoader, checkpoints,
                 checkpoints_load_func: Callable[[nn.Module, str], float] = _load_flexible_state_dict,
                 loss_fn: Callable | None = None, batch_size: int | None = 1,
                 test_loss_fn: Callable | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not callable(checkpoints_load_func):
            raise TypeError("checkpoints_load_func must be callable as f(model, path) -> learning rate")
        self.model = model
        self.checkpoints = checkpoints
        self.checkpoints_load_func = checkpoints_load_func
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.batch_size = batch_size
        self.train_dataset = train_dataset
        self.train_dataloader = _train_loader(train_dataset, batch_size)
        try:
            self.train_dataloader_len = len(self.train_dataloader)
        except TypeError:
            self.train_dataloader_len = None
        self._snapshots = None

    @property
    def checkpoints(self) -> list[str]:
        return self._checkpoints

    @checkpoints.setter
    def checkpoints(self, checkpoints) -> None:
        self._checkpoints = _checkpoint_list(checkpoints)
        self._snapshots = None

    def _states(self):
        """Every checkpoint's learning rate and weights, loaded once."""
        if self._snapshots is None:
            self._snapshots = _snapshot_checkpoints(self.model, self._checkpoints, self.checkpoints_load_func)
        return self._snapshots

    @abstractmethod
    def self_influence(self, inputs=None, show_progress: bool = False) -> Tensor:
        """Each example's influence on itself (default: every training example)."""

    @abstractmethod
    def influence(self, inputs, k: int | None = None, proponents: bool = True,
                  show_progress: bool = False) -> Tensor | KMostInfluentialResults:
        """Scores ``(n_test, n_train)`` when ``k`` is None, else the ``k`` strongest proponents/opponents."""

    def _route(self, inputs, k, proponents, show_progress, **kwargs):
        if inputs is None:
            raise ValueError("inputs is required; for the influence of examples on themselves call self_influence()")
        if k is None:
            return self._influence(inputs, show_progress=show_progress, **kwargs)
        return self._get_k_most_influential(inputs, k, proponents, show_progress=show_progress, **kwargs)

    def _stream_scores(self, block_fn, k, proponents, show_progress, desc, batches=None):
        """Score every training batch with ``block_fn(batch) -> (n_test, batch)``: all scores or a running top-k.

        ``batches`` replaces the training loader's batches (with whatever ``block_fn`` reads from them)."""
        top = None if k is None else _TopK(k, proponents)
        blocks = []
        for batch in _progress(self.train_dataloader if batches is None else batches, show_progress, desc):
            block = block_fn(batch)
            if top is None:
                blocks.append(block)
            else:
                top.add(block)
        if top is not None:
            return top.result()
        if not blocks:
            raise ValueError("train_dataset is empty")
        return torch.cat(blocks, 1)

    def _influence(self, inputs, show_progress=False, **kwargs):
        return self._scores(inputs, None, True, show_progress, **kwargs)

    def _get_k_most_influential(self, inputs, k=5, proponents=True, show_progress=False, **kwargs):
        return self._scores(inputs, k, proponents, show_progress, **kwargs)

    @abstractmethod
    def _scores(self, inputs, k, proponents, show_progress, **kwargs):
        """All scores (``k`` None) or the top-k, over the streamed training set."""


class TracInCP(TracInCPBase):
    """TracIn on the gradients of all trainable parameters, or of the parameters of chosen ``layers``.

    Pruthi et al., "Estimating Training Data Influence by Tracing Gradient Descent", NeurIPS 2020
    (https://arxiv.org/abs/2002.08484): ``influence(z', z) = sum_c lr_c * g_c(z') . g_c(z)`` with ``g_c`` the
    gradient of an example's loss at checkpoint ``c``. Per-example gradients are computed in one pass per batch
    with ``torch.func.vmap``; the training set streams batch by batch, so memory holds one batch of gradients and
    the test examples' gradients (``n_test x parameters x checkpoints``).

    Args (besides :class:`TracInCPBase`'s):
        layers: names of the modules whose parameters count (default: every trainable parameter). The model is
            not modified (Captum turns ``requires_grad`` on for these layers).
        sample_wise_grads_per_batch: as in Captum, declares the kind of ``loss_fn``: ``False`` -- a per-example
            loss (``reduction="none"``); ``True`` -- a batch loss (``"sum"`` or ``"mean"``, a mean is undone). The
            gradients are the same exact per-example gradients either way; Captum's ``True`` path only covers
            ``nn.Linear`` and ``nn.Conv2d`` parameters and silently leaves out the others, attrkit keeps them.

    Example::

        >>> import torch, tempfile, os
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit.influence import TracInCP
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(3, 2)
        >>> train = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
        >>> folder = tempfile.mkdtemp()
        >>> torch.save(model.state_dict(), os.path.join(folder, "epoch1.pt"))
        >>> tracin = TracInCP(model, train, folder, loss_fn=torch.nn.CrossEntropyLoss(reduction="none"),
        ...                   batch_size=8)
        >>> test = (torch.randn(4, 3), torch.tensor([0, 1, 1, 0]))
        >>> tracin.influence(test).shape                       # every training example's score
        torch.Size([4, 20])
        >>> indices, scores = tracin.influence(test, k=3)      # the three strongest proponents
        >>> indices.shape, bool((scores[:, 0] >= scores[:, 1]).all())
        (torch.Size([4, 3]), True)
        >>> tracin.self_influence().shape
        torch.Size([20])
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset | DataLoader, checkpoints,
                 checkpoints_load_func: Callable[[nn.Module, str], float] = _load_flexible_state_dict,
                 layers: list[str] | None = None, loss_fn: Callable | None = None, batch_size: int | None = 1,
                 test_loss_fn: Callable | None = None, sample_wise_grads_per_batch: bool = False) -> None:
        super().__init__(model, train_dataset, checkpoints, checkpoints_load_func, loss_fn, batch_size, test_loss_fn)
        self.sample_wise_grads_per_batch = bool(sample_wise_grads_per_batch)
        self.reduction_type = _reduction(loss_fn, "loss_fn", self.sample_wise_grads_per_batch)
        self.test_reduction_type = (self.reduction_type if test_loss_fn is None else
                                    _reduction(test_loss_fn, "test_loss_fn", self.sample_wise_grads_per_batch))
        self.layers = layers
        self._names = _parameter_names(model, layers)

    def _grads(self, ckpt, batch, loss_fn) -> Tensor:
        return _per_example_grads(self.model, ckpt, self._names, batch, loss_fn)

    def _test_vectors(self, inputs, aggregate: bool, loss_fn) -> list[Tensor]:
        """``lr_c * g_c(z')`` for each checkpoint: ``(n_test, parameters)`` or, with ``aggregate``, their sum."""
        vectors = []
        for ckpt in self._states():
            rows = [self._grads(ckpt, batch, loss_fn) for batch in _as_batches(inputs)]
            g = torch.cat(rows) if not aggregate else sum(r.sum(0, keepdim=True) for r in rows)
            vectors.append(g * ckpt.learning_rate)
        return vectors

    def _scores(self, inputs, k, proponents, show_progress, aggregate: bool = False):
        tests = self._test_vectors(inputs, aggregate, self.test_loss_fn)

        def block(batch):
            return sum(t @ self._grads(ckpt, batch, self.loss_fn).T for t, ckpt in zip(tests, self._states()))

        return self._stream_scores(block, k, proponents, show_progress,
                                   f"{self.get_name()}: training batches")

    def influence(self, inputs, k: int | None = None, proponents: bool = True, show_progress: bool = False,
                  aggregate: bool = False) -> Tensor | KMostInfluentialResults:
        """TracIn scores of every training example for each example of ``inputs``.

        ``inputs`` is a tuple ``(*features, labels)`` or a ``DataLoader`` of them. ``k=None`` returns a tensor
        ``(n_test, n_train)``; an int returns :class:`KMostInfluentialResults` with the ``k`` largest
        (``proponents=True``) or smallest (opponents) scores per test example, kept while the training set streams.
        ``aggregate=True`` scores against the sum of the test examples' gradients (one row).
        """
        return self._route(inputs, k, proponents, show_progress, aggregate=aggregate)

    def self_influence(self, inputs=None, show_progress: bool = False,
                       outer_loop_by_checkpoints: bool = False) -> Tensor:
        """``sum_c lr_c * |g_c(z)|^2`` for each example of ``inputs`` (default: the training set).

        Large values flag examples the model found hard to fit -- often mislabeled ones. The loop order
        argument is accepted for Captum compatibility; every checkpoint is loaded once either way.
        """
        data = self.train_dataloader if inputs is None else _as_batches(inputs)
        out = []
        for batch in _progress(data, show_progress, f"{self.get_name()}: self influence"):
            out.append(sum(self._grads(ckpt, batch, self.loss_fn).pow(2).sum(1) * ckpt.learning_rate
                           for ckpt in self._states()))
        return torch.cat(out)

    def compute_intermediate_quantities(self, inputs, aggregate: bool = False) -> Tensor:
        """Each example's ``lr_c``-scaled gradients at every checkpoint, side by side: ``(n, parameters x
        checkpoints)`` (with ``aggregate``, their sum over the examples: one row)."""
        return torch.cat(self._test_vectors(inputs, aggregate, self.loss_fn), 1)
