"""``explore``: one image, one model, and ipywidgets controls over every attribution method.

Moving a control recomputes the attribution after a short pause (so dragging a slider computes once). The old map
dims and a spinner turns while it works; a newer setting supersedes older requests, and a computation that is
already running stops at its next batch (see :class:`Explorer`). Results are cached per setting, so going back is
instant. The display controls (``sign``, ``alpha``, ``outlier_perc``) only redraw, and a colour legend beside the map
says what its colours mean. Sliders only offer valid values (an occlusion window fits in the image), and a setting
estimated to take long says so before it starts (see :mod:`attrkit.insights._status`). Errors show up as a message.

The status line sits above the controls, where it is seen without scrolling: it names the method, the class the map
explains, the baseline the method compares with (by default a black image sent through the photo's ``transform``)
and how long the map took; the map's title names the method and the class too.

The layout wraps: the controls, then the photo and the map beside them when there is room, below them when there
is not (a notebook with its file browser open, Colab), and the images shrink before anything overlaps.
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
from torch import nn

from .. import visualization as viz
from ..visualization import colors
from . import _methods, _render, _status

DISPLAY = ("sign", "alpha", "outlier_perc")
_COMPUTING = threading.RLock()  # one attribution at a time: hook-based methods must not overlap on a model
SIGNS = tuple(colors.SIGNS)  # the sign drop-down's options
_SPINNER = ("<style>@keyframes attrkit-spin{to{transform:rotate(360deg)}}</style><span style='display:inline-block;"
            "width:.8em;height:.8em;border:2px solid #888;border-top-color:transparent;border-radius:50%;"
            "animation:attrkit-spin .8s linear infinite'></span> ")
# the explorer's own CSS: a dimmed (stale) map, and status text that wraps instead of widening the layout
_CSS = ("<style>.attrkit-stale{opacity:.35;transition:opacity .15s}"
        ".attrkit-status .widget-html-content,.attrkit-status .jupyter-widget-html-content{white-space:normal;"
        "overflow-wrap:anywhere;line-height:1.4}</style>")


class _Cancelled(Exception):
    """Raised inside the model's forward pass when a newer request has superseded the running one."""


class _Guarded(nn.Module):
    """``model`` with a check before each forward pass: once ``stale()`` is true the next pass raises
    :class:`_Cancelled`. Batched methods call the model once per batch, so a computation stops at its next
    batch without the algorithms knowing about it."""

    def __init__(self, model: nn.Module, stale):
        super().__init__()
        self.model, self._stale = model, stale
        self.training = model.training  # as the model is: a method that restores the mode restores this one

    def forward(self, *args, **kwargs):
        if self._stale():
            raise _Cancelled()
        return self.model(*args, **kwargs)


def _controls(methods, method, targets, target, height, width) -> dict:
    window = max(2, min(height, width) // 7)
    stride_lo, stride_hi = _methods.window_stride_bounds(height, width, window)
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
        "window": W.IntSlider(window, 1, min(height, width), description="window",
                              tooltip="square patch size, pixels (at most the image's size)", **slider),
        "stride": W.IntSlider(min(max(stride_lo, window // 2), stride_hi), stride_lo, stride_hi,
                              description="stride", tooltip="patch step, pixels (at most the window)", **slider),
        "sign": W.Dropdown(options=SIGNS, value="absolute_value", description="sign", style=style,
                           tooltip="which part of the attribution to show"),
        "alpha": W.FloatSlider(0.6, min=0.0, max=1.0, step=0.05, description="alpha", tooltip="overlay opacity",
                               **slider),
        "outlier_perc": W.FloatSlider(2.0, min=0.0, max=20.0, step=0.5, description="outlier_perc",
                                      tooltip="percent of the largest values clipped", **slider),
    }
    for name, control in controls.items():
        # one Layout each (hiding a control must not hide the others); the panel's width, never squeezed
        control.layout = W.Layout(width="340px", min_width="340px", flex="0 0 auto")
        control.add_class(f"attrkit-{name}")  # a stable handle for browser tests and custom CSS
    return controls


def image_png(image: np.ndarray, min_size: int = 0) -> bytes:
    """An HWC (or HW) float image in [0, 1] as PNG bytes (upscaled to at least ``min_size`` pixels)."""
    return _render.encode(np.asarray(image, dtype=np.float64), "png", min_size=min_size)


def attribution_png(attr, image, sign="absolute_value", alpha=0.6, outlier_perc=2.0, size=320) -> bytes:
    """``attr`` (1, C, H, W) as a heat map blended over ``image`` (H, W[, 3]), as PNG bytes (matplotlib Agg,
    no pyplot: nothing is left open). The explorer draws with :func:`attrkit.insights._render.blend`, the same
    colours without a figure."""
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
    ``status``, the map's ``title``, the ``original`` and ``heatmap`` images and the ``legend``. ``settings`` gives
    initial control values; ``baseline_name`` is what the status calls ``baselines`` (default: from its value).

    How stale work is avoided: every change of a computing control starts a new *request* (a generation number)
    and dims the map. After ``debounce`` seconds a worker thread computes it if it is still the newest request;
    the model it hands to the method is wrapped so that its next forward pass raises once a newer request exists
    — IG's steps, noise samples and occlusion windows run in batches, so a superseded computation stops at its
    next batch. Finished results are cached even when superseded; only the newest request draws. With
    ``debounce=0`` everything runs at once in the caller's thread (scripts and tests)."""

    def __init__(self, model, inputs, image, classes=None, target=None, baselines=None, *, score_func=None,
                 additional_forward_args=None, layer=None, settings=None, debounce=0.3, size=320,
                 baseline_name=None):
        self.model, self.inputs, self.image, self.layer = model, inputs, image, layer
        self.args, self.debounce, self.size = additional_forward_args, debounce, size
        self.baselines = (baselines.to(inputs.device).expand_as(inputs) if isinstance(baselines, torch.Tensor)
                          else torch.full_like(inputs, float(baselines or 0.0)))
        self.baseline_name = baseline_name or _status.baseline_name(baselines)
        with _COMPUTING:  # not while another explorer's hooks may be on the model
            scores = scores_of(model, inputs, score_func, additional_forward_args)
        self._timing = _status.Timing()  # estimates from measured maps only (a lone forward pass misleads)
        classes = list(classes) if classes is not None else [f"class {i}" for i in range(len(scores))]
        probabilities = score_func is None or bool(scores.min() >= 0 and abs(float(scores.sum()) - 1) < 1e-3)
        order = scores.argsort(descending=True).tolist()
        targets = [(f"{classes[i]} ({_score_text(float(scores[i]), probabilities)})", i) for i in order]
        self._labels = dict((i, label) for label, i in targets)
        target = classes.index(target) if isinstance(target, str) else (order[0] if target is None else int(target))
        methods = _methods.available(model, layer)
        self.controls = _controls(methods, "IntegratedGradients" if "IntegratedGradients" in methods else methods[0],
                                  targets, target, *inputs.shape[-2:])
        for name, value in (settings or {}).items():  # initial values, e.g. carried over from another explorer
            if name == "stride":
                continue  # set after the window, which bounds it
            if name != "target" and (name != "method" or value in methods):
                self.controls[name].value = value
        self._bound_stride()
        if settings and "stride" in settings:
            self.controls["stride"].value = settings["stride"]
        self.attribution, self.error, self._cache, self._timer = None, None, {}, None
        self._generation, self._lock = 0, threading.RLock()
        px = f"{size}px"
        image_layout = lambda: W.Layout(width=px, max_width="100%", height="auto", flex="0 1 auto",  # noqa: E731
                                        object_fit="contain")
        self.original = W.Image(value=image_png(image, size // 2), format="png", layout=image_layout())
        self.heatmap = W.Image(format="png", layout=image_layout())
        self.heatmap.add_class("attrkit-heatmap")
        self.title = W.HTML(layout=W.Layout(max_width=px, margin="0 0 2px 0"))
        self.title.add_class("attrkit-title")
        self.legend = W.HTML(layout=W.Layout(flex="0 0 auto", margin="0 0 0 6px"))
        self.legend.add_class("attrkit-legend-box")
        self.status = W.HTML(layout=W.Layout(min_height="2.9em", width="100%", margin="0 0 4px 0"))
        self.status.add_class("attrkit-status")
        wrap = dict(display="flex", flex_flow="row wrap", align_items="flex-start", overflow="visible")
        panel = W.VBox(list(self.controls.values()),
                       layout=W.Layout(width="360px", min_width="360px", flex="0 0 auto", overflow="visible"))
        panel.add_class("attrkit-panel")
        titled = W.VBox([self.title, self.heatmap], layout=W.Layout(flex="0 1 auto", max_width="100%",
                                                                    overflow="visible"))
        mapped = W.HBox([titled, self.legend], layout=W.Layout(flex="0 1 auto", max_width="100%",
                                                               align_items="flex-start", overflow="visible"))
        images = W.HBox([self.original, mapped], layout=W.Layout(flex="1 1 auto", max_width="100%", **wrap))
        images.add_class("attrkit-images")
        body = W.HBox([panel, images], layout=W.Layout(width="100%", **wrap))
        # the status first: above the controls, seen without scrolling wherever the explorer's top is
        super().__init__([W.HTML(_CSS, layout=W.Layout(display="none")), self.status, body],
                         layout=W.Layout(width="100%", max_width=f"{360 + 2 * size + 110}px", overflow="visible"))
        self.add_class("attrkit-explorer")
        for name, control in self.controls.items():
            control.observe(lambda change, name=name: self._changed(name), names="value")
        self._show_relevant()
        if self.debounce <= 0:
            self.refresh()
        else:
            self._request(delay=0.0)  # the first map comes from the worker: the widget shows at once

    # -- computing --------------------------------------------------------------------------------------------
    def _settings(self, method=None):
        method = method or self.controls["method"].value
        params = {name: self.controls[name].value for name in _methods.METHODS[method]}
        return (method, self.controls["target"].value, *sorted(params.items())), params

    def _compute(self, key, params, stale=None):
        model = self.model if stale is None else _Guarded(self.model, stale)
        return _methods.attribute(key[0], model, self.inputs, key[1], self.baselines, params,
                                  self.layer if self.layer is not None else _methods.last_conv(self.model),
                                  self.args).detach()

    def attribute(self, method: str | None = None) -> torch.Tensor:
        """The attribution by ``method`` (default: the chosen one) at the current settings, from the cache when
        it was computed before."""
        key, params = self._settings(method)
        with _COMPUTING:
            if key not in self._cache:
                self._cache[key] = self._compute(key, params)
        return self._cache[key]

    def refresh(self) -> None:
        """Compute (or fetch from the cache) the attribution for the current settings and redraw, now, in this
        thread."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self._work(generation, guarded=False)

    def cancel(self) -> None:
        """Abandon pending and running work (it stops at its next batch); nothing is redrawn."""
        with self._lock:
            self._generation += 1
            if self._timer is not None:
                self._timer.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the newest request has been drawn (or abandoned); True unless ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            timer = self._timer
            if timer is None or timer is threading.current_thread():
                return True
            timer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if timer.is_alive():
                return False
            if timer is self._timer:
                return True

    def estimate(self, method: str | None = None) -> float | None:
        """Seconds the current settings (with ``method``) should take: the method's cost times the speed of its
        own last run, else of the last run of any method; None before the first map (see
        :class:`attrkit.insights._status.Timing`)."""
        key, params = self._settings(method)
        return self._timing.estimate(key[0], _methods.cost(key[0], params, self.inputs))

    def _request(self, delay: float | None = None) -> None:
        """A computing control changed: supersede older requests, dim the map, and compute after the pause."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            if self._timer is not None:
                self._timer.cancel()
            key, _ = self._settings()
            if key in self._cache:  # instant: no pause, no spinner (and no wait for a superseded computation)
                self._timer = None
                self._show(self._cache[key], key, "from the cache")
                return
            self.heatmap.add_class("attrkit-stale")
            self._say(_status.computing_text(_SPINNER, key[0], self._labels.get(key[1], str(key[1])),
                                             self.estimate()))
            self._timer = threading.Timer(self.debounce if delay is None else delay, self._work, (generation,))
            self._timer.daemon = True
            self._timer.start()

    def _work(self, generation: int, guarded: bool = True) -> None:
        stale = lambda: self._generation != generation  # noqa: E731
        if stale():
            return
        with _COMPUTING:
            if stale():
                return
            key, params = self._settings()
            cached, start = key in self._cache, time.perf_counter()
            if not cached:
                try:
                    attribution = self._compute(key, params, stale if guarded else None)
                except _Cancelled:
                    return
                except Exception as e:  # shown in the widget instead of a traceback
                    with self._lock:
                        if not stale():
                            self.error = f"{type(e).__name__}: {e}"
                            self.heatmap.remove_class("attrkit-stale")
                            self._say(f"<span style='color:#b00020'>⚠ {html.escape(self.error)}</span>")
                    return
                self._cache[key] = attribution
                seconds = time.perf_counter() - start
                self._timing.record(key[0], _methods.cost(key[0], params, self.inputs), seconds)
        with self._lock:
            if not stale():
                self._show(self._cache[key], key, "from the cache" if cached else f"in {seconds:.2f} s")

    def _show(self, attribution, key, took: str) -> None:
        method, label = key[0], self._labels.get(key[1], str(key[1]))
        self.attribution, self.error = attribution, None
        self.redraw()
        self.heatmap.remove_class("attrkit-stale")
        self.title.value = _status.title_html(method, label)
        baseline = self.baseline_name if _methods.REGISTRY[method].uses_baseline else None
        self._say(_status.done_text(method, label, baseline, took))

    def redraw(self) -> None:
        """Draw ``attribution`` with the current display settings, and its legend."""
        if self.attribution is None:
            return
        c = self.controls
        sign, outliers = c["sign"].value, c["outlier_perc"].value
        with self._lock:
            rgb = _render.blend(self.attribution, self.image, sign, c["alpha"].value, outliers)
            self.heatmap.value = _render.encode(rgb, "png", min_size=self.size // 2)
            self.legend.value = _render.legend_html(sign, _render.scale_of(self.attribution, sign, outliers),
                                                    outliers, height=max(80, self.size // 2))

    # -- reacting to the controls -----------------------------------------------------------------------------
    def _changed(self, name: str) -> None:
        if name in DISPLAY:
            return self.redraw()
        if name == "method":
            self._show_relevant()
        if name == "window":
            self._bound_stride()
        if self.debounce <= 0:
            return self.refresh()
        self._request()

    def _bound_stride(self) -> None:
        """The stride slider offers only what the window allows (see :func:`_methods.window_stride_bounds`)."""
        stride = self.controls["stride"]
        lo, hi = _methods.window_stride_bounds(*self.inputs.shape[-2:], self.controls["window"].value)
        with stride.hold_trait_notifications():
            stride.max = max(hi, stride.min)
            stride.min = lo
            stride.max = hi

    def _show_relevant(self) -> None:
        used = _methods.METHODS[self.controls["method"].value]
        for name in ("n_steps", "stdevs", "nt_samples", "window", "stride"):
            self.controls[name].layout.display = None if name in used else "none"

    def _say(self, text: str) -> None:
        self.status.value = f"<div role='status' aria-live='polite'>{text}</div>"


def explore(model, image, target=None, classes=None, transform=None, baselines=None, *, layer=None, method=None,
            debounce=0.3):
    """An interactive explorer of ``model``'s attributions for one image; display the result in a notebook.

    ``image`` is a PIL image (``transform`` turns it into the model's input; default: a [0, 1] tensor) or a CHW
    tensor (``transform``, if given, is applied to it). ``target`` is a class index or name (default: the top
    prediction); ``classes`` names the outputs; ``baselines`` is a number or a tensor like the input (default: a
    black image sent through ``transform``, the baseline the chapters teach; zeros when there is no transform and
    the input is not a [0, 1] picture — the status line names the one used);
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
    picture = _render.display_image(image, transform, inputs)
    device = next(iter(model.parameters()), torch.empty(0)).device
    inputs = inputs.to(device)
    name = None
    if baselines is None:
        baselines, name = _status.black_baseline(image, transform, inputs)
    return Explorer(model, inputs, picture, classes, target, baselines, layer=layer,
                    settings={"method": method} if method else None, debounce=debounce, baseline_name=name)
