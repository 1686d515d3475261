"""Pictures of image attributions: :func:`visualize_image_attr` and :func:`visualize_image_attr_multiple`
(Captum's arguments), and :func:`to_hwc_image`, which reads any image layout the functions accept."""
from __future__ import annotations

from enum import Enum
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from . import colors
from ._common import as_numpy, check_choice, colorbar, figure_axes, finish


class ImageVisualizationMethod(Enum):
    """The ``method`` names of :func:`visualize_image_attr` (Captum's enum, same names and values).
    The functions take a member or its name: ``ImageVisualizationMethod["heat_map"]`` or ``"heat_map"``."""
    heat_map = 1
    blended_heat_map = 2
    original_image = 3
    masked_image = 4
    alpha_scaling = 5


_METHODS = tuple(m.name for m in ImageVisualizationMethod)


# ----------------------------------------------------------------- array plumbing
def _hwc(x, name: str) -> np.ndarray:
    """``x`` as an (H, W) or (H, W, C) array; see :func:`to_hwc_image` for the layout rule."""
    is_tensor, a = isinstance(x, torch.Tensor), as_numpy(x)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"{name} holds a batch of {a.shape[0]} examples; "
                             f"pass one, e.g. {name}[0]")
        a = a[0]
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W), (H, W, C), (C, H, W) or (1, C, H, W); "
                         f"got {tuple(a.shape)}")
    if a.ndim == 3:  # a 1- or 3-long axis at one end only marks the channels; else go by type
        first, last = a.shape[0] in (1, 3), a.shape[-1] in (1, 3)
        if (first if first != last else is_tensor):
            a = a.transpose(1, 2, 0)
    return a


def _per_channel(v, img: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(as_numpy(v), dtype=np.float64).reshape(-1)
    channels = img.shape[2] if img.ndim == 3 else 1
    if v.size not in (1, channels):
        raise ValueError(f"{name} has {v.size} values but the image has {channels} channel(s)")
    return v if img.ndim == 3 else v[0]


def to_hwc_image(image, mean=None, std=None) -> np.ndarray:
    """Return ``image`` as floats in [0, 1], shaped (H, W, 3) for colour or (H, W) for grey.

    Layout: tensors are read as CHW and numpy arrays as HWC, unless only the other
    reading has a 1- or 3-channel axis at its end; a leading batch dimension of 1
    is dropped. Values: ``image * std + mean`` is undone first when either is
    given; then integers (and floats above 1 within 0..255) are divided by 255,
    and anything else outside [0, 1] is min-max rescaled, so nothing gets clipped.

    >>> x = torch.rand(1, 3, 8, 6)
    >>> to_hwc_image(x).shape
    (8, 6, 3)
    >>> m, s = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    >>> z = (x - torch.tensor(m)[:, None, None]) / torch.tensor(s)[:, None, None]
    >>> bool(np.allclose(to_hwc_image(z, mean=m, std=s), to_hwc_image(x), atol=1e-6))
    True
    """
    raw = _hwc(image, "original_image")
    if raw.ndim == 3 and raw.shape[2] not in (1, 3, 4):
        raise ValueError(f"original_image must have 1, 3 or 4 channels; got shape {raw.shape}")
    img = raw.astype(np.float64)
    if std is not None:
        img = img * _per_channel(std, img, "std")
    if mean is not None:
        img = img + _per_channel(mean, img, "mean")
    lo, hi = (img.min(), img.max()) if img.size else (0.0, 1.0)
    integer = np.issubdtype(raw.dtype, np.integer) and mean is None and std is None
    if integer or (hi > 1 and lo >= 0 and hi <= 255):
        img = img / 255.0
    elif lo < 0 or hi > 1:
        img = (img - lo) / ((hi - lo) or 1.0)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[2] == 1 else img[..., :3]
    return np.clip(img, 0.0, 1.0)


# ------------------------------------------------------------------------- panels
def _show_image(ax, img):
    if img.ndim == 2:
        return ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    return ax.imshow(img)


def _draw_image(method, ax, norm, img, cmap, vmin, alpha):
    """Draw one panel; return the heat-map artist when there is one (for a colorbar)."""
    if method == "heat_map":
        return ax.imshow(norm, cmap=cmap, vmin=vmin, vmax=1)
    if method == "blended_heat_map":
        ax.imshow(colors.grey_underlay(img), cmap="gray", vmin=0, vmax=1)
        return ax.imshow(norm, cmap=cmap, vmin=vmin, vmax=1, alpha=alpha)
    weight = np.abs(norm)  # for sign="all" the magnitude is all we can show
    if method == "masked_image":
        _show_image(ax, img * (weight if img.ndim == 2 else weight[..., None]))
    elif method == "alpha_scaling":
        rgb = np.stack([img] * 3, axis=2) if img.ndim == 2 else img
        ax.imshow(np.concatenate([rgb, weight[..., None]], axis=2))
    else:
        _show_image(ax, img)
    return None


def _bar_label(sign: str, method: str) -> str:
    """What a heat map's colour bar stands for: the sign's quantity, scaled by :func:`normalize_attr`."""
    if method not in ("heat_map", "blended_heat_map"):
        return ""
    return colors.scale_label(sign)


def _attr_and_image(attr, original_image, method, mean, std):
    """The channel-summed (H, W) map and the image in [0, 1] (None when not given), checked against
    each other."""
    a = _hwc(attr, "attr")
    a = a.sum(axis=2) if a.ndim == 3 else a
    img = None if original_image is None else to_hwc_image(original_image, mean, std)
    if img is None and method != "heat_map":
        raise ValueError(f"original_image is required for method={method!r}")
    if img is not None and img.shape[:2] != a.shape:
        raise ValueError(f"attr has height x width {a.shape} but original_image has "
                         f"{img.shape[:2]}; they must match")
    return a, img


def visualize_image_attr(attr, original_image=None, method: str = "heat_map",
                         sign: str = "absolute_value", plt_fig_axis=None,
                         outlier_perc: float = 2, cmap=None, alpha_overlay: float = 0.5,
                         show_colorbar: bool = False, title: Optional[str] = None,
                         fig_size=(6, 6), use_pyplot: bool = True, *, mean=None, std=None):
    """Draw one attribution map for one image; return ``(fig, ax)``.

    ``attr`` is (H, W), (H, W, C), or a CHW / 1CHW tensor (channels are summed).
    ``original_image`` (needed by every method but ``heat_map``) has the same
    H and W; ints 0..255 or floats 0..1, grey or RGB; pass ``mean``/``std`` to
    undo a normalisation (see :func:`to_hwc_image`). ``method`` is one of
    ``heat_map``, ``blended_heat_map`` (heat map at ``alpha_overlay`` over the
    image in grey, contrast-stretched as Captum shows it, see
    :func:`~attrkit.visualization.colors.grey_underlay`), ``original_image``,
    ``masked_image`` (image times the normalised map) or ``alpha_scaling`` (the
    map as the image's opacity); ``sign`` and ``outlier_perc`` go to
    :func:`~attrkit.visualization.colors.normalize_attr`. With ``sign="all"``,
    the last two use the magnitude. ``cmap`` overrides the sign's colormap
    (Blues, Greens, Reds, or red-white-green). ``plt_fig_axis`` draws into an
    existing ``(fig, ax)``; ``use_pyplot=False`` makes a bare ``Figure`` and
    does not call ``plt.show()``.

    >>> fig, ax = visualize_image_attr(torch.randn(3, 8, 8), torch.rand(3, 8, 8),
    ...                                "blended_heat_map", "all", use_pyplot=False)
    """
    method = check_choice("method", method, _METHODS)
    sign = colors.sign_name(sign)
    a, img = _attr_and_image(attr, original_image, method, mean, std)
    norm = colors.normalize_attr(a, sign, outlier_perc)
    fig, ax = figure_axes(plt_fig_axis, use_pyplot, fig_size)
    if isinstance(ax, (list, tuple, np.ndarray)):
        ax = np.ravel(ax)[0]
    ax.set_xticks([])
    ax.set_yticks([])
    heat = _draw_image(method, ax, norm, img, colors.colormap(sign, cmap), colors.SIGNS[sign].vmin,
                       alpha_overlay)
    if show_colorbar:
        colorbar(fig, ax, heat, label=_bar_label(sign, method))
    finish(ax, title, use_pyplot)
    return fig, ax


def visualize_image_attr_multiple(attr, original_image, methods: Sequence[str],
                                  signs: Sequence[str], titles: Optional[Sequence[str]] = None,
                                  fig_size=(8, 6), use_pyplot: bool = True, **kwargs):
    """Draw one panel per (method, sign) pair in a row; return ``(fig, axes)``.

    ``kwargs`` go to every :func:`visualize_image_attr` call (``show_colorbar``,
    ``cmap``, ``outlier_perc``, ``mean``, ``std``, ...). ``axes`` is a list, or
    a single Axes when there is one panel.

    >>> fig, axes = visualize_image_attr_multiple(
    ...     torch.randn(3, 8, 8), torch.rand(3, 8, 8), ["original_image", "heat_map"],
    ...     ["all", "positive"], titles=["image", "positive"], use_pyplot=False)
    >>> len(axes)
    2
    """
    if len(methods) != len(signs):
        raise ValueError(f"methods has {len(methods)} entries but signs has {len(signs)}")
    if titles is not None and len(titles) != len(methods):
        raise ValueError(f"titles has {len(titles)} entries but methods has {len(methods)}")
    fig = plt.figure(figsize=fig_size) if use_pyplot else Figure(figsize=fig_size)
    axes = list(np.ravel(fig.subplots(1, len(methods))))
    for i, (method, sign) in enumerate(zip(methods, signs)):
        visualize_image_attr(attr, original_image, method, sign, (fig, axes[i]),
                             title=titles[i] if titles else None, use_pyplot=False, **kwargs)
    fig.tight_layout()
    if use_pyplot:
        plt.show()
    return fig, axes[0] if len(axes) == 1 else axes
