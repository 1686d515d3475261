"""Figures for the quality checks (matplotlib, imported when a figure is drawn)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .randomization import ModelRandomizationResult, _comparable


def plot_pixel_flipping(results: dict, ax=None, mode: str | None = None, title: str | None = None):
    """Deletion or insertion curves of several methods on one axes.

    ``results`` maps a method's name to the ``(fractions, scores, auc)`` that
    :func:`~attrkit.metrics.pixel_flipping` returned; each curve is the mean over
    examples, labelled with its mean AUC. ``mode`` ("deletion"/"insertion") only
    words the axis label. Returns ``(fig, ax)``.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import torch
        >>> from attrkit.metrics import plot_pixel_flipping
        >>> curve = (torch.linspace(0, 1, 5), torch.rand(2, 5), torch.rand(2))
        >>> fig, ax = plot_pixel_flipping({"random": curve}, mode="deletion")
        >>> len(ax.lines)
        1
    """
    import matplotlib.pyplot as plt

    if not isinstance(results, dict) or not results:
        raise TypeError("`results` must be a non-empty dict {method name: (fractions, scores, auc)}.")
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained") if ax is None else (ax.figure, ax)
    for name, (fractions, scores, auc) in results.items():
        f = _numpy(fractions).reshape(-1)
        s = _numpy(scores).reshape(-1, len(f)).mean(0)
        ax.plot(f, s, marker=".", label=f"{name} (AUC {float(_numpy(auc).mean()):.3f})")
    verb = {"deletion": "removed", "insertion": "inserted"}.get(mode, "flipped")
    ax.set_xlabel(f"fraction of features {verb}")
    ax.set_ylabel("target score")
    ax.set_xlim(0, 1)
    ax.legend(fontsize="small")
    ax.set_title(title if title is not None else (f"{mode} curves" if mode else "pixel flipping"))
    return fig, ax


def plot_model_randomization(result: ModelRandomizationResult, example: int = 0, cmap: str = "viridis",
                             panel_size: float = 1.6, columns: int = 4):
    """The randomisation cascade as rows of heat maps, ``columns`` to a row: the original attribution of
    ``example``, then the attribution after each layer was re-initialised, with the
    Spearman correlation and SSIM against the original under each map.

    Maps are drawn as compared (channels summed; magnitudes when the check used
    ``absolute=True``), each scaled to its own range. Returns ``(fig, axes)``.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import torch
        >>> from attrkit import Saliency
        >>> from attrkit.metrics import model_randomization, plot_model_randomization
        >>> from attrkit.testing import SmallCNN
        >>> result = model_randomization(SmallCNN(), lambda m, x, t: Saliency(m).attribute(x, target=t),
        ...                              torch.randn(2, 1, 8, 8), target=0)
        >>> fig, axes = plot_model_randomization(result)
        >>> len(axes)
        4
    """
    import matplotlib.pyplot as plt

    if not isinstance(result, ModelRandomizationResult):
        raise TypeError(f"`result` must be what model_randomization returned, got {type(result).__name__}.")
    n = int(result.records[0].spearman.shape[0])
    if not -n <= example < n:
        raise ValueError(f"`example` must index one of the {n} examples, got {example}.")
    panels = [("original", result.original, result.records[0])]
    panels += [(r.layer, r.attributions, r) for r in result.records[1:]]
    if columns < 1:
        raise ValueError(f"`columns` must be at least 1, got {columns}.")
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)  # a book's column holds about four 2-inch maps at a readable size
    fig, grid = plt.subplots(rows, cols, figsize=(panel_size * cols, (panel_size + 0.9) * rows),
                             layout="constrained", squeeze=False)
    axes = list(grid.ravel()[:len(panels)])
    for spare in grid.ravel()[len(panels):]:
        spare.axis("off")
    for ax, (name, attributions, record) in zip(axes, panels):
        ax.imshow(_picture(attributions, result.absolute, example), cmap=cmap)
        ax.set_title(name, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        rho, sim = float(record.spearman[example]), float(record.ssim[example])
        ax.set_xlabel(f"Spearman {rho:.2f}\nSSIM {sim:.2f}", fontsize="small")
    fig.suptitle(f"{result.order} randomisation, from the output down", fontsize="medium")
    return fig, axes


def _picture(attributions, absolute: bool, example: int):
    maps = _comparable(attributions, absolute)
    if len(maps) == 1 and maps[0].dim() == 3:
        return _numpy(maps[0][example])
    return _numpy(torch.cat([m[example].reshape(1, -1) for m in maps], 1))  # a strip for non-images


def _numpy(t):
    return t.detach().float().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=float)
