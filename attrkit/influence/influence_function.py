"""Influence functions (Koh & Liang 2017) with the exact Hessian: for models (or layers) with few parameters."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian
from torch.utils.data import DataLoader, Dataset

from ._common import (DataInfluence, KMostInfluentialResults, _as_batches, _load_flexible_state_dict,
                      _parameter_names, _per_example_grads, _progress, _reduction, _snapshot_checkpoints, _split,
                      _TopK, _train_loader)


class NaiveInfluenceFunction(DataInfluence):
    """Influence functions with the Hessian formed exactly and inverted through its eigen-decomposition.

    P. W. Koh and P. Liang, "Understanding Black-box Predictions via Influence Functions", ICML 2017
    (https://arxiv.org/abs/1703.04730): the influence of training example ``z`` on test example ``z'`` is
    ``g(z')^T H^-1 g(z)`` with ``g`` the loss gradients at the trained ``checkpoint`` and ``H`` the Hessian of the
    total training loss (the sum over ``hessian_dataset``, default the training set). As in Captum, the sign is
    that of TracIn (positive: a proponent; Koh & Liang's "upweighting" influence is its negative), ``H + hessian_reg
    I`` is used, eigenvalues at or below ``hessian_inverse_tol`` are dropped and at most the ``projection_dim``
    largest kept, so each example is embedded as ``g(z)^T V L^-1/2`` and scores are inner products.

    The Hessian has ``parameters^2`` entries: restrict ``layers`` to a few thousand parameters. ``seed`` is
    accepted for Captum compatibility (nothing here is random; the global random state is left alone).

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit.influence import NaiveInfluenceFunction
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(3, 2)
        >>> train = TensorDataset(torch.randn(40, 3), torch.randint(0, 2, (40,)))
        >>> fn = NaiveInfluenceFunction(model, train, "trained", lambda m, p: 1.0, batch_size=10,
        ...                             loss_fn=torch.nn.CrossEntropyLoss(reduction="none"))
        >>> fn.influence((torch.randn(2, 3), torch.tensor([0, 1]))).shape
        torch.Size([2, 40])
        >>> bool((fn.self_influence() > 0).all())
        True
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset | DataLoader, checkpoint: str,
                 checkpoints_load_func: Callable[[nn.Module, str], float] = _load_flexible_state_dict,
                 layers: list[str] | None = None, loss_fn: Callable | None = None, batch_size: int | None = 1,
                 hessian_dataset: Dataset | DataLoader | None = None, test_loss_fn: Callable | None = None,
                 sample_wise_grads_per_batch: bool = False, projection_dim: int | None = 50, seed: int = 42,
                 hessian_reg: float = 1e-6, hessian_inverse_tol: float = 1e-5, projection_on_cpu: bool = True,
                 show_progress: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model, self.checkpoint, self.checkpoints_load_func = model, checkpoint, checkpoints_load_func
        self.train_dataset = train_dataset
        self.train_dataloader = _train_loader(train_dataset, batch_size)
        self.hessian_dataloader = (self.train_dataloader if hessian_dataset is None
                                   else _train_loader(hessian_dataset, batch_size, "hessian_dataset"))
        self.loss_fn = loss_fn
        self.test_loss_fn = loss_fn if test_loss_fn is None else test_loss_fn
        self.sample_wise_grads_per_batch = bool(sample_wise_grads_per_batch)
        self.reduction_type = _reduction(loss_fn, "loss_fn", self.sample_wise_grads_per_batch)
        if loss_fn is None and self.sample_wise_grads_per_batch is False:
            self.reduction_type = "none"
        self.test_reduction_type = (self.reduction_type if test_loss_fn is None else
                                    _reduction(test_loss_fn, "test_loss_fn", self.sample_wise_grads_per_batch))
        self.projection_dim, self.seed = projection_dim, seed
        self.hessian_reg, self.hessian_inverse_tol = hessian_reg, hessian_inverse_tol
        self._names = _parameter_names(model, layers)
        self._ckpt = _snapshot_checkpoints(model, [checkpoint], checkpoints_load_func)[0]
        self.R = self._projection(show_progress)

    def _batch_loss(self, flat: Tensor, batch) -> Tensor:
        """The batch's total loss (a sum over its examples) as a function of the flattened parameters."""
        features, labels = _split(batch)
        params, start = dict(self._ckpt.params), 0
        for n in self._names:
            size = params[n].numel()
            params[n] = flat[start:start + size].view_as(self._ckpt.params[n])
            start += size
        out = functional_call(self.model, ({**params, **self._ckpt.buffers}), features)
        if self.loss_fn is None:
            return out.sum()
        loss = self.loss_fn(out, labels)
        return loss * out.shape[0] if self.reduction_type == "mean" else loss.sum()

    def _projection(self, show_progress: bool) -> Tensor:
        flat = torch.cat([self._ckpt.params[n].flatten() for n in self._names])
        H = None
        with torch.enable_grad():
            for batch in _progress(self.hessian_dataloader, show_progress, "Hessian over hessian_dataset"):
                h = hessian(self._batch_loss)(flat, batch)
                H = h if H is None else H + h
        if H is None:
            raise ValueError("hessian_dataset is empty")
        vectors, values = self._kept_eigenpairs(H, "the Hessian")
        return vectors * values.rsqrt()

    def _kept_eigenpairs(self, H: Tensor, what: str, remedy: str = "raise hessian_reg") -> tuple[Tensor, Tensor]:
        """Eigenvectors (columns, a fixed sign each) and eigenvalues of the symmetrised ``H`` plus ``hessian_reg``:
        those above ``hessian_inverse_tol``, at most the ``projection_dim`` largest."""
        values, vectors = torch.linalg.eigh((H + H.T) / 2)
        values = values + self.hessian_reg
        keep = values > self.hessian_inverse_tol
        values, vectors = values[keep], vectors[:, keep]
        if self.projection_dim is not None:
            values, vectors = values[-self.projection_dim:], vectors[:, -self.projection_dim:]
        if values.numel() == 0:
            raise ValueError(f"{what} has no eigenvalue above hessian_inverse_tol, so it cannot be inverted; "
                             f"{remedy}")
        return vectors * torch.where(vectors.sum(0) > 0, 1.0, -1.0), values   # Captum's sign for each direction

    def compute_intermediate_quantities(self, inputs_dataset, aggregate: bool = False, show_progress: bool = False,
                                        return_on_cpu: bool = True, test: bool = False) -> Tensor:
        """Each example's embedding ``g(z)^T V L^-1/2`` (``(n, kept eigenvalues)``); ``aggregate`` sums them."""
        loss_fn = self.test_loss_fn if test else self.loss_fn
        rows = [_per_example_grads(self.model, self._ckpt, self._names, batch, loss_fn) @ self.R
                for batch in _progress(_as_batches(inputs_dataset, "inputs_dataset"), show_progress, "embeddings")]
        out = torch.cat(rows)
        if aggregate:
            out = out.sum(0, keepdim=True)
        return out.cpu() if return_on_cpu else out

    def influence(self, inputs, k: int | None = None, proponents: bool = True,
                  show_progress: bool = False) -> Tensor | KMostInfluentialResults:
        """Scores ``(n_test, n_train)`` (``k=None``) or the ``k`` strongest proponents/opponents per test example;
        the training set streams through its ``DataLoader``."""
        if inputs is None:
            raise ValueError("inputs is required; for the influence of examples on themselves call self_influence()")
        test = self.compute_intermediate_quantities(inputs, return_on_cpu=False, test=True)
        top = None if k is None else _TopK(k, proponents)
        blocks = []
        for batch in _progress(self.train_dataloader, show_progress, f"{self.get_name()}: training batches"):
            block = test @ self.compute_intermediate_quantities(batch, return_on_cpu=False).T
            blocks.append(block) if top is None else top.add(block)
        return torch.cat(blocks, 1) if top is None else top.result()

    def self_influence(self, inputs_dataset=None, show_progress: bool = False) -> Tensor:
        """``g(z)^T H^-1 g(z)`` for each example (default: the training set)."""
        data = self.train_dataloader if inputs_dataset is None else _as_batches(inputs_dataset, "inputs_dataset")
        return torch.cat([self.compute_intermediate_quantities(b, return_on_cpu=False).pow(2).sum(1)
                          for b in _progress(data, show_progress, f"{self.get_name()}: self influence")])
