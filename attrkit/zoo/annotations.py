"""Where the animal is in each Oxford-IIIT Pet sample image: its outline and its head box, as masks.

Two named assets carry the annotations (see ``data/ASSETS.md``): ``oxford-pets-outlines`` (one simplified
polygon per trimap class, traced from the dataset's trimaps, with x and y normalised by the image's width and
height) and ``oxford-pets-head-boxes`` (the head box in pixels, with the image's size). Both resolve offline
through ``$ATTRKIT_MIRROR`` like the photos.

:func:`trimap` rasterises an outline with PIL as the trimaps are coded: fill with background (2), draw the border
polygon (3), then the pet polygon (1). :func:`pet_mask` is pet ∪ border — "the animal": where a trimap's pet
region has several parts (a head cut off by a collar), the traced outline leaves the missing part as border.
:func:`head_mask` is the head box. Every mask can be drawn at any ``size=(height, width)``: the outline is
normalised and the box is scaled, so a mask drawn at a resized image's size lines up with that image.

Example::

    >>> from attrkit.zoo import annotations
    >>> m = annotations.pet_mask("Abyssinian_12", size=(128, 128))      # doctest: +SKIP
    >>> m.shape, m.dtype                                                # doctest: +SKIP
    (torch.Size([128, 128]), torch.bool)
"""
from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from . import assets

__all__ = ["PET", "BACKGROUND", "BORDER", "names", "image_size", "trimap", "pet_mask", "head_box", "head_mask"]

PET, BACKGROUND, BORDER = 1, 2, 3


def _stem(name) -> str:
    """``'Abyssinian_12'`` from ``'Abyssinian_12'``, ``'Abyssinian_12.jpg'`` or a path to the image."""
    if not isinstance(name, (str, Path)):
        raise TypeError(f"name must be an image name or path, got {type(name).__name__}")
    return Path(name).stem


@lru_cache(maxsize=1)
def _outlines() -> dict[str, dict]:
    raw = json.loads(assets.path("oxford-pets-outlines", progress=False).read_text(encoding="utf-8"))
    return {entry["image_id"]: entry for species in raw.values() for breed in species.values() for entry in breed}


@lru_cache(maxsize=1)
def _boxes() -> dict[str, dict]:
    with open(assets.path("oxford-pets-head-boxes", progress=False), newline="", encoding="utf-8") as fh:
        return {row["image_name"]: row for row in csv.DictReader(fh)}


def names() -> list[str]:
    """The image names (without ``.jpg``) that have both an outline and a head box, sorted."""
    return sorted(set(_outlines()) & set(_boxes()))


def _box_row(name) -> dict:
    stem = _stem(name)
    try:
        return _boxes()[stem]
    except KeyError:
        raise KeyError(f"no head box for image {stem!r} in asset 'oxford-pets-head-boxes'") from None


def image_size(name) -> tuple[int, int]:
    """The original image's ``(height, width)`` in pixels."""
    row = _box_row(name)
    return int(row["image_height"]), int(row["image_width"])


def _size(name, size) -> tuple[int, int]:
    if size is None:
        return image_size(name)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (height, width) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def trimap(name, size=None) -> torch.Tensor:
    """The rasterised outline as a ``(height, width)`` uint8 tensor: 1 pet, 2 background, 3 border.

    ``size=(height, width)`` draws it at that size (default: the original image's).
    """
    stem = _stem(name)
    try:
        entry = _outlines()[stem]
    except KeyError:
        raise KeyError(f"no outline for image {stem!r} in asset 'oxford-pets-outlines'") from None
    h, w = _size(stem, size)
    img = Image.new("L", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for part, value in (("boundary", BORDER), ("foreground", PET)):
        points = [(p["x"] * w, p["y"] * h) for p in entry[part]["polygon"]]
        if len(points) >= 3:
            draw.polygon(points, fill=value)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(h, w)


def pet_mask(name, size=None) -> torch.Tensor:
    """Boolean ``(height, width)`` mask of the animal (pet ∪ border of :func:`trimap`)."""
    return trimap(name, size) != BACKGROUND


def head_box(name) -> tuple[int, int, int, int]:
    """The head box ``(xmin, ymin, xmax, ymax)`` in the original image's pixels (inclusive corners)."""
    row = _box_row(name)
    return tuple(int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))


def head_mask(name, size=None) -> torch.Tensor:
    """Boolean ``(height, width)`` mask of the head box, scaled to ``size=(height, width)`` if given."""
    H, W = image_size(name)
    h, w = _size(name, size)
    x0, y0, x1, y1 = head_box(name)
    # pixel i covers [i, i+1) of the original; scale the box's edges [x0, x1+1) and keep pixels whose centre is inside
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * (W / w)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * (H / h)
    inside_x = (xs >= x0) & (xs < x1 + 1)
    inside_y = (ys >= y0) & (ys < y1 + 1)
    return inside_y[:, None] & inside_x[None, :]
