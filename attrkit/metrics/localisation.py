r"""Localisation: does a heat map fall on the object? (the family Quantus calls "localisation").

Each metric compares a batch of maps with a batch of ground-truth masks (an outline, a box) and returns a
:class:`Localisation` pair of ``(N,)`` tensors: the **score** of each map and the **random** expectation — what a
map of i.i.d. random values (or a uniformly random ranking) would score on the same mask, so that a score
is read against chance, never alone. Everything stays on the maps' device (no NumPy, no CPU round trip).

* :func:`pointing_game` — is the map's maximum on the object? (Zhang et al. 2018). Random: the mask's share.
* :func:`relevance_mass_accuracy` (= :func:`energy_pointing_game`) — the share of positive relevance that lies
  on the object (Arras et al. 2022; Wang et al. 2020). Random: the mask's share.
* :func:`relevance_rank_accuracy` — of the ``K = |mask|`` most relevant pixels, the share on the object
  (Arras et al. 2022). Random: the mask's share.
* :func:`top_k_iou` — IoU of the ``k`` most relevant pixels with the mask. Random: the exact hypergeometric
  expectation of the IoU of ``k`` pixels drawn at random.
* :func:`localisation` — all four at once, as a dict.

**Shapes.** ``attributions`` is ``(N, ...)``. Images ``(N, C, H, W)`` are scored per pixel: channels are summed
first (as :func:`~attrkit.metrics.pixel_flipping` does) and the mask is ``(N, H, W)``, ``(N, 1, H, W)`` or
``(H, W)``. Otherwise the mask must broadcast to ``attributions``. A mask is boolean or 0/1.

**Ties** are shared out as if broken at random: a constant map points at each pixel with equal chance, so its
pointing game and rank accuracy equal the random expectation instead of depending on the storage order.

Zhang, Bargal, Lin, Brandt, Shen & Sclaroff (2018), *Top-down Neural Attention by Excitation Backprop*, IJCV,
https://arxiv.org/abs/1608.00507 ; Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020), *Score-CAM*,
https://arxiv.org/abs/1910.01279 ; Arras, Osman & Samek (2022), *CLEVR-XAI: A benchmark dataset for the ground
truth evaluation of neural network explanations*, Information Fusion, https://arxiv.org/abs/2003.07258
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Localisation", "pointing_game", "relevance_mass_accuracy", "energy_pointing_game",
           "relevance_rank_accuracy", "top_k_iou", "localisation"]


class Localisation(NamedTuple):
    """A metric's ``score`` for each map and the ``random`` expectation on the same mask, both ``(N,)``."""
    score: Tensor
    random: Tensor


def _flatten(attributions, mask) -> tuple[Tensor, Tensor]:
    """``(N, n)`` float maps and ``(N, n)`` boolean masks."""
    if not isinstance(attributions, Tensor) or attributions.dim() < 2:
        raise TypeError("`attributions` must be a tensor of shape (N, ...) with a batch dimension")
    if not isinstance(mask, Tensor):
        raise TypeError(f"`mask` must be a boolean or 0/1 tensor, got {type(mask).__name__}")
    a = attributions.detach()
    if a.dim() >= 4:                                   # (N, C, H, W): one value per pixel
        a = a.sum(1)
        if mask.dim() == a.dim() + 1 and mask.shape[1] == 1:
            mask = mask.squeeze(1)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or ((mask != 0) & (mask != 1)).any():
            raise ValueError("`mask` must be boolean or hold only 0 and 1")
        mask = mask != 0
    try:
        mask = torch.broadcast_to(mask.to(a.device), a.shape)
    except RuntimeError:
        raise ValueError(f"`mask` of shape {tuple(mask.shape)} does not broadcast to the map's shape "
                         f"{tuple(a.shape)} (image attributions (N, C, H, W) take a mask (N, H, W))") from None
    n = a.shape[0]
    a = a.reshape(n, -1)
    return (a if a.is_floating_point() else a.float()), mask.reshape(n, -1)


def _share(mask: Tensor, dtype) -> Tensor:
    """The fraction of each example's pixels that the mask covers, ``(N,)``."""
    return mask.to(dtype).mean(1)


def _hits_at(a: Tensor, mask: Tensor, k: Tensor) -> Tensor:
    """Expected number of masked pixels among the ``k`` (per example) largest values, ties broken at random."""
    n = a.shape[1]
    k = k.clamp(0, n)
    values = a.sort(dim=1, descending=True).values
    threshold = values.gather(1, (k - 1).clamp(min=0).unsqueeze(1))          # the k-th largest value
    above, at = a > threshold, a == threshold
    n_above = above.sum(1)
    share_at = (at & mask).sum(1).to(a.dtype) / at.sum(1).clamp(min=1).to(a.dtype)
    hits = (above & mask).sum(1).to(a.dtype) + (k - n_above).to(a.dtype) * share_at
    return torch.where(k > 0, hits, torch.zeros_like(hits))


def pointing_game(attributions: Tensor, mask: Tensor) -> Localisation:
    """Pointing game (Zhang et al. 2018): 1 where the map's maximum lies on the mask, else 0.

    With several maxima, the score is the share of them on the mask (the chance of a hit when the tie is broken
    at random). Random expectation: the mask's share of the pixels.

    Example:
        >>> import torch
        >>> from attrkit.metrics import pointing_game
        >>> maps = torch.tensor([[0., 5., 1., 0.], [3., 0., 0., 1.]])
        >>> mask = torch.tensor([[False, True, False, False], [False, True, True, False]])
        >>> pointing_game(maps, mask)
        Localisation(score=tensor([1., 0.]), random=tensor([0.2500, 0.5000]))
    """
    a, m = _flatten(attributions, mask)
    return Localisation(_hits_at(a, m, torch.ones(a.shape[0], dtype=torch.long, device=a.device)),
                        _share(m, a.dtype))


def relevance_mass_accuracy(attributions: Tensor, mask: Tensor) -> Localisation:
    """Relevance mass accuracy (Arras et al. 2022) = energy-based pointing game (Wang et al. 2020).

    The positive relevance inside the mask over all positive relevance: ``sum(relu(a) * mask) / sum(relu(a))``;
    a map with no positive relevance scores 0. Random expectation: the mask's share of the pixels (for
    exchangeable random values each pixel holds the same expected share of the total).

    Example:
        >>> import torch
        >>> from attrkit.metrics import relevance_mass_accuracy
        >>> maps = torch.tensor([[3., 1., -2., 0.]])
        >>> relevance_mass_accuracy(maps, torch.tensor([[True, False, True, False]]))
        Localisation(score=tensor([0.7500]), random=tensor([0.5000]))
    """
    a, m = _flatten(attributions, mask)
    positive = a.clamp(min=0)
    total = positive.sum(1)
    inside = (positive * m).sum(1)
    score = torch.where(total > 0, inside / total.clamp(min=torch.finfo(a.dtype).tiny), torch.zeros_like(total))
    return Localisation(score, _share(m, a.dtype))


energy_pointing_game = relevance_mass_accuracy


def relevance_rank_accuracy(attributions: Tensor, mask: Tensor) -> Localisation:
    """Relevance rank accuracy (Arras et al. 2022): of the ``K = |mask|`` highest-ranked pixels, the share on the mask.

    An empty mask scores 0. Random expectation: the mask's share of the pixels (the mean of a hypergeometric
    draw of ``K`` pixels, divided by ``K``).

    Example:
        >>> import torch
        >>> from attrkit.metrics import relevance_rank_accuracy
        >>> maps = torch.tensor([[4., 3., 2., 1.]])
        >>> relevance_rank_accuracy(maps, torch.tensor([[True, False, True, False]]))
        Localisation(score=tensor([0.5000]), random=tensor([0.5000]))
    """
    a, m = _flatten(attributions, mask)
    k = m.sum(1)
    hits = _hits_at(a, m, k)
    return Localisation(hits / k.clamp(min=1).to(a.dtype), _share(m, a.dtype))


def _k_per_example(k, n: int, batch: int, device) -> Tensor:
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(f"`k` must be a number of pixels (int) or a fraction of them (float), got {k!r}")
    if isinstance(k, float):
        if not 0 < k <= 1:
            raise ValueError(f"`k` as a fraction must lie in (0, 1], got {k}")
        k = max(1, round(k * n))
    if not 1 <= k <= n:
        raise ValueError(f"`k` must be between 1 and the number of pixels ({n}), got {k}")
    return torch.full((batch,), k, dtype=torch.long, device=device)


def _random_iou(n: int, k: Tensor, m: Tensor, dtype) -> Tensor:
    """E[I / (k + m - I)] for I hypergeometric: ``k`` of ``n`` pixels drawn at random, ``m`` of them masked."""
    i = torch.arange(n + 1, device=k.device, dtype=torch.float64).unsqueeze(0)
    kk, mm = k.to(torch.float64).unsqueeze(1), m.to(torch.float64).unsqueeze(1)
    valid = (i <= kk) & (i <= mm) & (kk - i <= n - mm)

    def log_choose(a, b):
        return torch.lgamma(a + 1) - torch.lgamma(b + 1) - torch.lgamma((a - b).clamp(min=0) + 1)

    total = torch.full_like(kk, float(n))
    log_pmf = log_choose(mm, i) + log_choose(total - mm, (kk - i).clamp(min=0)) - log_choose(total, kk)
    pmf = torch.where(valid, log_pmf.exp(), torch.zeros_like(log_pmf))
    iou = i / (kk + mm - i).clamp(min=1)
    return (pmf * iou).sum(1).to(dtype)


def top_k_iou(attributions: Tensor, mask: Tensor, k=None) -> Localisation:
    """IoU of the map's ``k`` most relevant pixels with the mask.

    ``k``: a number of pixels, a fraction of them (float in (0, 1]), or None for each mask's own size (then the
    intersection is :func:`relevance_rank_accuracy` times ``|mask|``). Ties at the k-th value are shared out
    in proportion (the expected intersection under random tie-breaking). Random expectation: the exact
    expectation of the IoU when the ``k`` pixels are drawn uniformly at random (hypergeometric intersection).

    Example:
        >>> import torch
        >>> from attrkit.metrics import top_k_iou
        >>> maps = torch.tensor([[4., 3., 2., 1.]])
        >>> top_k_iou(maps, torch.tensor([[True, True, True, False]]), k=2).score
        tensor([0.6667])
    """
    a, m = _flatten(attributions, mask)
    size = m.sum(1)
    kk = size.clamp(min=1) if k is None else _k_per_example(k, a.shape[1], a.shape[0], a.device)
    inter = _hits_at(a, m, kk)
    score = inter / (kk + size - inter).clamp(min=1e-12)
    return Localisation(score, _random_iou(a.shape[1], kk, size, a.dtype))


def localisation(attributions: Tensor, mask: Tensor, k=None) -> dict[str, Localisation]:
    """All four metrics on the same maps and masks: ``{"pointing_game", "relevance_mass_accuracy",
    "relevance_rank_accuracy", "top_k_iou"}`` → :class:`Localisation` (``k`` goes to :func:`top_k_iou`).

    Example:
        >>> import torch
        >>> from attrkit.metrics import localisation
        >>> scores = localisation(torch.rand(3, 8, 8), torch.rand(3, 8, 8) > 0.5)
        >>> sorted(scores), scores["pointing_game"].score.shape
        (['pointing_game', 'relevance_mass_accuracy', 'relevance_rank_accuracy', 'top_k_iou'], torch.Size([3]))
    """
    return {"pointing_game": pointing_game(attributions, mask),
            "relevance_mass_accuracy": relevance_mass_accuracy(attributions, mask),
            "relevance_rank_accuracy": relevance_rank_accuracy(attributions, mask),
            "top_k_iou": top_k_iou(attributions, mask, k)}
