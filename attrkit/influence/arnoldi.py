"""Influence functions at scale: the inverse Hessian from its top eigenpairs, found by the Arnoldi iteration."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vjp
from torch.utils.data import DataLoader, Dataset

from ._common import _load_flexible_state_dict, _progress
from .influence_function import NaiveInfluenceFunction


class ArnoldiInfluenceFunction(NaiveInfluenceFunction):
    """Influence functions whose inverse Hessian is a low-rank factor found with Hessian-vector products only.

    H. Schioppa, P. Zablotskaia, D. Vilar and A. Sokolov, "Scaling Up Influence Functions", AAAI 2022
    (https://arxiv.org/abs/2112.03052). The score is Koh & Liang's ``g(z')^T H^-1 g(z)`` (sign as in TracIn, see
    :class:`NaiveInfluenceFunction`), but ``H`` -- the Hessian of the total loss over ``hessian_dataset`` at
    ``checkpoint`` -- is never formed. The Arnoldi iteration builds an orthonormal basis ``Q`` of the Krylov
    subspace ``{b, Hb, H^2 b, ...}`` from a random start ``b`` (drawn from ``seed``), one Hessian-vector product
    (``torch.func``, forward over reverse) per step, together with ``T = Q H Q^T``. The top eigenpairs ``(l, u)`` of
    ``T + hessian_reg I`` above ``hessian_inverse_tol``, at most ``projection_dim`` of them, give ``V = Q^T u`` and
    ``R = V l^-1/2``, so ``H^-1 ~ R R^T``: each example is embedded as ``g(z)^T R`` and scores are inner products.

    Captum's arguments, defaults and numbers, with these notes:

    * ``arnoldi_dim`` counts as in Captum: ``arnoldi_dim - 1`` Hessian-vector products span a Krylov subspace of
      that dimension (Captum computes one more product and drops it).
    * The iteration stops early once the new direction's norm falls below ``arnoldi_tol`` (the subspace is then
      invariant under ``H``). Departure: Captum then drops the last basis vector too, so at full dimension it
      misses one direction of the Hessian; here it is kept, and with ``arnoldi_dim`` above the number of
      parameters the scores equal those of the exact :class:`NaiveInfluenceFunction` (tested).
    * ``seed`` seeds a private generator on the model's device, drawing ``b`` one parameter tensor at a time, as
      Captum draws it after ``torch.manual_seed(seed)`` -- the same start on the CPU, without resetting the
      caller's global random state (Captum resets it).
    * ``projection_on_cpu`` is accepted for compatibility; ``Q`` (``arnoldi_dim`` x parameters numbers) and ``R``
      stay on the model's device, so restrict ``layers`` on a small accelerator.

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit.influence import ArnoldiInfluenceFunction
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> train = TensorDataset(torch.randn(40, 3), torch.randint(0, 2, (40,)))
        >>> fn = ArnoldiInfluenceFunction(model, train, "trained", lambda m, p: 1.0, batch_size=10,
        ...                               loss_fn=torch.nn.CrossEntropyLoss(reduction="none"),
        ...                               projection_dim=5, arnoldi_dim=20)
        >>> fn.R.shape                                  # (parameters, kept eigenpairs)
        torch.Size([50, 5])
        >>> fn.influence((torch.randn(2, 3), torch.tensor([0, 1])), k=3).indices.shape
        torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset | DataLoader, checkpoint: str,
                 checkpoints_load_func: Callable[[nn.Module, str], float] = _load_flexible_state_dict,
                 layers: list[str] | None = None, loss_fn: Callable | None = None, batch_size: int | None = 1,
                 hessian_dataset: Dataset | DataLoader | None = None, test_loss_fn: Callable | None = None,
                 sample_wise_grads_per_batch: bool = False, projection_dim: int = 50, seed: int = 0,
                 arnoldi_dim: int = 200, arnoldi_tol: float = 1e-1, hessian_reg: float = 1e-3,
                 hessian_inverse_tol: float = 1e-4, projection_on_cpu: bool = True,
                 show_progress: bool = False) -> None:
        if not isinstance(arnoldi_dim, int) or isinstance(arnoldi_dim, bool) or arnoldi_dim < 2:
            raise ValueError(f"arnoldi_dim must be an int >= 2 (the Krylov subspace has arnoldi_dim - 1 "
                             f"dimensions); got {arnoldi_dim!r}")
        if projection_dim is not None and (not isinstance(projection_dim, int) or isinstance(projection_dim, bool)
                                           or projection_dim < 1):
            raise ValueError(f"projection_dim must be a positive int; got {projection_dim!r}")
        if not isinstance(arnoldi_tol, (int, float)) or arnoldi_tol < 0:
            raise ValueError(f"arnoldi_tol must be a non-negative number; got {arnoldi_tol!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int; got {seed!r}")
        self.arnoldi_dim, self.arnoldi_tol = arnoldi_dim, float(arnoldi_tol)
        super().__init__(model, train_dataset, checkpoint, checkpoints_load_func, layers, loss_fn, batch_size,
                         hessian_dataset, test_loss_fn, sample_wise_grads_per_batch, projection_dim, seed,
                         hessian_reg, hessian_inverse_tol, projection_on_cpu, show_progress)

    def _start_vector(self, flat: Tensor) -> Tensor:
        """Captum's random start: a normal draw per parameter tensor, in order, from a generator seeded ``seed``."""
        generator = torch.Generator(device=flat.device).manual_seed(self.seed)
        return torch.cat([torch.randn(self._ckpt.params[n].shape, generator=generator, device=flat.device,
                                      dtype=flat.dtype).flatten() for n in self._names])

    def _hessian_vector_product(self, flat: Tensor, v: Tensor) -> Tensor:
        """``H v`` with ``H`` the Hessian of the total loss over ``hessian_dataset`` (a sum over its batches)."""
        out = torch.zeros_like(flat)
        with torch.enable_grad():
            for batch in self.hessian_dataloader:
                gradient = grad(lambda f: self._batch_loss(f, batch))
                try:
                    out += jvp(gradient, (flat,), (v,))[1]
                except (NotImplementedError, RuntimeError):    # an operation without forward-mode AD
                    out += vjp(gradient, flat)[1](v)[0]          # H is symmetric: v^T H = (H v)^T
        return out

    def _projection(self, show_progress: bool) -> Tensor:
        flat = torch.cat([self._ckpt.params[n].flatten() for n in self._names])
        basis, restricted = _arnoldi(lambda v: self._hessian_vector_product(flat, v), self._start_vector(flat),
                                     self.arnoldi_dim - 1, self.arnoldi_tol, show_progress)
        vectors, values = self._kept_eigenpairs(restricted, "the Hessian restricted to the Krylov subspace",
                                               "raise hessian_reg or arnoldi_dim")
        return (basis.T @ vectors) * values.rsqrt()


def _arnoldi(hvp: Callable[[Tensor], Tensor], start: Tensor, steps: int, tol: float,
             show_progress: bool = False) -> tuple[Tensor, Tensor]:
    """``steps`` Arnoldi steps (Trefethen & Bau, lecture 33) from ``start``: an orthonormal basis ``Q`` (rows) of the
    Krylov subspace and ``Q A Q^T`` for the (symmetric) operator ``hvp``.

    Each new direction is orthogonalised twice against the whole basis (classical Gram-Schmidt, repeated: as
    stable as the modified form and one matrix product per pass). A direction whose remaining norm is below ``tol``
    ends the iteration: the subspace found so far is invariant, and all of it is returned.
    """
    basis = start.new_zeros(steps + 1, start.numel())
    coefficients = start.new_zeros(steps + 1, steps)
    basis[0] = start / start.norm()
    size = steps
    for j in _progress(range(steps), show_progress, "Arnoldi iteration"):
        v = hvp(basis[j])
        for _ in range(2):
            h = basis[:j + 1] @ v
            v = v - h @ basis[:j + 1]
            coefficients[:j + 1, j] += h
        coefficients[j + 1, j] = v.norm()
        if coefficients[j + 1, j] < tol:
            size = j + 1
            break
        basis[j + 1] = v / coefficients[j + 1, j]
    return basis[:size], coefficients[:size, :size]
