"""The methods the explorer offers: one :class:`Method` record each in :data:`REGISTRY` (its controls, how it
runs, what it costs), so a new method is one entry. Each is looked up by its class name in :mod:`attrkit` when
it is used, so a method whose module is missing is simply not offered."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

import attrkit

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


@dataclass
class Call:
    """One attribution to run: what a :class:`Method`'s ``run`` reads."""

    method: str
    model: nn.Module
    inputs: torch.Tensor
    baselines: Any
    params: dict
    layer: nn.Module | None
    common: dict  # target and additional_forward_args, passed to every attribute()

    def explainer(self, *layer):
        """The method's attrkit object on the model (and ``layer``), wrapped by its outer classes
        (``NoiseTunnel(Saliency)`` -> ``NoiseTunnel(Saliency(model))``); looked up now, not at import."""
        *outer, inner = class_names(self.method)
        explainer = getattr(attrkit, inner)(self.model, *layer)
        for name in reversed(outer):
            explainer = getattr(attrkit, name)(explainer)
        return explainer


# ------------------------------------------------------------------------ how each method runs
def _plain(c: Call):
    return c.explainer().attribute(c.inputs, **c.common)


def _with_baselines(c: Call):
    return c.explainer().attribute(c.inputs, c.baselines, **c.common)


def _integrated_gradients(c: Call):
    return c.explainer().attribute(c.inputs, c.baselines, n_steps=c.params["n_steps"],
                                   internal_batch_size=step_batch(c.inputs), **c.common)


def _gradient_shap(c: Call):
    return c.explainer().attribute(c.inputs, c.baselines, n_samples=c.params["nt_samples"],
                                   stdevs=c.params["stdevs"], **c.common)


def _occlusion(c: Call):
    channels, (w, s) = c.inputs.shape[1], (c.params["window"], c.params["stride"])
    check_window(c.inputs, w, s)
    return c.explainer().attribute(c.inputs, sliding_window_shapes=(channels, w, w), strides=(channels, s, s),
                                   baselines=c.baselines, show_progress=False, **c.common)


def _feature_ablation(c: Call):
    check_window(c.inputs, c.params["window"], c.params["window"])
    mask = patch_mask(c.inputs, c.params["window"])
    return c.explainer().attribute(c.inputs, baselines=c.baselines, feature_mask=mask, show_progress=False,
                                   **c.common)


def _smoothgrad(c: Call, **inner):
    return c.explainer().attribute(c.inputs, nt_type="smoothgrad", nt_samples=c.params["nt_samples"],
                                   stdevs=c.params["stdevs"], **inner, **c.common)


def _smoothgrad_integrated_gradients(c: Call):
    return _smoothgrad(c, baselines=c.baselines, n_steps=c.params["n_steps"],
                       internal_batch_size=step_batch(c.inputs))


def _grad_cam(c: Call):
    cam = c.explainer(c.layer).attribute(c.inputs, relu_attributions=True, **c.common)
    return attrkit.LayerAttribution.interpolate(cam, tuple(c.inputs.shape[-2:]), "bilinear")


def _guided_grad_cam(c: Call):
    return c.explainer(c.layer).attribute(c.inputs, **c.common)


# ------------------------------------------------------------------------ what each method costs
def _gradients(params: dict, inputs) -> float:
    """Forward-pass equivalents of ``n_steps`` x ``nt_samples`` gradients (each about three: forward and
    backward), plus the forward pass that scores the example; a control the method lacks counts once."""
    return 3.0 * params.get("n_steps", 1) * params.get("nt_samples", 1) + 1.0


def _three_gradients(params: dict, inputs) -> float:
    """Measured at about three plain gradients: DeepLift (the input and its baseline in one batch, a backward rule
    at every nonlinearity) and Guided Grad-CAM (Grad-CAM, then guided backpropagation's rules)."""
    return 3 * 3.0 + 1.0


def _windows(params: dict, inputs) -> float:
    """One forward pass per window position (stride: the window itself without a stride control), plus one."""
    h, w = inputs.shape[-2:]
    win = min(params["window"], h, w)
    stride = params.get("stride", win)
    return 1.0 + ((h - win) // stride + 1) * ((w - win) // stride + 1)


def _ablations(params: dict, inputs) -> float:
    """One forward pass per window-sized patch, each about 1.5 occlusion windows (measured: the patches come
    from a feature mask, and occlusion's windows may be evaluated incrementally)."""
    return 1.0 + 1.5 * (_windows(params, inputs) - 1.0)


@dataclass(frozen=True)
class Method:
    """One explorer method: the controls it reads (beyond the display controls sign, alpha and outlier_perc,
    which every method has), how it runs on a :class:`Call`, its cost in forward-pass equivalents for one
    example (so that one measured run predicts the time of another setting), whether it needs a layer, and
    whether it compares the input with the explorer's baseline (the status names the baseline then)."""

    controls: tuple[str, ...] = ()
    run: Callable[[Call], torch.Tensor] = _plain
    cost: Callable[[dict, Any], float] = _gradients
    needs_layer: bool = False
    uses_baseline: bool = False


# method (a class name, or NoiseTunnel(inner class name)) -> its record, in the order the explorer offers them
REGISTRY = {
    "Saliency": Method(),
    "InputXGradient": Method(),
    "IntegratedGradients": Method(("n_steps",), _integrated_gradients, uses_baseline=True),
    "GradientShap": Method(("nt_samples", "stdevs"), _gradient_shap, uses_baseline=True),
    "DeepLift": Method((), _with_baselines, _three_gradients, uses_baseline=True),
    "GuidedBackprop": Method(),
    "Deconvolution": Method(),
    "Occlusion": Method(("window", "stride"), _occlusion, _windows, uses_baseline=True),
    "FeatureAblation": Method(("window",), _feature_ablation, _ablations, uses_baseline=True),
    "NoiseTunnel(Saliency)": Method(("nt_samples", "stdevs"), _smoothgrad),
    "NoiseTunnel(IntegratedGradients)": Method(("nt_samples", "stdevs", "n_steps"), _smoothgrad_integrated_gradients,
                                               uses_baseline=True),
    "LayerGradCam": Method((), _grad_cam, needs_layer=True),
    "GuidedGradCam": Method((), _guided_grad_cam, _three_gradients, needs_layer=True),
}
METHODS = {name: m.controls for name, m in REGISTRY.items()}  # method -> the controls it reads
NEEDS_LAYER = tuple(name for name, m in REGISTRY.items() if m.needs_layer)


def available(model: nn.Module, layer: nn.Module | None = None) -> list[str]:
    """The methods of :data:`REGISTRY` whose classes exist in attrkit (and, for Grad-CAM, that have a layer)."""
    has_layer = layer is not None or last_conv(model) is not None
    return [m for m in REGISTRY if all(getattr(attrkit, c, None) is not None for c in class_names(m))
            and (not REGISTRY[m].needs_layer or has_layer)]


def attribute(method, model, inputs, target, baselines, params, layer=None, additional_forward_args=None):
    """Run ``method`` on ``inputs`` (1, C, H, W) for ``target`` with the control values in ``params``.

    Returns a map shaped like ``inputs``; Grad-CAM's (1, 1, h, w) layer map is upsampled to (1, 1, H, W).
    """
    common = {"target": target, "additional_forward_args": additional_forward_args}
    layer = layer if layer is not None or not REGISTRY[method].needs_layer else last_conv(model)
    return REGISTRY[method].run(Call(method, model, inputs, baselines, params, layer, common))


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
    """A rough cost of one attribution in forward-pass equivalents for one example (see :class:`Method`)."""
    record = REGISTRY[method]
    return record.cost({k: v for k, v in params.items() if k in record.controls}, inputs)


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
