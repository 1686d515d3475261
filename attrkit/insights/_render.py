"""Drawing for the explorers, without matplotlib figures: a heat map blended over a photo as an RGB array, the
colour legend beside it (sign and scale), and image encoding. The colours are those of
:func:`attrkit.visualization.visualize_image_attr` (``blended_heat_map``): the same colormaps, the same
normalisation and the same grey photo under the colours, all from :mod:`attrkit.visualization.colors`."""
from __future__ import annotations

import base64
import html
import io

import matplotlib
import numpy as np
import torch
from PIL import Image

from ..visualization import colors, to_hwc_image


def _summed(attr) -> np.ndarray:
    """(1, C, H, W), (C, H, W) or (H, W) -> (H, W) numpy, channels summed (as the image visualisations do)."""
    a = attr.detach().float().cpu().numpy() if hasattr(attr, "detach") else np.asarray(attr, dtype=np.float64)
    while a.ndim > 3:
        a = a[0]
    return a.sum(axis=0) if a.ndim == 3 else a


def scale_of(attr, sign: str = "absolute_value", outlier_perc: float = 2.0) -> float:
    """The attribution value that the colour scale's end stands for (channels summed; see
    :func:`attrkit.visualization.colors.scale_of`)."""
    return colors.scale_of(_summed(attr), sign, outlier_perc)


def blend(attr, image: np.ndarray, sign: str = "absolute_value", alpha: float = 0.6,
          outlier_perc: float = 2.0) -> np.ndarray:
    """``attr``'s heat map (channels summed) over ``image`` (H, W[, 3] in [0, 1]) in grey, as uint8 RGB: the
    pixels of a ``blended_heat_map`` panel (:func:`attrkit.visualization.colors.blend`)."""
    rgb = colors.blend(colors.normalize_attr(_summed(attr), sign, outlier_perc), image, sign, alpha)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


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
    cmap = colors.colormap(sign)
    stops = ", ".join(matplotlib.colors.to_hex(cmap(t)) for t in np.linspace(0, 1, n))
    return f"linear-gradient(to top, {stops})"


def legend_html(sign: str, scale: float, outlier_perc: float = 2.0, height: int = 160) -> str:
    """A vertical colour bar with its meaning: the sign shown and the attribution value at each end (values beyond
    the ends, the ``outlier_perc`` percent largest, are clipped to the end colour)."""
    style = colors.SIGNS[colors.sign_name(sign)]
    top = colors.value_label(scale)
    bottom = f"−{top}" if style.vmin < 0 else "0"
    middle = "<span style='position:absolute;top:50%;transform:translateY(-50%)'>0</span>" if style.vmin < 0 else ""
    title = (f"{style.meaning}; colours end at {top} (the largest {outlier_perc:g}% are clipped)")
    return (f"<div class='attrkit-legend' title='{html.escape(title)}' style='display:flex;flex-direction:column;"
            f"align-items:flex-start;font:11px/1.2 sans-serif;color:#333;width:84px'>"
            f"<div style='display:flex;gap:4px;height:{height}px'>"
            f"<div style='width:14px;border:1px solid #999;background:{_gradient(sign)}'></div>"
            f"<div style='position:relative;width:60px'><span style='position:absolute;top:0'>{top}</span>{middle}"
            f"<span style='position:absolute;bottom:0'>{bottom}</span></div></div>"
            f"<div style='margin-top:4px;white-space:normal'>{html.escape(style.key)}</div></div>")


def display_image(image, transform, inputs) -> np.ndarray:
    """The picture the model sees, for display: ``transform`` without its ``Normalize`` steps when that gives
    the input's height and width, else the input min-max rescaled."""
    steps = [t for t in getattr(transform, "transforms", []) if type(t).__name__ != "Normalize"]
    if steps:
        shown = image
        for step in steps:
            shown = step(shown)
        if isinstance(shown, torch.Tensor) and tuple(shown.shape[-2:]) == tuple(inputs.shape[-2:]):
            return to_hwc_image(shown)
    return to_hwc_image(inputs)
