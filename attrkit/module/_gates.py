"""Learnable stochastic gates for feature selection: multiply each input feature (or group of features) by a
random gate in [0, 1] whose distribution is learned, and pay an L0-like penalty for every gate likely open.

Same API and numbers as ``captum.module`` (0.9): the parameters are initialised and the gates sampled with the
same random draws, so a shared seed gives the same outputs.
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

_REDUCTIONS = ("none", "mean", "sum")


class StochasticGatesBase(nn.Module, ABC):
    """Base of the gates: ``forward(x)`` returns ``(x * gates, regularisation)``.

    Args:
        n_gates: the number of gates.
        mask: optional integer tensor mapping each input element to its gate (values ``0 .. n_gates-1``),
            broadcastable to one example's shape (with or without a leading batch dimension of 1); without it
            each example must have exactly ``n_gates`` elements, one gate each.
        reg_weight: the weight of the regularisation term.
        reg_reduction: ``"sum"``, ``"mean"`` or ``"none"`` over the gates' probabilities of being active.

    In training mode gates are sampled; in eval mode they take their expected (deterministic) values.
    """

    mask: Optional[Tensor]

    def __init__(self, n_gates: int, mask: Optional[Tensor] = None, reg_weight: float = 1.0,
                 reg_reduction: str = "sum") -> None:
        super().__init__()
        if isinstance(n_gates, bool) or not isinstance(n_gates, numbers.Integral) or n_gates < 1:
            raise ValueError(f"`n_gates` must be a positive int, got {n_gates!r}.")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.is_floating_point() or mask.dtype == torch.bool:
                raise TypeError("`mask` must be an integer tensor of gate indices.")
            if int(mask.min()) < 0 or int(mask.max()) != n_gates - 1:
                raise ValueError(f"`mask` must hold gate indices 0 .. n_gates-1 = {n_gates - 1} (each gate used), "
                                 f"got values {int(mask.min())} .. {int(mask.max())}.")
        if reg_reduction not in _REDUCTIONS:
            raise ValueError(f"`reg_reduction` must be one of 'none', 'mean', 'sum'; got {reg_reduction!r}.")
        self.n_gates = int(n_gates)
        self.reg_weight = reg_weight
        self.reg_reduction = reg_reduction
        self.register_buffer("mask", None if mask is None else mask.detach().clone())

    def forward(self, input_tensor: Tensor) -> Tuple[Tensor, Tensor]:
        """``(gated input, regularisation)``: the input times its gates, and the weighted, reduced probabilities
        that the gates are active."""
        if not isinstance(input_tensor, Tensor) or input_tensor.dim() < 2:
            shape = tuple(input_tensor.shape) if isinstance(input_tensor, Tensor) else type(input_tensor).__name__
            raise ValueError(f"`input_tensor` must have a batch dimension and at least one more, got {shape}.")
        n = input_tensor.shape[0]
        if self.mask is None and input_tensor[0].numel() != self.n_gates:
            raise ValueError(f"`input_tensor` has {input_tensor[0].numel()} elements per example but there are "
                             f"{self.n_gates} gates; give a `mask` to share gates between elements.")
        gates = self._sample_gate_values(n).clamp(0, 1)
        if self.mask is not None:
            index = self.mask.expand_as(input_tensor).reshape(n, -1)
            gates = torch.gather(gates, 1, index)
        gated = input_tensor * gates.reshape(input_tensor.shape)
        return gated, self._regularisation()

    def _regularisation(self) -> Tensor:
        active = self._get_gate_active_probs()
        if self.reg_reduction == "sum":
            active = active.sum()
        elif self.reg_reduction == "mean":
            active = active.mean()
        return active * self.reg_weight

    def get_gate_values(self, clamp: bool = True) -> Tensor:
        """Each gate's deterministic value (what eval mode uses), clamped to [0, 1] unless ``clamp=False``."""
        values = self._get_gate_values()
        return (values.clamp(0, 1) if clamp else values).detach()

    def get_gate_active_probs(self) -> Tensor:
        """Each gate's probability of being non-zero (the quantity the L0 penalty sums)."""
        return self._get_gate_active_probs().detach()

    @abstractmethod
    def _get_gate_values(self) -> Tensor: ...

    @abstractmethod
    def _sample_gate_values(self, batch_size: int) -> Tensor: ...

    @abstractmethod
    def _get_gate_active_probs(self) -> Tensor: ...


class BinaryConcreteStochasticGates(StochasticGatesBase):
    """Hard-concrete gates: a binary-concrete sample stretched to ``(lower_bound, upper_bound)`` and clamped
    to [0, 1], so gates can be exactly 0 or 1 and the L0 penalty is differentiable.

    Louizos, Welling & Kingma (2018), *Learning Sparse Neural Networks through L0 Regularization*,
    https://arxiv.org/abs/1712.01312. The learned parameter is ``log_alpha_param`` (one per gate, initialised
    from N(0, 0.01²)).

    Args:
        n_gates, mask, reg_weight, reg_reduction: see :class:`StochasticGatesBase`.
        temperature: the concrete distribution's temperature, in (0, 1).
        lower_bound, upper_bound: the stretch interval (below 0, above 1).
        eps: keeps the uniform noise away from 0 and 1.

    Example:
        >>> import torch
        >>> from attrkit.module import BinaryConcreteStochasticGates
        >>> gates = BinaryConcreteStochasticGates(4).eval()
        >>> gated, reg = gates(torch.ones(2, 4))
        >>> gated.shape, reg.shape
        (torch.Size([2, 4]), torch.Size([]))
    """

    def __init__(self, n_gates: int, mask: Optional[Tensor] = None, reg_weight: float = 1.0,
                 temperature: float = 2 / 3, lower_bound: float = -0.1, upper_bound: float = 1.1,
                 eps: float = 1e-8, reg_reduction: str = "sum") -> None:
        super().__init__(n_gates, mask=mask, reg_weight=reg_weight, reg_reduction=reg_reduction)
        self.log_alpha_param = nn.Parameter(torch.empty(self.n_gates).normal_(0.0, 0.01))
        if not 0 < temperature < 1:
            raise ValueError(f"`temperature` must be between 0 and 1, got {temperature}.")
        if not lower_bound < 0:
            raise ValueError(f"`lower_bound` (the stretch's lower end) must be below 0, got {lower_bound}.")
        if not upper_bound > 1:
            raise ValueError(f"`upper_bound` (the stretch's upper end) must be above 1, got {upper_bound}.")
        self.temperature, self.lower_bound, self.upper_bound, self.eps = temperature, lower_bound, upper_bound, eps
        # log-odds shift at which a stretched gate crosses 0: P(gate > 0) = sigmoid(log_alpha - offset)
        self.active_prob_offset = temperature * math.log(-lower_bound / upper_bound)

    def _stretch(self, s: Tensor) -> Tensor:
        return s * (self.upper_bound - self.lower_bound) + self.lower_bound

    def _sample_gate_values(self, batch_size: int) -> Tensor:
        if self.training:
            u = torch.empty(batch_size, self.n_gates, device=self.log_alpha_param.device)
            u.uniform_(self.eps, 1 - self.eps)
            s = torch.sigmoid((torch.logit(u) + self.log_alpha_param) / self.temperature)
        else:
            s = torch.sigmoid(self.log_alpha_param).expand(batch_size, self.n_gates)
        return self._stretch(s)

    def _get_gate_values(self) -> Tensor:
        return self._stretch(torch.sigmoid(self.log_alpha_param))

    def _get_gate_active_probs(self) -> Tensor:
        return torch.sigmoid(self.log_alpha_param - self.active_prob_offset)

    @classmethod
    def _from_pretrained(cls, log_alpha_param: Tensor, *args, **kwargs) -> "BinaryConcreteStochasticGates":
        """Gates with the given ``log_alpha_param`` (1-D, one per gate); other arguments as the constructor."""
        if not isinstance(log_alpha_param, Tensor) or log_alpha_param.dim() != 1:
            raise ValueError("`log_alpha_param` must be a 1-D tensor (one value per gate).")
        gates = cls(log_alpha_param.numel(), *args, **kwargs)
        gates.load_state_dict({"log_alpha_param": log_alpha_param}, strict=False)
        return gates


class GaussianStochasticGates(StochasticGatesBase):
    """Gaussian gates: ``mu + N(0, std²)`` clamped to [0, 1]; the penalty is each gate's probability of being
    positive, ``Φ(mu / std)``.

    Yamada, Lindenbaum, Negahban & Kluger (2020), *Feature Selection using Stochastic Gates*,
    https://arxiv.org/abs/1810.04247. The learned parameter is ``mu`` (initialised from N(0.5, 0.01²)).

    Example:
        >>> import torch
        >>> from attrkit.module import GaussianStochasticGates
        >>> gates = GaussianStochasticGates(3, std=0.5).eval()
        >>> gated, reg = gates(torch.ones(1, 3))
        >>> bool(torch.allclose(gated, gates.get_gate_values()))
        True
    """

    def __init__(self, n_gates: int, mask: Optional[Tensor] = None, reg_weight: float = 1.0, std: float = 0.5,
                 reg_reduction: str = "sum") -> None:
        super().__init__(n_gates, mask=mask, reg_weight=reg_weight, reg_reduction=reg_reduction)
        self.mu = nn.Parameter(torch.empty(self.n_gates).normal_(0.5, 0.01))
        if isinstance(std, bool) or not isinstance(std, numbers.Real) or not std > 0:
            raise ValueError(f"`std` must be a positive number, got {std!r}.")
        self.std = std

    def _sample_gate_values(self, batch_size: int) -> Tensor:
        if self.training:
            noise = torch.empty(batch_size, self.n_gates, device=self.mu.device).normal_(0.0, self.std)
            return self.mu + noise
        return self.mu.expand(batch_size, self.n_gates)

    def _get_gate_values(self) -> Tensor:
        return self.mu

    def _get_gate_active_probs(self) -> Tensor:
        return 0.5 * (1 + torch.erf(self.mu / self.std / math.sqrt(2)))

    @classmethod
    def _from_pretrained(cls, mu: Tensor, *args, **kwargs) -> "GaussianStochasticGates":
        """Gates with the given ``mu`` (one per gate); other arguments as the constructor."""
        if not isinstance(mu, Tensor):
            raise TypeError("`mu` must be a tensor (one value per gate).")
        gates = cls(mu.numel(), *args, **kwargs)
        gates.load_state_dict({"mu": mu}, strict=False)
        return gates
