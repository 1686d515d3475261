"""Pictures of attributions: images, time series and text.

Import it as ``from attrkit import visualization as viz``; the functions take the
same arguments as Captum's ``captum.attr.visualization``. What we add:

* Arrays may be numpy (HWC, as Captum takes them) or torch tensors (CHW, with or
  without a batch dimension of 1, on any device); see :func:`to_hwc_image`.
* Degenerate maps (all zero, constant, one hot pixel, huge outliers) draw
  without warnings; see :func:`normalize_attr`.
* Images normalised for a model can be shown with ``mean=`` and ``std=``.

Colours: green is positive, red is negative, blue is absolute value. Two colormaps
are registered with matplotlib on import and can be passed by name as ``cmap``:

* ``"attrkit_red_white_green"``: red (-1) through white (0) to green (+1), the
  default for ``sign="all"``;
* ``"attrkit_white_black"``: white at 0, black from 0.25 on; the tutorials'
  "custom blue" map, which makes small attributions visible.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1 import make_axes_locatable

_CMAPS = {
    "attrkit_red_white_green": LinearSegmentedColormap.from_list(
        "attrkit_red_white_green", ["red", "white", "green"]),
    "attrkit_white_black": LinearSegmentedColormap.from_list(
        "attrkit_white_black", [(0, "#ffffff"), (0.25, "#000000"), (1, "#000000")]),
}
for _name, _cmap in _CMAPS.items():
    if _name not in matplotlib.colormaps:
        matplotlib.colormaps.register(_cmap, name=_name)

# sign -> (default colormap, lowest value of the normalised map)
_SIGNS = {"all": ("attrkit_red_white_green", -1.0), "positive": ("Greens", 0.0),
          "negative": ("Reds", 0.0), "absolute_value": ("Blues", 0.0)}
_IMAGE_METHODS = ("heat_map", "blended_heat_map", "original_image", "masked_image", "alpha_scaling")
_SERIES_METHODS = ("overlay_individual", "overlay_combined", "colored_graph")


class ImageVisualizationMethod(Enum):
    """The ``method`` names of :func:`visualize_image_attr` (Captum's enum, same names and values).
    The functions take a member or its name: ``ImageVisualizationMethod["heat_map"]`` or ``"heat_map"``."""
    heat_map = 1
    blended_heat_map = 2
    original_image = 3
    masked_image = 4
    alpha_scaling = 5


class TimeseriesVisualizationMethod(Enum):
    """The ``method`` names of :func:`visualize_timeseries_attr` (Captum's enum, same names and values)."""
    overlay_individual = 1
    overlay_combined = 2
    colored_graph = 3


class VisualizeSign(Enum):
    """The ``sign`` names of :func:`normalize_attr` and the drawing functions (Captum's enum, same values).

    >>> [s.name for s in VisualizeSign]
    ['positive', 'absolute_value', 'negative', 'all']
    """
    positive = 1
    absolute_value = 2
    negative = 3
    all = 4


# ----------------------------------------------------------------- array plumbing
def _check_choice(name: str, value, choices) -> str:
    """The choice's name: a string from ``choices``, or a member of one of the enums below."""
    if isinstance(value, Enum):
        value = value.name
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def _as_numpy(x) -> np.ndarray:
    """A numpy view of ``x``; tensors are detached and copied to the CPU (drawing only)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def _hwc(x, name: str) -> np.ndarray:
    """``x`` as an (H, W) or (H, W, C) array; see :func:`to_hwc_image` for the layout rule."""
    is_tensor, a = isinstance(x, torch.Tensor), _as_numpy(x)
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
    v = np.asarray(_as_numpy(v), dtype=np.float64).reshape(-1)
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


def normalize_attr(attr, sign: str = "absolute_value", outlier_perc: float = 2) -> np.ndarray:
    """Scale ``attr`` to [-1, 1] (``sign="all"``) or [0, 1] (other signs), element-wise.

    ``sign`` keeps all values, only positive ones, only negative ones (as
    magnitudes) or absolute values. The scale is the smallest of the largest
    magnitudes that together hold ``outlier_perc`` percent of the total; those
    are clipped to +-1. Same result as Captum's private ``_normalize_attr``, but
    an all-zero map gives zeros and a zero scale marks nonzeros as +-1 instead
    of failing. NaNs count as zero. Channels are not summed here.

    >>> normalize_attr(np.array([[0.0, 1.0], [2.0, -4.0]]), "all", outlier_perc=0)
    array([[ 0.  ,  0.25],
           [ 0.5 , -1.  ]])
    >>> normalize_attr(np.zeros((2, 2))).max()
    np.float64(0.0)
    """
    sign = _check_choice("sign", sign, _SIGNS)
    if not 0 <= outlier_perc <= 100:
        raise ValueError(f"outlier_perc must lie in [0, 100]; got {outlier_perc}")
    a = np.nan_to_num(_as_numpy(attr).astype(np.float64), nan=0.0)
    a = {"all": a, "positive": np.maximum(a, 0), "negative": np.maximum(-a, 0),
         "absolute_value": np.abs(a)}[sign]
    sizes = np.sort(np.abs(a), axis=None)
    with np.errstate(over="ignore", under="ignore"):  # huge values saturate, tiny ones vanish
        total = np.cumsum(sizes)
        if total.size == 0 or total[-1] == 0:
            return np.zeros_like(a)
        i = np.searchsorted(total, total[-1] * 0.01 * (100 - outlier_perc))
        scale = sizes[min(i, sizes.size - 1)]
        scaled = a / scale if scale > 0 else np.sign(a)
    return np.clip(scaled, -1.0, 1.0)


# ------------------------------------------------------------------ figure plumbing
def _figure_axes(plt_fig_axis, use_pyplot: bool, fig_size, **subplots):
    if plt_fig_axis is not None:
        return plt_fig_axis
    if use_pyplot:
        return plt.subplots(figsize=fig_size, **subplots)
    fig = Figure(figsize=fig_size)
    return fig, fig.subplots(**subplots)


def _colorbar(fig, ax, mappable, pad=0.1, alpha=None) -> None:
    cax = make_axes_locatable(ax).append_axes("bottom", size="5%", pad=pad)
    if mappable is None:  # keep the room, so panels with and without bars line up
        cax.axis("off")
    else:
        fig.colorbar(mappable, cax=cax, orientation="horizontal", alpha=alpha)


def _show_image(ax, img):
    if img.ndim == 2:
        return ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    return ax.imshow(img)


def _draw_image(method, ax, norm, img, cmap, vmin, alpha):
    """Draw one panel; return the heat-map artist when there is one (for a colorbar)."""
    if method == "heat_map":
        return ax.imshow(norm, cmap=cmap, vmin=vmin, vmax=1)
    if method == "blended_heat_map":
        ax.imshow(img if img.ndim == 2 else img.mean(axis=2), cmap="gray", vmin=0, vmax=1)
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


# ------------------------------------------------------------------------- images
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
    ``heat_map``, ``blended_heat_map`` (heat map over the greyed image, at
    ``alpha_overlay``), ``original_image``, ``masked_image`` (image times the
    normalised map) or ``alpha_scaling`` (the map as the image's opacity);
    ``sign`` and ``outlier_perc`` go to :func:`normalize_attr`. With
    ``sign="all"``, the last two use the magnitude. ``cmap`` overrides the
    sign's colormap (Blues, Greens, Reds, or red-white-green). ``plt_fig_axis``
    draws into an existing ``(fig, ax)``; ``use_pyplot=False`` makes a bare
    ``Figure`` and does not call ``plt.show()``.

    >>> fig, ax = visualize_image_attr(torch.randn(3, 8, 8), torch.rand(3, 8, 8),
    ...                                "blended_heat_map", "all", use_pyplot=False)
    """
    method = _check_choice("method", method, _IMAGE_METHODS)
    sign = _check_choice("sign", sign, _SIGNS)
    a = _hwc(attr, "attr")
    a = a.sum(axis=2) if a.ndim == 3 else a
    img = None if original_image is None else to_hwc_image(original_image, mean, std)
    if img is None and method != "heat_map":
        raise ValueError(f"original_image is required for method={method!r}")
    if img is not None and img.shape[:2] != a.shape:
        raise ValueError(f"attr has height x width {a.shape} but original_image has "
                         f"{img.shape[:2]}; they must match")
    norm = normalize_attr(a, sign, outlier_perc)
    default_cmap, vmin = _SIGNS[sign]
    fig, ax = _figure_axes(plt_fig_axis, use_pyplot, fig_size)
    if isinstance(ax, (list, tuple, np.ndarray)):
        ax = np.ravel(ax)[0]
    ax.set_xticks([])
    ax.set_yticks([])
    cmap = default_cmap if cmap is None else cmap
    heat = _draw_image(method, ax, norm, img, cmap, vmin, alpha_overlay)
    if show_colorbar:
        _colorbar(fig, ax, heat)
    if title:
        ax.set_title(title)
    if use_pyplot:
        plt.show()
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


# -------------------------------------------------------------------- time series
def _channels_first(x, name: str, channels_last: bool) -> np.ndarray:
    a = _as_numpy(x).astype(np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        return a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C) (or (C, N) with channels_last=False); "
                         f"got {tuple(a.shape)}")
    return a.T if channels_last else a


def _spans(ax, x, values, cmap, cnorm, alpha) -> None:
    """Colour the background behind each sample, full height, as one artist."""
    edges = (np.concatenate([x[:1], (x[1:] + x[:-1]) / 2, x[-1:]]) if x.size > 1
             else x[0] + np.array([-0.5, 0.5]))  # x-limits end at the first and last sample
    boxes = [[(l, 0), (r, 0), (r, 1), (l, 1)] for l, r in zip(edges[:-1], edges[1:])]
    ax.add_collection(PolyCollection(boxes, facecolors=cmap(cnorm(values)), edgecolors="none",
                                     antialiased=False, alpha=alpha, zorder=0,
                                     transform=ax.get_xaxis_transform()), autolim=False)


def visualize_timeseries_attr(attr, data, x_values=None, method: str = "overlay_individual",
                              sign: str = "absolute_value", channel_labels=None,
                              channels_last: bool = True, plt_fig_axis=None,
                              outlier_perc: float = 2, cmap=None, alpha_overlay: float = 0.7,
                              show_colorbar: bool = False, title: Optional[str] = None,
                              fig_size=(6, 6), use_pyplot: bool = True, **pyplot_kwargs):
    """Draw a multichannel series with its attributions; return ``(fig, axes)``.

    ``attr`` and ``data`` share a shape: (N, C), or (C, N) with
    ``channels_last=False``; (N,) is one channel. ``method``:
    ``overlay_individual`` (a panel per channel, attributions as background
    colour), ``overlay_combined`` (one panel, channel-summed attributions) or
    ``colored_graph`` (a panel per channel, the line coloured by attribution).
    ``pyplot_kwargs`` go to the line plots. Other arguments as for
    :func:`visualize_image_attr`.

    >>> t = torch.linspace(0, 6, 50)
    >>> series = torch.stack([t.sin(), t.cos()], dim=1)  # (N, C)
    >>> fig, axes = visualize_timeseries_attr(series * 2, series, method="colored_graph",
    ...                                       sign="all", use_pyplot=False)
    """
    method = _check_choice("method", method, _SERIES_METHODS)
    sign = _check_choice("sign", sign, _SIGNS)
    a, d = (_channels_first(v, n, channels_last) for v, n in ((attr, "attr"), (data, "data")))
    if a.shape != d.shape:
        raise ValueError(f"attr and data must have the same shape; got {a.shape} and {d.shape} "
                         "(channels first)")
    channels, length = d.shape
    x = np.arange(length, dtype=np.float64) if x_values is None else _as_numpy(x_values).ravel()
    if x.size != length:
        raise ValueError(f"x_values has {x.size} entries but data has {length} time steps")
    if channel_labels is not None and len(channel_labels) != channels:
        raise ValueError(f"channel_labels has {len(channel_labels)} entries but data has "
                         f"{channels} channels")
    combined = method == "overlay_combined"
    norm = normalize_attr(a.sum(axis=0, keepdims=True) if combined else a, sign, outlier_perc)
    default_cmap, vmin = _SIGNS[sign]
    cmap = plt.get_cmap(default_cmap if cmap is None else cmap)
    cnorm = Normalize(vmin, 1)
    fig, axes = _figure_axes(plt_fig_axis, use_pyplot, fig_size,
                             nrows=1 if combined else channels, sharex=True)
    axs = list(np.ravel(axes))
    if len(axs) < (1 if combined else channels):
        raise ValueError(f"plt_fig_axis holds {len(axs)} axes but method={method!r} draws one "
                         f"per channel ({channels})")
    for c in range(channels):
        ax = axs[0 if combined else c]
        label = None if channel_labels is None else channel_labels[c]
        if method == "colored_graph":
            points = np.stack([x, d[c]], axis=1)
            line = LineCollection(np.stack([points[:-1], points[1:]], axis=1), cmap=cmap,
                                  norm=cnorm, **{"linewidth": 2, **pyplot_kwargs})
            line.set_array((norm[c, :-1] + norm[c, 1:]) / 2)  # a segment shows its ends' mean
            ax.add_collection(line)
            ax.autoscale_view()
        else:
            ax.plot(x, d[c], label=label, **pyplot_kwargs)
        if method == "overlay_individual":
            _spans(ax, x, norm[c], cmap, cnorm, alpha_overlay)
        if label is not None and not combined:
            ax.set_ylabel(label)
    if combined:
        _spans(axs[0], x, norm[0], cmap, cnorm, alpha_overlay)
        if channel_labels is not None:
            axs[0].legend(loc="best")
    if length > 1:
        for ax in axs:
            ax.set_xlim(x[0], x[-1])
    if plt_fig_axis is None and len(axs) > 1:
        fig.subplots_adjust(hspace=0)
    if show_colorbar:
        alpha = 1.0 if method == "colored_graph" else alpha_overlay
        _colorbar(fig, axs[-1], matplotlib.cm.ScalarMappable(cnorm, cmap), pad=0.4, alpha=alpha)
    if title:
        axs[0].set_title(title)
    if use_pyplot:
        plt.show()
    return fig, axes


# --------------------------------------------------------------------------- text
@dataclass
class VisualizationDataRecord:
    """One row of :func:`visualize_text`: a text, its words' attributions and the labels."""

    word_attributions: Any  # one number per word, roughly in [-1, 1] (clipped)
    pred_prob: float
    pred_class: Any
    true_class: Any
    attr_class: Any
    attr_score: float
    raw_input_ids: Sequence[str]  # the words (tokens) to show
    convergence_score: Any = None


def _word_colour(value: float) -> str:
    """Green for positive, red for negative, paler when small; white for zero."""
    v = float(np.clip(value, -1.0, 1.0))
    return f"hsl({120 if v > 0 else 0}, 75%, {100 - 50 * abs(v):.0f}%)"


def _plain(x) -> Any:
    """A one-element tensor or array as a Python number, so it prints as ``3``."""
    if isinstance(x, torch.Tensor) and x.numel() == 1 or isinstance(x, np.ndarray) and x.size == 1:
        return x.item()
    return x


def format_special_tokens(token: str) -> str:
    """``"<s>"`` -> ``"#s"``: a tokenizer's special token, shown so that HTML does not swallow it."""
    if token.startswith("<") and token.endswith(">"):
        return "#" + token.strip("<>")
    return token


def format_word_importances(words: Sequence[str], importances) -> str:
    """One HTML table cell (``<td>...</td>``) with each word on a background coloured by its importance
    (green positive, red negative, clipped to [-1, 1]), as the last column of :func:`visualize_text` uses.

    ``importances``: a sequence, a 1-D array or a 1-D tensor with at least one value per word; none or an
    empty one gives an empty cell. Special tokens such as ``<s>`` are shown as ``#s``; words are HTML-escaped.

    >>> format_word_importances(["good"], [0.5]).startswith('<td><mark style="background-color: hsl(120')
    True
    >>> format_word_importances([], [])
    '<td></td>'
    """
    if importances is None or len(importances) == 0:
        return "<td></td>"
    values = np.nan_to_num(_as_numpy(importances).astype(np.float64))
    if values.ndim != 1:
        raise ValueError(f"importances must be 1-D (one value per word); got shape {values.shape}")
    if len(words) > values.size:
        raise ValueError(f"importances has {values.size} values for {len(words)} words; give one per word")
    marks = "".join(f'<mark style="background-color: {_word_colour(v)}; opacity:1.0; line-height:1.75">'
                    f'<font color="black"> {html.escape(format_special_tokens(str(w)))} </font></mark>'
                    for w, v in zip(words, values))
    return f"<td>{marks}</td>"


def _record_row(r: VisualizationDataRecord) -> str:
    scores = np.nan_to_num(_as_numpy(r.word_attributions).astype(np.float64).reshape(-1))
    words = list(r.raw_input_ids)
    if scores.size < len(words):
        raise ValueError(f"word_attributions has {scores.size} values for {len(words)} words "
                         "in raw_input_ids")
    marks = "".join(f'<mark style="background-color: {_word_colour(s)}; color: black; '
                    f'line-height: 1.75; padding: 0 2px" title="{s:.3f}">'
                    f'{html.escape(str(w))}</mark> ' for w, s in zip(words, scores))
    cells = [r.true_class, f"{_plain(r.pred_class)} ({float(r.pred_prob):.2f})", r.attr_class,
             f"{float(r.attr_score):.2f}"]
    return ("<tr>" + "".join(f"<td><b>{html.escape(str(_plain(c)))}</b></td>" for c in cells)
            + f"<td>{marks}</td></tr>")


def visualize_text(datarecords: Sequence[VisualizationDataRecord], legend: bool = True):
    """Render records as an HTML table of coloured words; return an ``IPython.display.HTML``.

    Each word's background is green for positive, red for negative attribution,
    stronger for larger magnitude (values are clipped to [-1, 1]; hover shows
    the value). Displays itself when run inside IPython; without IPython
    installed, returns the HTML string.

    >>> rec = VisualizationDataRecord(torch.tensor([0.8, -0.5]), 0.9, "pos", "pos",
    ...                               "pos", 0.3, ["great", "boring"], 0.01)
    >>> "hsl(120" in visualize_text([rec]).data
    True
    """
    head = "".join(f"<th>{h}</th>" for h in ("True Label", "Predicted Label",
                                              "Attribution Label", "Attribution Score",
                                              "Word Importance"))
    parts = [f'<table style="width: 100%"><tr>{head}</tr>',
             *(_record_row(r) for r in datarecords), "</table>"]
    if legend:
        keys = "".join(f'<span style="display: inline-block; width: 10px; height: 10px; '
                       f'border: 1px solid; background-color: {_word_colour(v)}"></span> {name} '
                       for v, name in ((-1, "Negative"), (0, "Neutral"), (1, "Positive")))
        parts.append(f'<div style="border-top: 1px solid; margin-top: 5px; padding-top: 5px; '
                     f'display: inline-block"><b>Legend: </b>{keys}</div>')
    markup = "".join(parts)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return markup
    page = HTML(markup)
    if get_ipython() is not None:
        display(page)
    return page
