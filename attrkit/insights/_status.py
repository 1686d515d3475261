"""What the explorer tells the learner: which baseline it uses (by name), which class a map explains, and how long a
setting should take.

The time estimate: every method's cost is counted in forward-pass equivalents (:func:`attrkit.insights._methods.cost`);
:class:`Timing` learns seconds per unit from the runs so far — each method's own last run when there is one (a
method's speed per unit depends on how it batches, whether it needs gradients and its backward rules), else the last
run of any method. Before the first map there is no estimate: a model's first forward passes in a process run
several times slower than later ones (measured on chapter 02's EfficientNet-Lite0: a 30 s estimate for a 0.8 s map).
"""
from __future__ import annotations

import html

import torch

LONG_SECONDS = 3.0  # settings estimated to take longer than this get a warning before they start
SHOWN_SECONDS = 1.0  # estimates at least this long are shown while computing


class Timing:
    """Seconds per forward-pass equivalent, learnt from measured runs (see the module's docstring)."""

    def __init__(self, seconds_per_forward: float | None = None):
        self.per_method: dict[str, float] = {}
        self.last = seconds_per_forward

    def record(self, method: str, units: float, seconds: float) -> None:
        self.per_method[method] = self.last = seconds / max(units, 1e-9)

    def estimate(self, method: str, units: float) -> float | None:
        rate = self.per_method.get(method, self.last)
        return None if rate is None else rate * units


def black_baseline(image, transform, inputs: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The baseline the chapters teach for photos, and its name: a black picture sent through the same
    ``transform`` as the photo (so a ``Normalize`` step makes it the normalised black, not zeros). Without a
    transform, zeros are black when the input is a [0, 1] picture; otherwise they are named as what they are."""
    if transform is not None:
        try:
            if isinstance(image, torch.Tensor):
                black = transform(torch.zeros_like(image))
            else:
                from PIL import Image
                black = transform(Image.new(image.mode, image.size))
            return black.reshape(inputs.shape).to(inputs.device, inputs.dtype), "black image"
        except Exception:  # a transform that needs more than a picture: fall back to zeros, named as such
            pass
    zeros = torch.zeros_like(inputs)
    if not isinstance(image, torch.Tensor) or bool(inputs.min() >= 0 and inputs.max() <= 1):
        return zeros, "black image"
    return zeros, "zeros in the model's input space"


def baseline_name(baselines) -> str:
    """How a baseline given by the caller is named: a number, or a tensor."""
    if isinstance(baselines, torch.Tensor):
        return "the given baseline tensor"
    return f"{float(baselines or 0.0):g} everywhere (in the model's input space)"


def class_text(label: str) -> str:
    """``"king penguin (93.1%)"`` -> ``"king penguin"`` in bold, its score after it."""
    name, _, score = label.rpartition(" (")
    if not name:
        return f"<b>{html.escape(label)}</b>"
    return f"<b>{html.escape(name)}</b> ({html.escape(score)}"


def done_text(method: str, label: str, baseline: str | None, took: str) -> str:
    """The status once a map is drawn: the method, the class it explains, its baseline, and the time it took."""
    against = f"baseline: {html.escape(baseline)}" if baseline else "no baseline"
    return f"<b>{html.escape(method)}</b> explains {class_text(label)} · {against} · {html.escape(took)}"


def computing_text(spinner: str, method: str, label: str, seconds: float | None) -> str:
    """The status while a map is computed: what, for which class, and how long it should take (a warning when
    that is longer than :data:`LONG_SECONDS`)."""
    text = f"{spinner}computing {html.escape(method)} for {class_text(label)}…"
    if seconds is not None and seconds > LONG_SECONDS:
        text += (f" <span class='attrkit-warning' style='color:#8a5a00'>⏳ these settings will take about "
                 f"{seconds:.0f} s here (estimated from the last run); change a control to cancel.</span>")
    elif seconds is not None and seconds >= SHOWN_SECONDS:
        text += f" about {seconds:.0f} s"
    return text


def title_html(method: str, label: str) -> str:
    """The map's title: the method and the class it explains."""
    return (f"<div style='font:12px/1.3 sans-serif;color:#333'><b>{html.escape(method)}</b> of "
            f"{class_text(label)}</div>")
