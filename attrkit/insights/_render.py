"""Drawing for the explorers, without matplotlib figures: a heat map blended over a photo as an RGB array, the
colour legend beside it (sign and scale), and image encoding. The colours are those of
:func:`attrkit.visualization.visualize_image_attr` (``blended_heat_map``): the same colormaps, the same
normalisation (:func:`~attrkit.visualization.normalize_attr`), a grey photo under the colours."""
from __future__ import annotations

import base64
import html
import io

import matplotlib
import numpy as np
from PIL import Image

from .. import visualization as viz

# sign -> what the colours stand for (the colormaps are visualization._SIGNS)
_MEANING = {"absolute_value": "|attribution|", "positive": "positive attribution",
            "negative": "negative attribution (magnitude)", "all": "attribution"}


def _summed(attr) -> np.ndarray:
    """(1, C, H, W), (C, H, W) or (H, W) -> (H, W) numpy, channels summed (as the image visualisations do)."""
    a = attr.detach().float().cpu().numpy() if hasattr(attr, "detach") else np.asarray(attr, dtype=np.float64)
    while a.ndim > 3:
        a = a[0]
    return a.sum(axis=0) if a.ndim == 3 else a


def scale_of(attr, sign: str = "absolute_value", outlier_perc: float = 2.0) -> float:
    """The attribution value that the colour scale's end stands for (what ``normalize_attr`` divides by)."""
    a = _summed(attr)
    a = {"all": np.abs(a), "positive": np.maximum(a, 0), "negative": np.maximum(-a, 0),
         "absolute_value": np.abs(a)}[sign]
    sizes = np.sort(np.nan_to_num(a), axis=None)
    total = np.cumsum(sizes)
    if total.size == 0 or total[-1] == 0:
        return 0.0
    i = np.searchsorted(total, total[-1] * 0.01 * (100 - outlier_perc))
    return float(sizes[min(i, sizes.size - 1)])


def blend(attr, image: np.ndarray, sign: str = "absolute_value", alpha: float = 0.6,
          outlier_perc: float = 2.0) -> np.ndarray:
    """``attr``'s heat map (channels summed) over ``image`` (H, W[, 3] in [0, 1]) turned grey, as uint8 RGB."""
    norm = viz.normalize_attr(_summed(attr), sign, outlier_perc)
    cmap_name, vmin = viz._SIGNS[sign]
    colours = matplotlib.colormaps[cmap_name]((norm - vmin) / (1 - vmin))[..., :3]
    grey = image if image.ndim == 2 else image[..., :3].mean(axis=2)
    out = alpha * colours + (1 - alpha) * np.clip(grey, 0, 1)[..., None]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "png", quality: int = 80, min_size: int = 0) -> bytes:
    """An RGB (or grey) uint8/float array as image bytes; upscaled (nearest neighbour) to at least ``min_size``
    pixels on its shorter side, so tiny inputs are not blurred by the browser."""
    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(rgb)
    if min_size and min(img.size) < min_size:
        k = -(-min_size // min(img.size))
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    buf = io.BytesIO()
    options = {"png": {}, "jpeg": {"quality": quality}, "webp": {"quality": quality, "method": 4}}[fmt]
    img.save(buf, format=fmt.upper(), **options)
    return buf.getvalue()


def data_uri(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


def _gradient(sign: str, n: int = 9) -> str:
    cmap_name, vmin = viz._SIGNS[sign]
    cmap = matplotlib.colormaps[cmap_name]
    stops = ", ".join(matplotlib.colors.to_hex(cmap(t)) for t in np.linspace(0, 1, n))
    return f"linear-gradient(to top, {stops})"


def _number(x: float) -> str:
    return "0" if x == 0 else f"{x:.2g}"


def legend_html(sign: str, scale: float, outlier_perc: float = 2.0, height: int = 160) -> str:
    """A vertical colour bar with its meaning: the sign shown and the attribution value at each end (values beyond
    the ends, the ``outlier_perc`` percent largest, are clipped to the end colour)."""
    _, vmin = viz._SIGNS[sign]
    top = _number(scale)
    bottom = f"−{top}" if vmin < 0 else "0"
    middle = "<span style='position:absolute;top:50%;transform:translateY(-50%)'>0</span>" if vmin < 0 else ""
    note = {"all": "green +, red −", "positive": "green: raises the score", "negative": "red: lowers the score",
            "absolute_value": "blue: magnitude"}[sign]
    title = (f"{_MEANING[sign]}; colours end at {top} (the largest {outlier_perc:g}% are clipped)")
    return (f"<div class='attrkit-legend' title='{html.escape(title)}' style='display:flex;flex-direction:column;"
            f"align-items:flex-start;font:11px/1.2 sans-serif;color:#333;width:84px'>"
            f"<div style='display:flex;gap:4px;height:{height}px'>"
            f"<div style='width:14px;border:1px solid #999;background:{_gradient(sign)}'></div>"
            f"<div style='position:relative;width:60px'><span style='position:absolute;top:0'>{top}</span>{middle}"
            f"<span style='position:absolute;bottom:0'>{bottom}</span></div></div>"
            f"<div style='margin-top:4px;white-space:normal'>{html.escape(note)}</div></div>")
