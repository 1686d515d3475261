"""The methods the explorer offers. Each is looked up by its class name in :mod:`attrkit` when it is used, so a
method whose module is missing is simply not offered."""
from __future__ import annotations

import math
import re

import torch
from torch import nn

import attrkit

# method (a class name, or NoiseTunnel(inner class name)) -> the controls it reads;
# the display controls (sign, alpha, outlier_perc) apply to every method.
METHODS = {
    "Saliency": (),
    "InputXGradient": (),
    "IntegratedGradients": ("n_steps",),
    "GradientShap": ("nt_samples", "stdevs"),
    "DeepLift": (),
    "GuidedBackprop": (),
    "Deconvolution": (),
    "Occlusion": ("window", "stride"),
    "FeatureAblation": ("window",),
    "NoiseTunnel(Saliency)": ("nt_samples", "stdevs"),
    "NoiseTunnel(IntegratedGradients)": ("nt_samples", "stdevs", "n_steps"),
    "LayerGradCam": (),
    "GuidedGradCam": (),
}
NEEDS_LAYER = ("LayerGradCam", "GuidedGradCam")
MAX_EVALS = 2500  # perturbation settings needing more forward passes than this are refused with a message
BATCH_ELEMENTS = 2_000_000  # integration steps per forward pass: about this many input numbers (so that the
# explorer can stop a long computation between batches; results do not depend on the batch size)


def class_names(method: str) -> list[str]:
    """``"NoiseTunnel(Saliency)"`` -> ``["NoiseTunnel", "Saliency"]``."""
    return re.findall(r"\w+", method)


def last_conv(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Conv2d`` registered in ``model`` (Grad-CAM's default layer), or None."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def available(model: nn.Module, layer: nn.Module | None = None) -> list[str]:
    """The methods of :data:`METHODS` whose classes exist in attrkit (and, for Grad-CAM, that have a layer)."""
    has_layer = layer is not None or last_conv(model) is not None
    return [m for m in METHODS if all(getattr(attrkit, c, None) is not None for c in class_names(m))
            and (m not in NEEDS_LAYER or has_layer)]


def attribute(method, model, inputs, target, baselines, params, layer=None, additional_forward_args=None):
    """Run ``method`` on ``inputs`` (1, C, H, W) for ``target`` with the control values in ``params``.

    Returns a map shaped like ``inputs``; Grad-CAM's (1, 1, h, w) layer map is upsampled to (1, 1, H, W).
    """
    find = lambda name: getattr(attrkit, name)  # noqa: E731 — looked up now, not at import
    common = {"target": target, "additional_forward_args": additional_forward_args}
    names = class_names(method)
    if names[0] == "NoiseTunnel":
        inner = ({"baselines": baselines, "n_steps": params["n_steps"], "internal_batch_size": step_batch(inputs)}
                 if names[1] == "IntegratedGradients" else {})
        return find("NoiseTunnel")(find(names[1])(model)).attribute(
            inputs, nt_type="smoothgrad", nt_samples=params["nt_samples"], stdevs=params["stdevs"], **inner, **common)
    if method in NEEDS_LAYER:
        explainer = find(method)(model, layer or last_conv(model))
        if method == "GuidedGradCam":
            return explainer.attribute(inputs, **common)
        cam = explainer.attribute(inputs, relu_attributions=True, **common)
        return attrkit.LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), "bilinear")
    explainer = find(method)(model)
    if method == "IntegratedGradients":
        return explainer.attribute(inputs, baselines, n_steps=params["n_steps"], internal_batch_size=step_batch(inputs),
                                   **common)
    if method == "GradientShap":
        return explainer.attribute(inputs, baselines, n_samples=params["nt_samples"], stdevs=params["stdevs"], **common)
    if method == "DeepLift":
        return explainer.attribute(inputs, baselines, **common)
    if method == "Occlusion":
        c, (w, s) = inputs.shape[1], (params["window"], params["stride"])
        check_window(inputs, w, s)
        return explainer.attribute(inputs, sliding_window_shapes=(c, w, w), strides=(c, s, s), baselines=baselines,
                                   show_progress=False, **common)
    if method == "FeatureAblation":
        check_window(inputs, params["window"], params["window"])
        return explainer.attribute(inputs, baselines=baselines, feature_mask=patch_mask(inputs, params["window"]),
                                   show_progress=False, **common)
    return explainer.attribute(inputs, **common)  # Saliency, InputXGradient, GuidedBackprop, Deconvolution


def step_batch(inputs) -> int:
    """Rows per forward pass for integration steps: about :data:`BATCH_ELEMENTS` input numbers."""
    return max(1, BATCH_ELEMENTS // max(1, inputs[0].numel()))


def window_stride_bounds(height: int, width: int, window: int) -> tuple[int, int]:
    """The smallest and largest stride that :func:`check_window` accepts for ``window`` (the largest: the
    window itself, so no pixel is left out; the smallest: within :data:`MAX_EVALS` forward passes)."""
    window = min(window, height, width)
    lo = 1
    while ((height - window) // lo + 1) * ((width - window) // lo + 1) > MAX_EVALS:
        lo += 1
    return lo, max(lo, window)


def cost(method: str, params: dict, inputs) -> float:
    """A rough cost of one attribution in forward-pass equivalents for one example (a gradient costs about
    three: forward and backward), so that one measured run predicts the time of another setting."""
    if method in ("Occlusion", "FeatureAblation"):
        h, w = inputs.shape[-2:]
        win = min(params["window"], h, w)
        stride = params.get("stride", win)
        return 1.0 + ((h - win) // stride + 1) * ((w - win) // stride + 1)
    steps = params.get("n_steps", 1) if "IntegratedGradients" in method else 1
    samples = params.get("nt_samples", 1) if ("NoiseTunnel" in method or method == "GradientShap") else 1
    return 3.0 * steps * samples + 1.0


def check_window(inputs, window: int, stride: int) -> None:
    """Refuse a window larger than the image, or one that needs more than :data:`MAX_EVALS` forward passes."""
    h, w = inputs.shape[-2:]
    if window > min(h, w):
        raise ValueError(f"window={window} is larger than the image ({h}x{w} pixels); choose at most {min(h, w)}.")
    n = ((h - window) // stride + 1) * ((w - window) // stride + 1)
    if n > MAX_EVALS:
        raise ValueError(f"window={window} with stride={stride} needs about {n} forward passes (the explorer's "
                         f"limit is {MAX_EVALS}); raise the stride or the window.")


def patch_mask(inputs, window: int) -> torch.Tensor:
    """A feature mask (1, C, H, W) of window x window squares, all channels of a square sharing one id."""
    (c, h, w), per_row = inputs.shape[1:], math.ceil(inputs.shape[-1] / window)
    rows = torch.arange(h, device=inputs.device) // window
    cols = torch.arange(w, device=inputs.device) // window
    return (rows[:, None] * per_row + cols[None, :]).expand(1, c, h, w).contiguous()
