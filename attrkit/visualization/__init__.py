"""Pictures of attributions: images, time series and text.

Import it as ``from attrkit import visualization as viz``; the functions take the
same arguments as Captum's ``captum.attr.visualization``. What we add:

* Arrays may be numpy (HWC, as Captum takes them) or torch tensors (CHW, with or
  without a batch dimension of 1, on any device); see :func:`to_hwc_image`.
* Degenerate maps (all zero, constant, one hot pixel, huge outliers) draw
  without warnings; see :func:`normalize_attr`.
* Images normalised for a model can be shown with ``mean=`` and ``std=``.

The parts:

* :mod:`.colors` — the signs, colormaps, normalisation and scale, the grey under a
  blended heat map and the colour of a word: every picture in attrkit (these views,
  the explorers, the LLM plots) takes its colours from there. Green is positive,
  red is negative, blue is absolute value; ``"attrkit_red_white_green"`` and
  ``"attrkit_white_black"`` are registered with matplotlib and can be passed as ``cmap``.
* :mod:`.image` — :func:`visualize_image_attr`, :func:`visualize_image_attr_multiple`;
* :mod:`.timeseries` — :func:`visualize_timeseries_attr`;
* :mod:`.text` — :func:`visualize_text`, :func:`format_word_importances`, and the token
  heat map of :meth:`attrkit.LLMAttributionResult.plot_token_attr`.
"""
from . import colors
from .colors import VisualizeSign, normalize_attr
from .image import (ImageVisualizationMethod, to_hwc_image, visualize_image_attr,
                    visualize_image_attr_multiple)
from .text import (VisualizationDataRecord, format_special_tokens, format_word_importances,
                   visualize_text)
from .timeseries import TimeseriesVisualizationMethod, visualize_timeseries_attr

__all__ = [
    "ImageVisualizationMethod", "TimeseriesVisualizationMethod", "VisualizeSign",
    "VisualizationDataRecord", "colors", "format_special_tokens", "format_word_importances",
    "normalize_attr", "to_hwc_image", "visualize_image_attr", "visualize_image_attr_multiple",
    "visualize_text", "visualize_timeseries_attr",
]
