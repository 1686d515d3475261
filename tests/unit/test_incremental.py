"""Exact incremental inference for Occlusion (attrkit/_incremental/) against the batched path.

Each case runs Occlusion twice, with ``ATTRKIT_INCREMENTAL=off`` (the batched path, the reference) and
``=always`` (the incremental path wherever it applies, its errors raised), in float64 so that any mistake
in the region arithmetic shows as a large difference while float rounding stays near 1e-15; one case checks
float32 to 1e-5. Random weights, eval mode, small images; a brute-force loop checks geometries Occlusion itself
refuses (strides larger than the window).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attrkit import Occlusion
from attrkit import _incremental as I
from attrkit._incremental.rules import Kind
from attrkit.testing import ResidualCNN, SmallCNN, TinyImageCNN

torchvision = pytest.importorskip("torchvision")
TOL64 = 1e-9


def cifar_cnn():
    """The benchmark's CIFAR-sized CNN (bench/run.py)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def lite0():
    timm = pytest.importorskip("timm")
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _ready(model: nn.Module, dtype=torch.float64) -> nn.Module:
    """Eval mode, and BatchNorm statistics that are not the identity (so that they are really tested)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval().to(dtype)


def _both(monkeypatch, model, x, **kwargs):
    """Occlusion's result on the batched path and on the incremental path, each divided by the scale of the
    model's output (rounding is relative to the outputs, and random networks give tiny output differences)."""
    monkeypatch.setenv(I.MODE_ENV, "off")
    reference = Occlusion(model).attribute(x, **kwargs)
    monkeypatch.setenv(I.MODE_ENV, "always")
    incremental = Occlusion(model).attribute(x, **kwargs)
    with torch.no_grad():
        scale = model(x).abs().max() if isinstance(model, nn.Module) else 1.0
    return reference / scale, incremental / scale


def _differences(model, inputs, baselines, windows, strides, target):
    """The incremental path's ``F(x) - F(x with window u occluded)``, ``(n_examples, n_windows)``; None where
    it does not apply."""
    found = I.occlusion_outputs(model, inputs, baselines, windows, strides, target)
    return None if found is None else (found[0].unsqueeze(0) - found[1]).T


def _rel(a, b) -> float:
    """The largest difference relative to the largest value (or to 1 when everything is smaller)."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=1.0))


MODELS = {  # name: (model factory, image size, window, stride)
    "resnet18": (lambda: torchvision.models.resnet18(), 48, (3, 11, 11), (3, 8, 8)),
    "resnet50": (lambda: torchvision.models.resnet50(), 40, (3, 15, 15), (3, 13, 13)),
    "vgg11": (lambda: torchvision.models.vgg11(), 32, (3, 12, 12), (3, 10, 10)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), 48, (3, 12, 12), (3, 9, 9)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(), 48, (3, 12, 12), (3, 9, 9)),
    "densenet121": (lambda: torchvision.models.densenet121(), 40, (3, 14, 14), (3, 13, 13)),
    "efficientnet_lite0": (lite0, 48, (3, 12, 12), (3, 9, 9)),
    "cifar_cnn": (cifar_cnn, 32, (3, 4, 4), (3, 2, 2)),
    "tiny_image_cnn": (TinyImageCNN, 32, (2, 5, 3), (1, 3, 2)),
    "residual_cnn": (ResidualCNN, 16, (3, 3, 3), (3, 2, 2)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_exact_on_models(monkeypatch, name):
    factory, size, window, stride = MODELS[name]
    model = _ready(factory())
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    baseline = torch.rand(1, 3, size, size, dtype=torch.float64)
    plan = I.prepare(model, x, window, stride)
    local = sum(s.kind is Kind.REGION for s in plan.steps.values()) if plan is not None else 0
    assert local > 1, "the incremental path must apply"
    assert plan.flops_ratio < 1.0
    ref, inc = _both(monkeypatch, model, x, sliding_window_shapes=window, strides=stride, baselines=baseline,
                     target=[1, 2])
    assert _rel(inc, ref) < TOL64


WINDOWS = [((3, 4, 4), 2), ((3, 4, 4), (3, 2, 2)), ((1, 5, 3), (1, 3, 2)), ((2, 7, 7), (1, 7, 7)),
           ((3, 2, 1), (3, 2, 1)), ((3, 32, 5), (3, 1, 5)), ((3, 13, 13), (3, 6, 6))]
BASELINES = [None, 0.5, "per-example", "shared"]
CASES = [(w, s, BASELINES[0]) for w, s in WINDOWS] + [(*WINDOWS[i], b) for i in (1, 3) for b in BASELINES[1:]]


@pytest.mark.parametrize("window,stride,baseline", CASES)
def test_windows_strides_baselines(monkeypatch, window, stride, baseline):
    model = _ready(cifar_cnn())
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    if baseline == "per-example":
        baseline = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    elif baseline == "shared":
        baseline = torch.randn(3, 32, 32, dtype=torch.float64)
    ref, inc = _both(monkeypatch, model, x, sliding_window_shapes=window, strides=stride, baselines=baseline,
                     target=3)
    assert _rel(inc, ref) < TOL64


@pytest.mark.parametrize("window,stride,target", [((3, 7, 7), (3, 5, 5), 0), ((2, 9, 7), (1, 8, 6), [2, 1]),
                                                  ((3, 16, 16), 16, "tensor")])
def test_resnet_borders_and_targets(monkeypatch, window, stride, target):
    model = _ready(torchvision.models.resnet18())
    torch.manual_seed(3)
    x = torch.randn(2, 3, 35, 33, dtype=torch.float64)  # odd sizes: windows cut at the far edges
    target = torch.tensor([4, 0]) if target == "tensor" else target
    ref, inc = _both(monkeypatch, model, x, sliding_window_shapes=window, strides=stride, target=target)
    assert _rel(inc, ref) < TOL64


def _brute_force(model, x, baseline, window, stride, target):
    """F(x) - F(x with window u occluded), one window at a time."""
    windows = I.unit_windows(x.shape[1:], window, stride)
    out = []
    with torch.no_grad():
        reference = model(x)[:, target]
        for c0, c1, r0, r1, q0, q1 in zip(*windows):
            occluded = x.clone()
            occluded[:, c0:c1, r0:r1, q0:q1] = baseline.expand_as(x)[:, c0:c1, r0:r1, q0:q1]
            out.append(reference - model(occluded)[:, target])
    return torch.stack(out, 1)


@pytest.mark.parametrize("window,stride", [((3, 3, 3), (3, 5, 5)), ((1, 2, 4), (2, 7, 6)), ((3, 4, 4), (3, 9, 1))])
def test_strides_larger_than_the_window(monkeypatch, window, stride):
    """Occlusion refuses such strides (elements would never be occluded); the engine still handles them."""
    monkeypatch.setenv(I.MODE_ENV, "always")
    model = _ready(ResidualCNN(width=6))
    torch.manual_seed(4)
    x, baseline = torch.randn(2, 3, 21, 19, dtype=torch.float64), torch.rand(1, 3, 21, 19, dtype=torch.float64)
    diffs = _differences(model, (x,), (baseline,), (window,), (stride,), target=1)
    assert _rel(diffs, _brute_force(model, x, baseline, window, stride, 1)) < TOL64


def test_float32_within_1e_5(monkeypatch):
    model = _ready(torchvision.models.resnet18(), torch.float32)
    x = torch.randn(1, 3, 64, 64)
    ref, inc = _both(monkeypatch, model, x, sliding_window_shapes=(3, 15, 15), strides=(3, 8, 8), target=7)
    assert _rel(inc, ref) < 1e-5


def test_batch_size_does_not_matter(monkeypatch):
    monkeypatch.setenv(I.MODE_ENV, "always")
    model = _ready(TinyImageCNN())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    kwargs = dict(sliding_window_shapes=(3, 6, 6), strides=(3, 4, 4), target=1)
    one = Occlusion(model).attribute(x, perturbations_per_eval=1, **kwargs)
    seven = Occlusion(model).attribute(x, perturbations_per_eval=7, **kwargs)
    auto = Occlusion(model).attribute(x, **kwargs)
    assert _rel(one, auto) < TOL64 and _rel(seven, auto) < TOL64


class _Mutating(nn.Module):
    """An in-place ReLU overwrites a tensor that is read again afterwards."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        z = torch.relu_(y * 1.0)
        w = y * 1.0
        torch.relu_(w)
        return self.fc((z + w).mean((2, 3)))


class _AliasedInPlace(nn.Module):
    """An in-place ReLU on an identity module's output overwrites the tensor before it, which is read again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.same = nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        z = self.relu(self.same(y))
        return self.fc((z + y).mean((2, 3)))


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # control flow on values: not traceable
            y = -y
        return y.mean((2, 3))


@pytest.mark.parametrize("case", ["hooked", "untraceable", "lambda", "non-local first", "two inputs", "mutating",
                                  "aliased", "training"])
def test_falls_back_to_the_batched_path(monkeypatch, case):
    model = _ready(SmallCNN(), torch.float32)
    x = torch.randn(2, 1, 8, 8)
    kwargs = dict(sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2), target=0)
    if case == "hooked":
        model.conv1.register_forward_hook(lambda m, i, o: o * 2)
    elif case == "untraceable":
        model, x = _DataDependent(), torch.randn(2, 3, 8, 8)
        kwargs.update(sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2))
    elif case == "lambda":
        inner = model
        model = lambda t: inner(t)  # noqa: E731
    elif case == "non-local first":
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    elif case in ("mutating", "aliased"):
        model, x = (_Mutating() if case == "mutating" else _AliasedInPlace()), torch.randn(2, 3, 8, 8)
        kwargs.update(sliding_window_shapes=(3, 3, 3), strides=(3, 2, 2))
    elif case == "training":
        model = _ready(SmallCNN(), torch.float32).train()
    if case == "two inputs":
        assert _differences(model, (x, x), (x, x), ((1, 3, 3),) * 2, ((1, 2, 2),) * 2, 0) is None
        return
    if not callable(getattr(model, "register_forward_hook", None)) or case != "lambda":
        assert I.prepare(model, x, kwargs["sliding_window_shapes"], kwargs["strides"]) is None
    monkeypatch.setenv(I.MODE_ENV, "auto")
    assert _differences(model, (x,), (torch.zeros_like(x),), (kwargs["sliding_window_shapes"],),
                                   (kwargs["strides"],), 0) is None
    ref, inc = _both(monkeypatch, model, x, **kwargs)
    torch.testing.assert_close(inc, ref)


def test_auto_uses_it_where_it_pays_off(monkeypatch):
    monkeypatch.setenv(I.MODE_ENV, "auto")
    model = _ready(torchvision.models.resnet18(), torch.float32)
    x = torch.randn(1, 3, 96, 96)
    plan = I.prepare(model, x, (3, 15, 15), (3, 8, 8))
    assert plan.flops_ratio < 0.75 and plan.cost_ratio < I.WORTH_IT
    assert _differences(model, (x,), (torch.zeros_like(x),), ((3, 15, 15),), ((3, 8, 8),), 0) is not None
    small = _ready(SmallCNN(), torch.float32)  # 8x8 images, 6x6 windows: the change covers the map at once
    assert _differences(small, (torch.randn(1, 1, 8, 8),), (torch.zeros(1, 1, 8, 8),), ((1, 6, 6),),
                                   ((1, 1, 1),), 0) is None


def test_off_switch(monkeypatch):
    monkeypatch.setenv(I.MODE_ENV, "off")
    model = _ready(TinyImageCNN(), torch.float32)
    x = torch.randn(1, 3, 32, 32)
    assert _differences(model, (x,), (torch.zeros_like(x),), ((3, 4, 4),), ((3, 4, 4),), 0) is None


def test_approximate_mode_is_opt_in_and_exact_at_threshold_one(monkeypatch):
    model = _ready(torchvision.models.resnet18())
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    kwargs = dict(sliding_window_shapes=(3, 8, 8), strides=(3, 6, 6), target=3)
    ref, _ = _both(monkeypatch, model, x, **kwargs)
    with torch.no_grad():
        scale = model(x).abs().max()
    monkeypatch.setenv(I.MODE_ENV, "approximate:1.0")
    whole = Occlusion(model).attribute(x, **kwargs) / scale
    assert _rel(whole, ref) < TOL64
    monkeypatch.setenv(I.MODE_ENV, "approximate:0.3")
    cut = Occlusion(model).attribute(x, **kwargs) / scale
    assert 0 < _rel(cut, ref) < 1
    plan = I.prepare(model, x, (3, 8, 8), (3, 6, 6), threshold=0.3)
    assert plan.flops_ratio < I.prepare(model, x, (3, 8, 8), (3, 6, 6)).flops_ratio


def test_tiny_jobs_skip_the_planning(monkeypatch):
    """In ``auto`` mode a job with few occluded elements runs the batched path without tracing the model."""
    planned = []
    prepare = I.prepare
    monkeypatch.setattr(I, "prepare", lambda *a, **k: planned.append(a[2]) or prepare(*a, **k))
    monkeypatch.setenv(I.MODE_ENV, "auto")
    model = _ready(TinyImageCNN(), torch.float32)
    x = torch.randn(1, 3, 32, 32)
    tiny = Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), target=1)
    assert planned == []  # 4 windows of 3x32x32: 12288 occluded elements
    Occlusion(model).attribute(x.repeat(2, 1, 1, 1), sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), target=1)
    assert 15 * 15 * 2 * x.numel() >= I.MIN_OCCLUDED_ELEMENTS and planned == [(3, 4, 4)]
    monkeypatch.setenv(I.MODE_ENV, "always")
    again = Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16), target=1)
    assert planned[-1] == (3, 16, 16)
    torch.testing.assert_close(again, tiny)
