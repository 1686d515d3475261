"""Pictures of time-series attributions: :func:`visualize_timeseries_attr` (Captum's arguments), one small
drawing function per method."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import Colormap, Normalize

from . import colors
from ._common import as_numpy, check_choice, colorbar, figure_axes, finish


class TimeseriesVisualizationMethod(Enum):
    """The ``method`` names of :func:`visualize_timeseries_attr` (Captum's enum, same names and values)."""
    overlay_individual = 1
    overlay_combined = 2
    colored_graph = 3


@dataclass
class _Series:
    """What every method draws from: the series channels first, its normalised attributions (one row,
    channel-summed, for ``overlay_combined``), the x positions, and the colours."""

    data: np.ndarray
    norm: np.ndarray
    x: np.ndarray
    labels: Optional[list]
    cmap: Colormap
    cnorm: Normalize
    alpha: float
    line: dict = field(default_factory=dict)

    def label(self, c: int):
        return None if self.labels is None else self.labels[c]


def _channels_first(x, name: str, channels_last: bool) -> np.ndarray:
    a = as_numpy(x).astype(np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        return a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C) (or (C, N) with channels_last=False); "
                         f"got {tuple(a.shape)}")
    return a.T if channels_last else a


def _spans(ax, s: _Series, values) -> None:
    """Colour the background behind each sample, full height, as one artist."""
    x = s.x
    edges = (np.concatenate([x[:1], (x[1:] + x[:-1]) / 2, x[-1:]]) if x.size > 1
             else x[0] + np.array([-0.5, 0.5]))  # x-limits end at the first and last sample
    boxes = [[(l, 0), (r, 0), (r, 1), (l, 1)] for l, r in zip(edges[:-1], edges[1:])]
    ax.add_collection(PolyCollection(boxes, facecolors=s.cmap(s.cnorm(values)), edgecolors="none",
                                     antialiased=False, alpha=s.alpha, zorder=0,
                                     transform=ax.get_xaxis_transform()), autolim=False)


def _overlay_individual(axs, s: _Series) -> None:
    """A panel per channel: its line over background colours of its attributions."""
    for c, ax in enumerate(axs):
        ax.plot(s.x, s.data[c], label=s.label(c), **s.line)
        _spans(ax, s, s.norm[c])
        if s.labels is not None:
            ax.set_ylabel(s.labels[c])


def _overlay_combined(axs, s: _Series) -> None:
    """One panel: every channel's line over background colours of the channel-summed attributions."""
    for c in range(s.data.shape[0]):
        axs[0].plot(s.x, s.data[c], label=s.label(c), **s.line)
    _spans(axs[0], s, s.norm[0])
    if s.labels is not None:
        axs[0].legend(loc="best")


def _colored_graph(axs, s: _Series) -> None:
    """A panel per channel: its line coloured by its attributions (a segment shows its ends' mean)."""
    for c, ax in enumerate(axs):
        points = np.stack([s.x, s.data[c]], axis=1)
        line = LineCollection(np.stack([points[:-1], points[1:]], axis=1), cmap=s.cmap,
                              norm=s.cnorm, **{"linewidth": 2, **s.line})
        line.set_array((s.norm[c, :-1] + s.norm[c, 1:]) / 2)
        ax.add_collection(line)
        ax.autoscale_view()
        if s.labels is not None:
            ax.set_ylabel(s.labels[c])


_DRAW = {"overlay_individual": _overlay_individual, "overlay_combined": _overlay_combined,
         "colored_graph": _colored_graph}


def _series(attr, data, x_values, channel_labels, channels_last) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attributions and data channels first, and the x positions, checked against each other."""
    a, d = (_channels_first(v, n, channels_last) for v, n in ((attr, "attr"), (data, "data")))
    if a.shape != d.shape:
        raise ValueError(f"attr and data must have the same shape; got {a.shape} and {d.shape} "
                         "(channels first)")
    channels, length = d.shape
    x = np.arange(length, dtype=np.float64) if x_values is None else as_numpy(x_values).ravel()
    if x.size != length:
        raise ValueError(f"x_values has {x.size} entries but data has {length} time steps")
    if channel_labels is not None and len(channel_labels) != channels:
        raise ValueError(f"channel_labels has {len(channel_labels)} entries but data has "
                         f"{channels} channels")
    return a, d, x


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
    :func:`~attrkit.visualization.visualize_image_attr`.

    >>> import torch
    >>> t = torch.linspace(0, 6, 50)
    >>> series = torch.stack([t.sin(), t.cos()], dim=1)  # (N, C)
    >>> fig, axes = visualize_timeseries_attr(series * 2, series, method="colored_graph",
    ...                                       sign="all", use_pyplot=False)
    """
    method = check_choice("method", method, _DRAW)
    sign = colors.sign_name(sign)
    a, d, x = _series(attr, data, x_values, channel_labels, channels_last)
    combined = method == "overlay_combined"
    s = _Series(d, colors.normalize_attr(a.sum(axis=0, keepdims=True) if combined else a, sign, outlier_perc),
                x, channel_labels, colors.colormap(sign, cmap), Normalize(colors.SIGNS[sign].vmin, 1),
                alpha_overlay, pyplot_kwargs)
    panels = 1 if combined else d.shape[0]
    fig, axes = figure_axes(plt_fig_axis, use_pyplot, fig_size, nrows=panels, sharex=True)
    axs = list(np.ravel(axes))
    if len(axs) < panels:
        raise ValueError(f"plt_fig_axis holds {len(axs)} axes but method={method!r} draws one "
                         f"per channel ({panels})")
    _DRAW[method](axs[:panels], s)
    if x.size > 1:
        for ax in axs:
            ax.set_xlim(x[0], x[-1])
    if plt_fig_axis is None and len(axs) > 1:
        fig.subplots_adjust(hspace=0)
    if show_colorbar:
        colorbar(fig, axs[-1], matplotlib.cm.ScalarMappable(s.cnorm, s.cmap), pad=0.4,
                 alpha=1.0 if method == "colored_graph" else alpha_overlay,
                 label=colors.scale_label(sign))
    finish(axs[0], title, use_pyplot)
    return fig, axes
