"""Captum Insights' API over the explorer: ``AttributionVisualizer``, ``Batch`` and ``ImageFeature``."""
from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import ipywidgets as W
import torch

from .. import visualization as viz
from .widget import _SPINNER, Explorer, attribution_png, scores_of


class Batch:
    """A batch of examples for :class:`AttributionVisualizer`: ``inputs`` (N, C, H, W) before the feature's
    ``input_transforms``, ``labels`` (N,) class indices (or None), and ``additional_args`` for the model
    (tensors with N rows are split per example; anything else is passed as it is)."""

    def __init__(self, inputs, labels, additional_args=None):
        self.inputs, self.labels, self.additional_args = inputs, labels, additional_args


def _as_list(transforms) -> list:
    return [] if transforms is None else list(transforms) if isinstance(transforms, (list, tuple)) else [transforms]


class ImageFeature:
    """An image input of the model. ``input_transforms`` (callables, applied in order to one CHW example) make
    the model's input, e.g. a normalisation; ``baseline_transforms[0]`` maps that input to the baseline (none:
    zeros); ``visualization_transform`` maps the untransformed example to the picture shown (default: itself)."""

    def __init__(self, name: str, baseline_transforms, input_transforms, visualization_transform=None):
        self.name = name
        self.baseline_transforms = _as_list(baseline_transforms)
        self.input_transforms = _as_list(input_transforms)
        self.visualization_transform = visualization_transform

    @staticmethod
    def visualization_type() -> str:
        return "image"

    def model_input(self, example: torch.Tensor) -> torch.Tensor:
        for transform in self.input_transforms:
            example = transform(example)
        return example

    def baseline(self, model_input: torch.Tensor):
        return self.baseline_transforms[0](model_input) if self.baseline_transforms else None


@dataclass
class _Example:
    inputs: torch.Tensor  # one untransformed CHW example
    label: Optional[int]
    args: Any


def _example_args(args, i: int):
    if args is None:
        return None
    pick = lambda a: a[i:i + 1] if isinstance(a, torch.Tensor) and a.dim() > 0 else a  # noqa: E731
    return tuple(pick(a) for a in args) if isinstance(args, tuple) else pick(args)


class AttributionVisualizer:
    """Browse attributions over a dataset: filter examples by predicted and true class, pick one, explore it
    with every method's settings, and compare methods side by side.

    ``models`` is a model or a list of them, ``classes`` the class names, ``features`` one :class:`ImageFeature`,
    ``dataset`` an iterable of :class:`Batch` (read up to ``max_examples`` examples; it may be endless),
    ``score_func`` maps outputs to class scores (e.g. softmax; None: the raw outputs). ``render()`` shows it in
    a notebook and ``serve()`` as a local web app. Only image features and class-index targets
    (``use_label_for_attr=True``) are supported.

    Example:
        >>> import torch
        >>> from attrkit.insights import AttributionVisualizer, Batch, ImageFeature
        >>> from attrkit.testing import TinyImageCNN
        >>> vis = AttributionVisualizer(TinyImageCNN().eval(), [f"c{i}" for i in range(10)],
        ...                             [ImageFeature("Photo", None, [])],
        ...                             [Batch(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))])
        >>> len(vis.examples())
        4
        >>> ui = vis.widget(debounce=0)     # vis.render() displays it; vis.serve() opens it in a browser
    """

    def __init__(self, models, classes, features, dataset, score_func: Optional[Callable] = None,
                 use_label_for_attr: bool = True, max_examples: int = 32):
        self.models = list(models) if isinstance(models, (list, tuple)) else [models]
        self.features = list(features) if isinstance(features, (list, tuple)) else [features]
        if len(self.features) != 1 or not isinstance(self.features[0], ImageFeature):
            raise ValueError(f"`features` must be one ImageFeature; got {self.features!r}")
        if not use_label_for_attr:
            raise ValueError("`use_label_for_attr=False` (models with one output) is not supported by the explorer")
        self.classes, self.dataset, self.score_func = list(classes), dataset, score_func
        self.max_examples = max_examples
        self._examples: Optional[list[_Example]] = None
        self._scores: dict[int, list[torch.Tensor]] = {}

    def examples(self) -> list[_Example]:
        """The first ``max_examples`` examples of the dataset (read once)."""
        if self._examples is None:
            self._examples = []
            for batch in self.dataset:
                inputs = batch.inputs[0] if isinstance(batch.inputs, (tuple, list)) else batch.inputs
                for i in range(len(inputs)):
                    label = None if batch.labels is None else int(batch.labels[i])
                    self._examples.append(_Example(inputs[i], label, _example_args(batch.additional_args, i)))
                    if len(self._examples) >= self.max_examples:
                        return self._examples
        return self._examples

    def _model_input(self, example: _Example, model) -> torch.Tensor:
        device = next(iter(model.parameters()), torch.empty(0)).device
        return self.features[0].model_input(example.inputs).unsqueeze(0).to(device)

    def scores(self, model_index: int = 0) -> list[torch.Tensor]:
        """Class scores of every example under ``models[model_index]``."""
        if model_index not in self._scores:
            model = self.models[model_index]
            self._scores[model_index] = [
                scores_of(model, self._model_input(e, model), self.score_func or _raw, e.args) for e in self.examples()]
        return self._scores[model_index]

    def explorer(self, index: int, model_index: int = 0, **kwargs) -> Explorer:
        """An :class:`~attrkit.insights.widget.Explorer` for example ``index`` (keyword arguments go to it)."""
        example, model, feature = self.examples()[index], self.models[model_index], self.features[0]
        x = self._model_input(example, model)
        show = feature.visualization_transform or (lambda example: example)
        picture = viz.to_hwc_image(show(example.inputs))
        if picture.shape[:2] != tuple(x.shape[-2:]):  # the picture must line up with the attribution map
            picture = viz.to_hwc_image(x)
        baseline = feature.baseline(x[0])
        baseline = None if baseline is None else baseline.reshape(x.shape)
        named = None if baseline is None else f"the baseline_transforms of {feature.name}"
        return Explorer(model, x, picture, self.classes, None, baseline, score_func=self.score_func or _raw,
                        additional_forward_args=example.args, baseline_name=named, **kwargs)

    def widget(self, debounce: float = 0.3) -> W.VBox:
        """The whole user interface as one widget (``render()`` displays it)."""
        return _InsightsUI(self, debounce)

    def render(self, debug: bool = False) -> None:
        """Show the explorer over the dataset in a notebook."""
        from IPython.display import display
        display(self.widget())

    def serve(self, blocking: bool = False, debug: bool = False, port: Optional[int] = None,
              bind_all: bool = False, open_browser: bool = False, timeout: float = 60):
        """Serve :meth:`render`'s interface as a local web app through Voilà, on 127.0.0.1 unless ``bind_all``;
        returns a handle with ``url`` and ``stop()``. See :func:`attrkit.insights.app.serve`."""
        from .app import serve
        return serve(self, port=port, open_browser=open_browser, bind_all=bind_all, blocking=blocking, debug=debug,
                     timeout=timeout)

    def __getstate__(self):  # for serve(): the examples travel, the dataset (maybe a generator) does not
        self.examples()
        return {**self.__dict__, "dataset": None}


def _raw(outputs):
    return outputs


class _InsightsUI(W.VBox):
    """Filters and an example picker above an :class:`Explorer`, and a row of methods side by side below."""

    def __init__(self, vis: AttributionVisualizer, debounce: float):
        self.vis, self.debounce, self.explorer, self._quiet = vis, debounce, None, False
        style = {"description_width": "initial"}
        self.model = W.Dropdown(options=[(f"{i}: {type(m).__name__}", i) for i, m in enumerate(vis.models)],
                                description="model", style=style)
        self.model.layout.display = None if len(vis.models) > 1 else "none"
        self.prediction = W.Dropdown(options=["all", "correct", "incorrect"], description="prediction", style=style)
        self.predicted = W.Dropdown(options=[("any", -1)] + [(c, i) for i, c in enumerate(vis.classes)],
                                    description="predicted class", style=style)
        self.example = W.Dropdown(description="example", style=style, layout=W.Layout(width="460px"))
        self.compare = W.SelectMultiple(description="compare", rows=4, style=style)
        self.holder, self.gallery = W.VBox(), W.HBox(layout=W.Layout(flex_flow="row wrap"))
        for name in ("model", "prediction", "predicted", "example", "compare"):
            getattr(self, name).add_class(f"attrkit-{name}")
        filters = W.HBox([self.model, self.prediction, self.predicted, self.example],
                         layout=W.Layout(flex_flow="row wrap"))
        title = W.HTML("<h3 style='margin:0'>attrkit insights</h3><small>Tab moves between controls; arrow keys "
                       "move a focused slider. Results are cached: going back to a setting is instant.</small>")
        super().__init__([title, filters, self.holder, self.compare, self.gallery])
        self.model.observe(lambda _: self._filter(), names="value")
        self.prediction.observe(lambda _: self._filter(), names="value")
        self.predicted.observe(lambda _: self._filter(), names="value")
        self.example.observe(lambda _: self._quiet or self._show(), names="value")
        self.compare.observe(lambda _: self._draw_comparison(), names="value")
        self._filter()

    def _filter(self) -> None:
        scores, classes, options = self.vis.scores(self.model.value), self.vis.classes, []
        for i, (example, s) in enumerate(zip(self.vis.examples(), scores)):
            top = int(s.argmax())
            correct = example.label == top
            if self.predicted.value not in (-1, top) or (self.prediction.value == "correct" and not correct) or (
                    self.prediction.value == "incorrect" and (correct or example.label is None)):
                continue
            true = "?" if example.label is None else classes[example.label]
            options.append((f"#{i}: true {true} · predicted {classes[top]} ({float(s[top]):.3g})", i))
        previous, values = self.example.value, [i for _, i in options]
        self._quiet = True  # one explorer per update, not one per trait change
        self.example.options = options
        self.example.value = previous if previous in values else (values[0] if values else None)
        self._quiet = False
        self._show()

    def _show(self) -> None:
        if self.example.value is None:
            self.explorer = None
            self.holder.children = [W.HTML("<i>No example matches the filters.</i>")]
        else:
            before = self.explorer
            settings = {k: c.value for k, c in before.controls.items() if k != "target"} if before else {}
            if before is not None:  # the old map dims with a spinner at once; its work stops at its next batch
                before.cancel()
                before.heatmap.add_class("attrkit-stale")
                before._say(f"{_SPINNER}loading example #{self.example.value}…")
            self.explorer = self.vis.explorer(self.example.value, self.model.value, debounce=self.debounce,
                                              settings=settings)
            if before is not None:  # until its first map is ready, the new explorer shows the old one, dimmed
                with self.explorer._lock:
                    if self.explorer.attribution is None and self.explorer.error is None:
                        self.explorer.heatmap.value = before.heatmap.value
                        self.explorer.heatmap.add_class("attrkit-stale")
            self.explorer.controls["target"].observe(lambda _: self._draw_comparison(), names="value")
            self.holder.children = [self.explorer]
            self.compare.options = self.explorer.controls["method"].options
        self._draw_comparison()

    def _draw_comparison(self) -> None:
        """Draw each method chosen in ``compare`` with the explorer's current settings (cached); in a worker
        thread unless ``debounce`` is 0, and only if nothing newer was asked for meanwhile."""
        self._comparison = getattr(self, "_comparison", 0) + 1
        chosen = self.compare.value if self.explorer else ()
        if chosen:
            self.gallery.children = [W.HTML(f"{_SPINNER}computing {len(chosen)} method(s)…")]
        if chosen and self.debounce > 0:
            threading.Thread(target=self._compare_methods, args=(self._comparison, chosen), daemon=True).start()
        else:
            self._compare_methods(self._comparison, chosen)

    def _compare_methods(self, request: int, chosen) -> None:
        panels = []
        for method in chosen:
            if request != self._comparison:
                return
            try:
                attr, c = self.explorer.attribute(method), self.explorer.controls
                body = W.Image(value=attribution_png(attr, self.explorer.image, c["sign"].value, c["alpha"].value,
                                                     c["outlier_perc"].value, 200), format="png")
            except Exception as e:  # shown, not raised
                body = W.HTML(f"<span style='color:#b00020'>{html.escape(f'{type(e).__name__}: {e}')}</span>")
            panels.append(W.VBox([W.HTML(f"<b>{method}</b>"), body], layout=W.Layout(width="210px")))
        if request == self._comparison:
            self.gallery.children = panels
