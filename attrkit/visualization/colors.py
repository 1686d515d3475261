"""The colours of every attrkit picture, in one place: the signs an attribution can be shown by, their
colormaps, the normalisation of a map to [-1, 1] or [0, 1] and the scale it divides by, the grey photo
under a blended heat map, and the colour of a word. The figures (:mod:`.image`, :mod:`.timeseries`,
:mod:`.text`), the explorers (:mod:`attrkit.insights`) and the LLM plots (:mod:`attrkit.llm.result`) all
take their colours from here, so a map looks the same wherever it is drawn.

Green is positive, red is negative, blue is absolute value (as Captum). Two colormaps are registered with
matplotlib on import and can be passed by name as ``cmap``:

* ``"attrkit_red_white_green"``: red (-1) through white (0) to green (+1), the default for ``sign="all"``;
* ``"attrkit_white_black"``: white at 0, black from 0.25 on; the tutorials' "custom blue" map, which
  makes small attributions visible.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, LinearSegmentedColormap

from ._common import as_numpy, check_choice

RED_WHITE_GREEN = "attrkit_red_white_green"
WHITE_BLACK = "attrkit_white_black"
_CMAPS = {
    RED_WHITE_GREEN: LinearSegmentedColormap.from_list(RED_WHITE_GREEN, ["red", "white", "green"]),
    WHITE_BLACK: LinearSegmentedColormap.from_list(WHITE_BLACK, [(0, "#ffffff"), (0.25, "#000000"),
                                                                 (1, "#000000")]),
}
for _name, _cmap in _CMAPS.items():
    if _name not in matplotlib.colormaps:
        matplotlib.colormaps.register(_cmap, name=_name)

POSITIVE, NEGATIVE = "#2a9d4b", "#d0365b"  # bars and marks of one sign (green, red)


class VisualizeSign(Enum):
    """The ``sign`` names of :func:`normalize_attr` and the drawing functions (Captum's enum, same values).

    >>> [s.name for s in VisualizeSign]
    ['positive', 'absolute_value', 'negative', 'all']
    """
    positive = 1
    absolute_value = 2
    negative = 3
    all = 4


@dataclass(frozen=True)
class SignStyle:
    """How one sign is shown: its default colormap, the normalised map's lowest value (-1 for ``"all"``,
    else 0), what the colours stand for, and a legend's short key."""

    cmap: str
    vmin: float
    meaning: str
    key: str


# in the order the explorers offer them
SIGNS = {
    "absolute_value": SignStyle("Blues", 0.0, "|attribution|", "blue: magnitude"),
    "all": SignStyle(RED_WHITE_GREEN, -1.0, "attribution", "green +, red −"),
    "positive": SignStyle("Greens", 0.0, "positive attribution", "green: raises the score"),
    "negative": SignStyle("Reds", 0.0, "negative attribution (magnitude)", "red: lowers the score"),
}


def scale_label(sign) -> str:
    """What the colour bar of a normalised map stands for: the sign's quantity and the range
    :func:`normalize_attr` scaled it to.

    >>> scale_label("all"), scale_label("absolute_value")
    ('attribution (scaled to ±1)', '|attribution| (scaled to 0–1)')
    """
    sign = sign_name(sign)
    return f"{SIGNS[sign].meaning} (scaled to {'±1' if sign == 'all' else '0–1'})"


def sign_name(sign) -> str:
    """``sign`` (a name or a :class:`VisualizeSign`) as its name; anything else is a ``ValueError``."""
    return check_choice("sign", sign, SIGNS)


def colormap(sign="absolute_value", cmap=None) -> Colormap:
    """``cmap`` (a name or a colormap) when given, else the sign's default colormap."""
    return matplotlib.colormaps.get_cmap(SIGNS[sign_name(sign)].cmap if cmap is None else cmap)


def _signed_part(a: np.ndarray, sign: str) -> np.ndarray:
    return {"all": a, "positive": np.maximum(a, 0), "negative": np.maximum(-a, 0),
            "absolute_value": np.abs(a)}[sign]


def _scale(a: np.ndarray, outlier_perc: float) -> float:
    """The smallest of the largest magnitudes of ``a`` that together hold ``outlier_perc`` percent of the
    total (0 for an all-zero map)."""
    sizes = np.sort(np.abs(a), axis=None)
    with np.errstate(over="ignore", under="ignore"):  # huge values saturate, tiny ones vanish
        total = np.cumsum(sizes)
    if total.size == 0 or total[-1] == 0:
        return 0.0
    i = np.searchsorted(total, total[-1] * 0.01 * (100 - outlier_perc))
    return sizes[min(i, sizes.size - 1)]


def _prepared(attr, sign, outlier_perc) -> np.ndarray:
    """The part of ``attr`` that ``sign`` shows, as float64 with NaNs as 0; the arguments checked."""
    sign = sign_name(sign)
    if not 0 <= outlier_perc <= 100:
        raise ValueError(f"outlier_perc must lie in [0, 100]; got {outlier_perc}")
    return _signed_part(np.nan_to_num(as_numpy(attr).astype(np.float64), nan=0.0), sign)


def scale_of(attr, sign="absolute_value", outlier_perc: float = 2) -> float:
    """The attribution value that the end of the colour scale stands for: what :func:`normalize_attr`
    divides by (0 for an all-zero map). Channels are not summed here.

    >>> scale_of(np.array([1.0, -2.0, 4.0]), "positive", outlier_perc=0)
    4.0
    """
    return float(_scale(_prepared(attr, sign, outlier_perc), outlier_perc))


def normalize_attr(attr, sign="absolute_value", outlier_perc: float = 2) -> np.ndarray:
    """Scale ``attr`` to [-1, 1] (``sign="all"``) or [0, 1] (other signs), element-wise.

    ``sign`` keeps all values, only positive ones, only negative ones (as magnitudes) or absolute
    values. The scale (:func:`scale_of`) is the smallest of the largest magnitudes that together hold
    ``outlier_perc`` percent of the total; those are clipped to +-1. Same result as Captum's private
    ``_normalize_attr``, but an all-zero map gives zeros and a zero scale marks nonzeros as +-1 instead
    of failing. NaNs count as zero. Channels are not summed here.

    >>> normalize_attr(np.array([[0.0, 1.0], [2.0, -4.0]]), "all", outlier_perc=0)
    array([[ 0.  ,  0.25],
           [ 0.5 , -1.  ]])
    >>> normalize_attr(np.zeros((2, 2))).max()
    np.float64(0.0)
    """
    a = _prepared(attr, sign, outlier_perc)
    scale = _scale(a, outlier_perc)
    with np.errstate(over="ignore", under="ignore"):
        scaled = a / scale if scale > 0 else np.sign(a)
    return np.clip(scaled, -1.0, 1.0)


def heat_colours(norm: np.ndarray, sign="absolute_value", cmap=None) -> np.ndarray:
    """RGB floats in [0, 1] (shape ``norm.shape + (3,)``) of a normalised map, as a heat map draws it."""
    vmin = SIGNS[sign_name(sign)].vmin
    return colormap(sign, cmap)((np.asarray(norm) - vmin) / (1 - vmin))[..., :3]


def grey_underlay(image: np.ndarray) -> np.ndarray:
    """The grey picture under a blended heat map: the channel mean of an (H, W[, C]) image in [0, 1],
    contrast-stretched to fill [0, 1] as Captum's ``blended_heat_map`` shows it (matplotlib scales a grey
    image from its darkest to its brightest value). A flat image keeps its grey value (Captum turns it
    black: a stretch of nothing).

    >>> grey_underlay(np.array([[0.2, 0.4], [0.3, 0.2]]))
    array([[0. , 1. ],
           [0.5, 0. ]])
    """
    grey = np.asarray(image, dtype=np.float64)
    grey = grey if grey.ndim == 2 else grey[..., :3].mean(axis=2)
    lo, hi = (grey.min(), grey.max()) if grey.size else (0.0, 0.0)
    return (grey - lo) / (hi - lo) if hi > lo else np.clip(grey, 0.0, 1.0)


def blend(norm: np.ndarray, image: np.ndarray, sign="absolute_value", alpha: float = 0.5,
          cmap=None) -> np.ndarray:
    """A normalised map's heat colours over the image's :func:`grey_underlay` at opacity ``alpha``: RGB
    floats in [0, 1], the pixels a ``blended_heat_map`` panel shows."""
    return alpha * heat_colours(norm, sign, cmap) + (1 - alpha) * grey_underlay(image)[..., None]


def word_colour(value) -> str:
    """A word's background as Captum colours it: green for positive, red for negative, paler when small,
    white for zero (values clipped to [-1, 1]; negative ones reach a lighter red than positive ones
    reach green, lightness ``100 - 40 |v|`` against ``100 - 50 v``, both cut to whole percents).

    >>> word_colour(0.5), word_colour(-1.0), word_colour(0)
    ('hsl(120, 75%, 75%)', 'hsl(0, 75%, 60%)', 'hsl(0, 75%, 100%)')
    """
    v = np.clip(np.nan_to_num(as_numpy(value)), -1, 1)  # in its own dtype, so float32 rounds as Captum's
    hue, lightness = (120, 100 - int(50 * v)) if v > 0 else (0, 100 - int(-40 * v))
    return f"hsl({hue}, 75%, {lightness}%)"


def value_label(value: float) -> str:
    """How a value is written beside its colour (a legend's ends, a heat map's cells): two significant
    digits, so that small values do not read as 0.

    >>> value_label(0.0012), value_label(-0.5), value_label(123.4), value_label(0.0)
    ('0.0012', '-0.5', '1.2e+02', '0')
    """
    return "0" if value == 0 else f"{value:.2g}"
