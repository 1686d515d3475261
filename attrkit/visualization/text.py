"""Pictures of text attributions: :func:`visualize_text` (coloured words that wrap, Captum's colours)
and its parts, and :func:`token_heatmap`, the figure of one attribution per (answer token, input token)
that :meth:`attrkit.LLMAttributionResult.plot_token_attr` draws."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import colors
from ._common import as_number, as_numpy


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


def format_special_tokens(token: str) -> str:
    """``"<s>"`` -> ``"#s"``: a tokenizer's special token, shown so that HTML does not swallow it."""
    if token.startswith("<") and token.endswith(">"):
        return "#" + token.strip("<>")
    return token


def _importances(values, n_words: int, name: str) -> np.ndarray:
    """One value per word (NaN as 0), in the values' own dtype so that colours round as Captum's do."""
    values = np.nan_to_num(as_numpy(values))
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per word); got shape {values.shape}")
    if n_words > values.size:
        raise ValueError(f"{name} has {values.size} values for {n_words} words; give one per word")
    return values


def format_word_importances(words: Sequence[str], importances) -> str:
    """One HTML table cell (``<td>...</td>``) with each word on a background coloured by its importance
    (green positive, red negative, clipped to [-1, 1]; Captum's colours, see
    :func:`~attrkit.visualization.colors.word_colour`), as the last column of :func:`visualize_text` uses.

    ``importances``: a sequence, a 1-D array or a 1-D tensor with at least one value per word; none or an
    empty one gives an empty cell. Special tokens such as ``<s>`` are shown as ``#s``; words are HTML-escaped.

    >>> format_word_importances(["good"], [0.5]).startswith('<td><mark style="background-color: hsl(120')
    True
    >>> format_word_importances([], [])
    '<td></td>'
    """
    if importances is None or len(importances) == 0:
        return "<td></td>"
    values = _importances(importances, len(words), "importances")
    marks = "".join(f'<mark style="background-color: {colors.word_colour(v)}; opacity:1.0; line-height:1.75">'
                    f'<font color="black"> {html.escape(format_special_tokens(str(w)))} </font></mark>'
                    for w, v in zip(words, values))
    return f"<td>{marks}</td>"


_LABELS = ("True Label", "Predicted Label", "Attribution Label", "Attribution Score")


def _record_block(r: VisualizationDataRecord) -> str:
    """One record: its labels on a line that wraps, then its words as a paragraph that wraps at the page's
    width (a wide table would push the words off a phone's screen)."""
    words = list(r.raw_input_ids)
    scores = _importances(as_numpy(r.word_attributions).reshape(-1), len(words), "word_attributions")
    marks = "".join(f'<mark style="background-color: {colors.word_colour(s)}; color: black; '
                    f'line-height: 1.75; padding: 0 2px" title="{float(s):.3f}">'
                    f'{html.escape(str(w))}</mark> ' for w, s in zip(words, scores))
    values = [r.true_class, f"{as_number(r.pred_class)} ({float(as_number(r.pred_prob)):.2f})", r.attr_class,
              f"{float(as_number(r.attr_score)):.2f}"]
    labels = "".join(f"<span>{name}: <b>{html.escape(str(as_number(v)))}</b></span>"
                     for name, v in zip(_LABELS, values))
    return ('<div style="border-bottom: 1px solid #ccc; padding: 4px 0">'
            f'<div style="display: flex; flex-wrap: wrap; gap: 0 1.2em; font-size: 90%">{labels}</div>'
            f'<div style="margin-top: 2px">{marks}</div></div>')


def _legend() -> str:
    keys = "".join(f'<span style="display: inline-block; width: 10px; height: 10px; '
                   f'border: 1px solid; background-color: {colors.word_colour(v)}"></span> {name} '
                   for v, name in ((-1, "Negative"), (0, "Neutral"), (1, "Positive")))
    return (f'<div style="margin-top: 5px; padding-top: 5px"><b>Legend: </b>{keys}</div>')


def visualize_text(datarecords: Sequence[VisualizationDataRecord], legend: bool = True):
    """Render records as HTML of coloured words; return an ``IPython.display.HTML``.

    Each word's background is green for positive, red for negative attribution,
    stronger for larger magnitude, in Captum's colours (values are clipped to
    [-1, 1]; hover shows the value). Each record shows Captum's four labels (true,
    predicted with its probability, the class attributed to, the attribution score)
    on one line and then its words, which wrap at the page's width instead of
    Captum's one wide table row, so a phone shows every word. Numbers given as
    tensors, also ones that require grad, print as numbers. Displays itself when
    run inside IPython; without IPython installed, returns the HTML string.

    >>> import torch
    >>> rec = VisualizationDataRecord(torch.tensor([0.8, -0.5]), 0.9, "pos", "pos",
    ...                               "pos", 0.3, ["great", "boring"], 0.01)
    >>> "hsl(120" in visualize_text([rec]).data
    True
    """
    parts = ['<div class="attrkit-text" style="max-width: 100%; overflow-wrap: anywhere">',
             *(_record_block(r) for r in datarecords)]
    if legend:
        parts.append(_legend())
    markup = "".join(parts) + "</div>"
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return markup
    page = HTML(markup)
    if get_ipython() is not None:
        display(page)
    return page


# ------------------------------------------------------------------ token heat map
_CELL_INCHES = (0.45, 0.35)  # an input token's width and an answer token's height, while they fit
# the figure's size stays within these: at most a book's column (~6.8 inches at 100 dpi is 680 px), so the page
# never shrinks it and its 8-9 pt labels stay readable
_MIN_INCHES, _MAX_INCHES = (4.0, 2.5), (6.8, 9.0)
_ROOM_INCHES = (2.2, 2.0)  # colour bar, tick labels and margins
_LABEL_INCHES = (0.17, 0.17)  # room a tick label needs along its axis (the input tokens' stand upright)
_TEXT_CELL_INCHES = (0.45, 0.2)  # cells at least this large get their value written in them


def _side(n: int, axis: int) -> float:
    """The figure's size along one axis for ``n`` cells (inches)."""
    return min(_MAX_INCHES[axis], max(_MIN_INCHES[axis], _CELL_INCHES[axis] * n + _ROOM_INCHES[axis]))


def _ticks(labels: Sequence[str], cell: float, axis: int) -> tuple[range, list[str]]:
    """Every label when the cells are large enough to hold one; else every k-th, so none overlap."""
    step = max(1, math.ceil(_LABEL_INCHES[axis] / cell - 1e-9))
    return range(0, len(labels), step), [str(t) for t in labels[::step]]


def token_heatmap(values, row_labels: Sequence[str], col_labels: Sequence[str],
                  colorbar_label: str = "token attribution"):
    """A heat map of ``values`` (rows x columns: answer tokens x input tokens), zero white, red negative,
    green positive (:data:`~attrkit.visualization.colors.RED_WHITE_GREEN`, symmetric around 0); return
    ``(fig, ax)`` drawn through pyplot.

    The figure grows with the tokens up to 6.8 x 9 inches (a book's column) and no further: beyond that the
    cells shrink and only every k-th label is written. Cells large enough show their value with two significant digits
    (:func:`~attrkit.visualization.colors.value_label`), so small attributions do not read ``0.00``.

    >>> fig, ax = token_heatmap(np.array([[0.5, -0.0012]]), ["Hi"], ["a", "b"])
    >>> [t.get_text() for t in ax.texts]
    ['0.5', '-0.0012']
    """
    import matplotlib.pyplot as plt

    data = np.asarray(as_numpy(values), dtype=np.float64)
    if data.ndim != 2 or data.size == 0:
        raise ValueError(f"values must be a non-empty (output tokens, input tokens) table; got shape {data.shape}")
    if data.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values has shape {data.shape} but there are {len(row_labels)} row and "
                         f"{len(col_labels)} column labels")
    bound = float(np.nanmax(np.abs(data))) or 1.0
    fig, ax = plt.subplots(figsize=(_side(data.shape[1], 0), _side(data.shape[0], 1)))
    im = ax.imshow(data, cmap=colors.colormap("all"), vmin=-bound, vmax=bound, aspect="auto",
                   interpolation="nearest")
    fig.colorbar(im, ax=ax).ax.set_ylabel(colorbar_label, rotation=-90, va="bottom")
    box = ax.get_position()  # what the colour bar left of the figure, as a fraction of it
    cell_w, cell_h = (box.width * fig.get_figwidth() / data.shape[1], box.height * fig.get_figheight() / data.shape[0])
    ax.set_xticks(*_ticks(col_labels, cell_w, 0))
    ax.set_yticks(*_ticks(row_labels, cell_h, 1))
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    ax.tick_params(labelsize=9)
    plt.setp(ax.get_xticklabels(), rotation=90, ha="center", va="bottom")
    if cell_w >= _TEXT_CELL_INCHES[0] and cell_h >= _TEXT_CELL_INCHES[1]:
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, colors.value_label(v), ha="center", va="center", fontsize=8,
                    color="black" if abs(v) < 0.6 * bound else "white")
    return fig, ax
