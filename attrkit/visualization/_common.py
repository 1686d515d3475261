"""What the views share besides colours: argument checks, arrays for drawing, and figure plumbing."""
from __future__ import annotations

from enum import Enum

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1 import make_axes_locatable


def check_choice(name: str, value, choices) -> str:
    """The choice's name: a string from ``choices``, or a member of one of the visualization enums."""
    if isinstance(value, Enum):
        value = value.name
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return value


def as_numpy(x) -> np.ndarray:
    """A numpy view of ``x``; tensors are detached and copied to the CPU (drawing only)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    return np.asarray(x)


def as_number(x):
    """A one-element tensor or array as a Python number (detached first, so a tensor that requires grad
    converts without a warning); anything else as it is."""
    if isinstance(x, torch.Tensor) and x.numel() == 1 or isinstance(x, np.ndarray) and x.size == 1:
        return as_numpy(x).item()
    return x


def figure_axes(plt_fig_axis, use_pyplot: bool, fig_size, **subplots):
    """``plt_fig_axis`` when given; else a new figure (through pyplot, or a bare ``Figure``) and its axes."""
    if plt_fig_axis is not None:
        return plt_fig_axis
    if use_pyplot:
        return plt.subplots(figsize=fig_size, **subplots)
    fig = Figure(figsize=fig_size)
    return fig, fig.subplots(**subplots)


def colorbar(fig, ax, mappable, pad=0.1, alpha=None, label: str = "") -> None:
    """A horizontal colour bar below ``ax``, with ``label`` (what its colours stand for) under it; with no
    ``mappable``, the same room left empty, so panels with and without bars line up."""
    cax = make_axes_locatable(ax).append_axes("bottom", size="5%", pad=pad)
    if mappable is None:
        cax.axis("off")
    else:
        fig.colorbar(mappable, cax=cax, orientation="horizontal", alpha=alpha, label=label or None)


def wrapped(title: str, ax, fontsize: float | None = None) -> str:
    """``title`` broken into lines that fit over ``ax`` (by its width now), so that the titles of panels side
    by side do not run into each other."""
    import textwrap

    size = fontsize or plt.rcParams["axes.titlesize"]
    size = size if isinstance(size, (int, float)) else plt.rcParams["font.size"] * 1.2
    inches = ax.get_position().width * ax.figure.get_figwidth()
    chars = max(10, int(inches * 72 / (0.55 * size)))  # an average character is about 0.55 em wide
    lines = textwrap.wrap(str(title), chars, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) or str(title)


def finish(ax, title, use_pyplot: bool) -> None:
    """Give ``ax`` its title (when there is one) and show the figure through pyplot when asked."""
    if title:
        ax.set_title(wrapped(title, ax))
    if use_pyplot:
        plt.show()
