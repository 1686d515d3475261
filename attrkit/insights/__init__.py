"""The interactive explorer: ipywidgets controls over attribution methods, in a notebook or as a web app.

* :func:`explore` — one model, one image, every method and its settings.
* :class:`AttributionVisualizer` (with :class:`Batch` and :class:`ImageFeature`) — Captum Insights' API: a
  dataset browser with filters and side-by-side methods; ``render()`` in a notebook, ``serve()`` as a local
  web app through Voilà. ``python -m attrkit.insights.example`` starts one on the bundled photos.
"""
from .api import AttributionVisualizer, Batch, ImageFeature
from .widget import Explorer, explore

__all__ = ["explore", "Explorer", "AttributionVisualizer", "Batch", "ImageFeature"]
