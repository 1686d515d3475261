"""``explore``: one image, one model, and ipywidgets controls over every attribution method.

Moving a control recomputes the attribution (after a short pause, so dragging a slider computes once), with a
spinner while it works; results are cached per setting, so going back is instant. The display controls
(``sign``, ``alpha``, ``outlier_perc``) only redraw. Errors such as a window larger than the image show up as a
message in the widget.
"""
from __future__ import annotations

import html
import io
import threading
import time

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .. import visualization as viz
from . import _methods

DISPLAY = ("sign", "alpha", "outlier_perc")
_COMPUTING = threading.RLock()  # one attribution at a time: hook-based methods must not overlap on a model
SIGNS = ("absolute_value", "all", "positive", "negative")
_SPINNER = ("<style>@keyframes attrkit-spin{to{transform:rotate(360deg)}}</style><span style='display:inline-block;"
            "width:.8em;height:.8em;border:2px solid #888;border-top-color:transparent;border-radius:50%;"
            "animation:attrkit-spin .8s linear infinite'></span> ")


def _controls(methods, method, targets, target, height, width) -> dict:
    window = max(2, min(height, width) // 7)
    style = {"description_width": "7em"}
    slider = dict(continuous_update=False, style=style)
    controls = {
        "method": W.Dropdown(options=methods, value=method, description="method", style=style,
                             tooltip="the attribution method (its attrkit class)"),
        "target": W.Dropdown(options=targets, value=target, description="target", style=style,
                             tooltip="the class to explain; the model's top predictions come first"),
        "n_steps": W.IntSlider(20, 2, 200, description="n_steps", tooltip="integration steps", **slider),
        "stdevs": W.FloatSlider(0.15, min=0.0, max=1.0, step=0.01, description="stdevs",
                                tooltip="standard deviation of the added noise", **slider),
        "nt_samples": W.IntSlider(5, 1, 50, description="nt_samples", tooltip="noisy samples", **slider),
        "window": W.IntSlider(window, 1, 64, description="window", tooltip="square patch size, pixels", **slider),
        "stride": W.IntSlider(max(1, window // 2), 1, 32, description="stride", tooltip="patch step, pixels",
                              **slider),
        "sign": W.Dropdown(options=SIGNS, value="absolute_value", description="sign", style=style,
                           tooltip="which part of the attribution to show"),
        "alpha": W.FloatSlider(0.6, min=0.0, max=1.0, step=0.05, description="alpha", tooltip="overlay opacity",
                               **slider),
        "outlier_perc": W.FloatSlider(2.0, min=0.0, max=20.0, step=0.5, description="outlier_perc",
                                      tooltip="percent of the largest values clipped", **slider),
    }
    for name, control in controls.items():
        control.layout = W.Layout(width="340px")  # one Layout each: hiding a control must not hide the others
        control.add_class(f"attrkit-{name}")  # a stable handle for browser tests and custom CSS
    return controls


def image_png(image: np.ndarray) -> bytes:
    """An HWC (or HW) float image in [0, 1] as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="png")
    return buf.getvalue()


def attribution_png(attr, image, sign="absolute_value", alpha=0.6, outlier_perc=2.0, size=320) -> bytes:
    """``attr`` (1, C, H, W) as a heat map blended over ``image`` (H, W[, 3]), as PNG bytes (matplotlib Agg,
    no pyplot: nothing is left open)."""
    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    viz.visualize_image_attr(attr[0], image, "blended_heat_map", sign, plt_fig_axis=(fig, ax),
                             outlier_perc=outlier_perc, alpha_overlay=alpha, use_pyplot=False)
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fig.clear()
    return buf.getvalue()


def scores_of(model, inputs, score_func=None, additional_forward_args=None) -> torch.Tensor:
    """The model's class scores for one example, as a 1-D CPU tensor (softmax when ``score_func`` is None)."""
    args = additional_forward_args if isinstance(additional_forward_args, tuple) else (
        () if additional_forward_args is None else (additional_forward_args,))
    with torch.no_grad():
        out = model(inputs, *args)
    out = torch.softmax(out, dim=-1) if score_func is None else score_func(out)
    return out.reshape(-1).detach().float().cpu()


def _score_text(score: float, probabilities: bool) -> str:
    return f"{score:.1%}" if probabilities else f"{score:.3g}"


class Explorer(W.VBox):
    """The widget :func:`explore` returns: ``controls`` (name -> ipywidget), ``attribution`` (the latest
    attribution tensor; it keeps the last good one while an error is shown), ``error`` (the message, or None),
    ``status``, and the ``original`` and ``heatmap`` images. ``settings`` gives initial control values."""

    def __init__(self, model, inputs, image, classes=None, target=None, baselines=None, *, score_func=None,
                 additional_forward_args=None, layer=None, settings=None, debounce=0.3, size=320):
        self.model, self.inputs, self.image, self.layer = model, inputs, image, layer
        self.args, self.debounce, self.size = additional_forward_args, debounce, size
        self.baselines = (baselines.to(inputs.device).expand_as(inputs) if isinstance(baselines, torch.Tensor)
                          else torch.full_like(inputs, float(baselines or 0.0)))
        scores = scores_of(model, inputs, score_func, additional_forward_args)
        classes = list(classes) if classes is not None else [f"class {i}" for i in range(len(scores))]
        probabilities = score_func is None or bool(scores.min() >= 0 and abs(float(scores.sum()) - 1) < 1e-3)
        order = scores.argsort(descending=True).tolist()
        targets = [(f"{classes[i]} ({_score_text(float(scores[i]), probabilities)})", i) for i in order]
        target = classes.index(target) if isinstance(target, str) else (order[0] if target is None else int(target))
        methods = _methods.available(model, layer)
        self.controls = _controls(methods, "IntegratedGradients" if "IntegratedGradients" in methods else methods[0],
                                  targets, target, *inputs.shape[-2:])
        for name, value in (settings or {}).items():  # initial values, e.g. carried over from another explorer
            if name != "target" and (name != "method" or value in methods):
                self.controls[name].value = value
        self.attribution, self.error, self._cache, self._timer = None, None, {}, None
        self._draw_lock = threading.Lock()
        box = lambda: W.Layout(width=f"{size}px", height=f"{size}px", object_fit="contain")  # noqa: E731
        self.original = W.Image(value=image_png(image), format="png", layout=box())
        self.heatmap = W.Image(format="png", layout=box())
        self.heatmap.add_class("attrkit-heatmap")
        self.status = W.HTML(layout=W.Layout(min_height="1.6em"))
        self.status.add_class("attrkit-status")
        panel = W.VBox(list(self.controls.values()), layout=W.Layout(width="360px"))
        super().__init__([W.HBox([panel, W.VBox([W.HBox([self.original, self.heatmap]), self.status])])])
        for name, control in self.controls.items():
            control.observe(lambda change, name=name: self._changed(name), names="value")
        self._show_relevant()
        self.refresh()

    # -- computing --------------------------------------------------------------------------------------------
    def _settings(self, method=None):
        method = method or self.controls["method"].value
        params = {name: self.controls[name].value for name in _methods.METHODS[method]}
        return (method, self.controls["target"].value, *sorted(params.items())), params

    def attribute(self, method: str | None = None) -> torch.Tensor:
        """The attribution by ``method`` (default: the chosen one) at the current settings, from the cache when
        it was computed before."""
        key, params = self._settings(method)
        with _COMPUTING:
            if key not in self._cache:
                self._cache[key] = _methods.attribute(key[0], self.model, self.inputs, key[1], self.baselines,
                                                      params, self.layer, self.args).detach()
        return self._cache[key]

    def refresh(self) -> None:
        """Compute (or fetch from the cache) the attribution for the current settings and redraw."""
        with _COMPUTING:
            key, _ = self._settings()
            cached, start = key in self._cache, time.perf_counter()
            if not cached:
                self._say(f"{_SPINNER}computing {html.escape(key[0])}…")
            try:
                attribution = self.attribute()
            except Exception as e:  # shown in the widget instead of a traceback
                self.error = f"{type(e).__name__}: {e}"
                self._say(f"<span style='color:#b00020'>⚠ {html.escape(self.error)}</span>")
                return
            self.attribution, self.error = attribution, None
            self.redraw()
            took = "from the cache" if cached else f"in {time.perf_counter() - start:.2f} s"
            self._say(f"{html.escape(key[0])} {took}")

    def redraw(self) -> None:
        """Draw ``attribution`` with the current display settings."""
        if self.attribution is None:
            return
        c = self.controls
        with self._draw_lock:
            self.heatmap.value = attribution_png(self.attribution, self.image, c["sign"].value, c["alpha"].value,
                                                 c["outlier_perc"].value, self.size)

    # -- reacting to the controls -----------------------------------------------------------------------------
    def _changed(self, name: str) -> None:
        if name in DISPLAY:
            return self.redraw()
        if name == "method":
            self._show_relevant()
        if self._timer is not None:
            self._timer.cancel()
        if self.debounce <= 0:
            return self.refresh()
        self._timer = threading.Timer(self.debounce, self.refresh)
        self._timer.daemon = True
        self._timer.start()

    def _show_relevant(self) -> None:
        used = _methods.METHODS[self.controls["method"].value]
        for name in ("n_steps", "stdevs", "nt_samples", "window", "stride"):
            self.controls[name].layout.display = None if name in used else "none"

    def _say(self, text: str) -> None:
        self.status.value = f"<div role='status' aria-live='polite'>{text}</div>"


def _display_image(image, transform, inputs) -> np.ndarray:
    """The picture the model sees, for display: ``transform`` without its ``Normalize`` steps when that gives
    the input's height and width, else the input min-max rescaled."""
    steps = [t for t in getattr(transform, "transforms", []) if type(t).__name__ != "Normalize"]
    if steps:
        shown = image
        for step in steps:
            shown = step(shown)
        if isinstance(shown, torch.Tensor) and tuple(shown.shape[-2:]) == tuple(inputs.shape[-2:]):
            return viz.to_hwc_image(shown)
    return viz.to_hwc_image(inputs)


def explore(model, image, target=None, classes=None, transform=None, baselines=None, *, layer=None, method=None,
            debounce=0.3):
    """An interactive explorer of ``model``'s attributions for one image; display the result in a notebook.

    ``image`` is a PIL image (``transform`` turns it into the model's input; default: a [0, 1] tensor) or a CHW
    tensor (``transform``, if given, is applied to it). ``target`` is a class index or name (default: the top
    prediction); ``classes`` names the outputs; ``baselines`` is a number or a tensor like the input (default 0);
    ``layer`` is Grad-CAM's layer (default: the last ``nn.Conv2d``); ``debounce`` is the pause, in seconds,
    before a moved control recomputes (0: at once).

    Example:
        >>> import torch
        >>> from attrkit.insights import explore
        >>> from attrkit.testing import TinyImageCNN
        >>> w = explore(TinyImageCNN().eval(), torch.rand(3, 32, 32), debounce=0)
        >>> w.controls["n_steps"].value = 10        # recomputes IntegratedGradients
        >>> w.attribution.shape
        torch.Size([1, 3, 32, 32])
    """
    if isinstance(image, torch.Tensor):
        inputs = transform(image) if transform is not None else image
    else:
        from torchvision.transforms.functional import to_tensor
        inputs = (transform or to_tensor)(image)
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(0)
    picture = _display_image(image, transform, inputs)
    device = next(iter(model.parameters()), torch.empty(0)).device
    return Explorer(model, inputs.to(device), picture, classes, target, baselines, layer=layer,
                    settings={"method": method} if method else None, debounce=debounce)
