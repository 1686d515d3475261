"""The explorer without a browser: controls, recomputation, caching, messages, and the Captum Insights API."""
import time

import cloudpickle
import ipywidgets as W
import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import attrkit
from attrkit.insights import AttributionVisualizer, Batch, ImageFeature, explore
from attrkit.insights import _methods, _status
from attrkit.testing import TinyImageCNN

CONTROL_TYPES = {"method": W.Dropdown, "target": W.Dropdown, "n_steps": W.IntSlider, "stdevs": W.FloatSlider,
                 "nt_samples": W.IntSlider, "window": W.IntSlider, "stride": W.IntSlider, "sign": W.Dropdown,
                 "alpha": W.FloatSlider, "outlier_perc": W.FloatSlider}
ALWAYS_SHOWN = {"method", "target", "sign", "alpha", "outlier_perc"}


@pytest.fixture
def model():
    return TinyImageCNN().eval()


@pytest.fixture
def image():
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def calls(monkeypatch):
    """Count the attributions actually computed (cache misses)."""
    seen = []
    real = _methods.attribute

    def counting(method, *args, **kwargs):
        seen.append(method)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(_methods, "attribute", counting)
    return seen


def visible(w):
    return {name for name, c in w.controls.items() if c.layout.display != "none"}


def test_every_control_exists_with_its_type_and_a_description(model, image):
    w = explore(model, image, debounce=0)
    assert isinstance(w, W.Widget)
    assert set(w.controls) == set(CONTROL_TYPES)
    for name, kind in CONTROL_TYPES.items():
        assert type(w.controls[name]) is kind, name
        assert w.controls[name].description == name  # a visible, readable label for every control
    assert isinstance(w.heatmap, W.Image) and w.heatmap.value[:4] == b"\x89PNG"
    assert w.attribution.shape == (1, 3, 32, 32) and w.error is None


def test_methods_are_class_names_and_missing_ones_are_not_offered(model, image, monkeypatch):
    offered = explore(model, image, debounce=0).controls["method"].options
    for method in offered:
        assert all(getattr(attrkit, name, None) is not None for name in _methods.class_names(method))
    assert {"Saliency", "IntegratedGradients", "LayerGradCam"} <= set(offered)
    monkeypatch.delattr(attrkit, "Saliency")
    offered = explore(model, image, debounce=0).controls["method"].options
    assert "Saliency" not in offered and "NoiseTunnel(Saliency)" not in offered


def test_target_lists_the_top_predictions_first_with_probabilities(model, image):
    classes = [f"c{i}" for i in range(10)]
    w = explore(model, image, classes=classes, debounce=0)
    probs = torch.softmax(model(image[None]), -1)[0].detach()
    labels, values = zip(*w.controls["target"].options)
    assert list(values) == probs.argsort(descending=True).tolist()
    assert w.controls["target"].value == int(probs.argmax())
    assert labels[0] == f"c{int(probs.argmax())} ({float(probs.max()):.1%})"
    assert explore(model, image, target="c3", classes=classes, debounce=0).controls["target"].value == 3


@pytest.mark.parametrize("method", list(_methods.METHODS))
def test_each_method_runs_and_shows_only_its_controls(model, image, method):
    w = explore(model, image, method=method, debounce=0)
    if w.controls["method"].value != method:
        pytest.skip(f"{method} is not in attrkit yet")
    assert w.error is None, w.error
    assert w.attribution.shape[-2:] == (32, 32) and torch.isfinite(w.attribution).all()
    assert visible(w) == ALWAYS_SHOWN | set(_methods.METHODS[method])


def test_integrated_gradients_is_attrkits_with_the_chosen_settings(model, image):
    w = explore(model, image, debounce=0)
    w.controls["n_steps"].value = 7
    x, target = image[None], w.controls["target"].value
    expected = attrkit.IntegratedGradients(model).attribute(x, torch.zeros_like(x), target=target, n_steps=7)
    torch.testing.assert_close(w.attribution, expected)


def test_gradcam_uses_the_last_conv_layer_upsampled_to_the_image(model, image):
    w = explore(model, image, method="LayerGradCam", debounce=0)
    cam = attrkit.LayerGradCam(model, model.conv2).attribute(image[None], target=w.controls["target"].value,
                                                             relu_attributions=True)
    torch.testing.assert_close(w.attribution, attrkit.LayerAttribution.interpolate(cam, (32, 32), "bilinear"))


def test_n_steps_and_method_change_the_attribution(model, image):
    w = explore(model, image, debounce=0)
    first = w.attribution
    w.controls["n_steps"].value = 5
    assert not torch.allclose(w.attribution, first)
    with_5_steps = w.attribution
    w.controls["method"].value = "Saliency"
    assert not torch.allclose(w.attribution, with_5_steps)


def test_window_changes_the_attribution(model, image):
    w = explore(model, image, debounce=0)
    for method, window in (("Occlusion", 8), ("FeatureAblation", 5)):
        if method not in w.controls["method"].options:
            pytest.skip(f"{method} is not in attrkit yet")
        w.controls["method"].value = method
        before = w.attribution
        w.controls["window"].value = window
        assert w.error is None and not torch.allclose(w.attribution, before), method


def test_sliders_offer_only_valid_windows_and_strides(model, image):
    w = explore(model, image, method="Occlusion", debounce=0)
    if w.controls["method"].value != "Occlusion":
        pytest.skip("Occlusion is not in attrkit yet")
    assert w.controls["window"].max == 32  # the image's size
    w.controls["window"].value = 40  # clamped by the slider: never larger than the image
    assert w.controls["window"].value == 32 and w.error is None
    assert w.controls["stride"].max == 32
    with pytest.raises(ValueError, match="window=40 is larger than the image"):  # the method layer still refuses
        _methods.check_window(w.inputs, 40, 20)


def test_a_stride_needing_too_many_forward_passes_is_not_offered(model):
    w = explore(model, torch.rand(3, 96, 96), method="Occlusion", debounce=0)
    if w.controls["method"].value != "Occlusion":
        pytest.skip("Occlusion is not in attrkit yet")
    w.controls["window"].value, w.controls["stride"].value = 2, 1
    stride = w.controls["stride"].value
    assert stride == w.controls["stride"].min > 1 and w.error is None
    assert ((96 - 2) // stride + 1) ** 2 <= _methods.MAX_EVALS
    with pytest.raises(ValueError, match="forward passes"):
        _methods.check_window(w.inputs, 2, 1)


def test_an_error_shows_as_a_wrapping_message_and_keeps_the_last_map(model, image, monkeypatch):
    w = explore(model, image, debounce=0)
    good = w.attribution

    def failing(*args, **kwargs):
        raise ValueError("no such setting: " + "x" * 400)

    monkeypatch.setattr(_methods, "attribute", failing)
    w.controls["n_steps"].value = 9  # no exception escapes
    assert w.error.startswith("ValueError: no such setting")
    assert "no such setting" in w.status.value and "Traceback" not in w.status.value
    assert w.attribution is good  # the last good attribution stays
    assert "overflow-wrap:anywhere" in w.children[0].value  # long messages wrap instead of widening the panel


def test_the_map_has_a_legend_that_follows_the_sign(model, image):
    w = explore(model, image, debounce=0)
    assert "attrkit-legend" in w.legend.value and "magnitude" in w.legend.value
    w.controls["sign"].value = "all"
    assert "−" in w.legend.value and "green +, red −" in w.legend.value


def test_going_back_to_a_setting_uses_the_cache(model, image, calls):
    w = explore(model, image, debounce=0)
    first = w.attribution
    w.controls["n_steps"].value = 5
    w.controls["method"].value = "Saliency"
    assert len(calls) == 3
    w.controls["method"].value = "IntegratedGradients"
    w.controls["n_steps"].value = 20
    assert w.attribution is first and len(calls) == 3
    assert "from the cache" in w.status.value


def test_display_controls_redraw_without_recomputing(model, image, calls):
    w = explore(model, image, debounce=0)
    attribution, png = w.attribution, w.heatmap.value
    for name, value in (("alpha", 0.2), ("sign", "all"), ("outlier_perc", 10.0)):
        w.controls[name].value = value
        assert w.heatmap.value != png, name
        png = w.heatmap.value
    assert w.attribution is attribution and len(calls) == 1
    assert plt.get_fignums() == []  # no figure left open


def test_moving_a_slider_quickly_recomputes_once_after_the_pause(model, image, calls):
    w = explore(model, image, debounce=0.2)
    assert w.wait(timeout=30)  # the first map comes from a worker thread
    for steps in (30, 40, 50):
        w.controls["n_steps"].value = steps
    assert "attrkit-stale" in w.heatmap._dom_classes  # the old map is dimmed at once
    assert w.wait(timeout=30)
    assert "attrkit-stale" not in w.heatmap._dom_classes
    assert calls == ["IntegratedGradients", "IntegratedGradients"]  # the first view, then n_steps=50 only
    assert w.error is None
    assert w._settings()[0] == ("IntegratedGradients", w.controls["target"].value, ("n_steps", 50))


def test_a_pil_image_with_a_normalizing_transform(model):
    pil = Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy())
    transform = T.Compose([T.CenterCrop(32), T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])
    w = explore(model, pil, transform=transform, debounce=0)
    assert w.inputs.shape == (1, 3, 32, 32) and w.inputs.min() < 0
    shown = T.Compose([T.CenterCrop(32), T.ToTensor()])(pil).permute(1, 2, 0).numpy()
    assert abs(w.image - shown).max() < 1e-6  # the picture is the crop, not the normalised tensor


def make_visualizer(model, n=6):
    def batches():  # endless, as in Captum's examples
        g = torch.Generator().manual_seed(0)
        while True:
            yield Batch(torch.rand(3, 3, 32, 32, generator=g), torch.randint(0, 10, (3,), generator=g))
    return AttributionVisualizer(model, [f"c{i}" for i in range(10)],
                                 [ImageFeature("Photo", baseline_transforms=[lambda x: x * 0], input_transforms=[])],
                                 batches(), score_func=lambda out: out.softmax(-1), max_examples=n)


def test_visualizer_filters_examples_by_correctness_and_predicted_class(model):
    vis = make_visualizer(model)
    ui = vis.widget(debounce=0)
    predicted = [int(s.argmax()) for s in vis.scores()]
    labels = [e.label for e in vis.examples()]
    assert len(ui.example.options) == 6 and ui.explorer is not None
    assert "baseline: the baseline_transforms of Photo" in ui.explorer.status.value  # the feature's baseline, named
    ui.prediction.value = "correct"
    assert [i for _, i in ui.example.options] == [i for i in range(6) if predicted[i] == labels[i]]
    ui.prediction.value = "incorrect"
    assert [i for _, i in ui.example.options] == [i for i in range(6) if predicted[i] != labels[i]]
    ui.prediction.value = "all"
    ui.predicted.value = predicted[0]
    assert [i for _, i in ui.example.options] == [i for i in range(6) if predicted[i] == predicted[0]]
    ui.predicted.value = next(c for c in range(10) if c not in predicted)
    assert ui.example.options == () and ui.explorer is None  # "no example matches", not an error


def test_visualizer_keeps_the_settings_across_examples_and_compares_methods(model):
    ui = make_visualizer(model).widget(debounce=0)
    ui.explorer.controls["method"].value = "Saliency"
    ui.example.value = 3
    assert ui.explorer.controls["method"].value == "Saliency"
    torch.testing.assert_close(ui.explorer.inputs[0], ui.vis.examples()[3].inputs)
    ui.compare.value = ("InputXGradient", "LayerGradCam")
    titles = [panel.children[0].value for panel in ui.gallery.children]
    assert titles == ["<b>InputXGradient</b>", "<b>LayerGradCam</b>"]
    assert all(isinstance(panel.children[1], W.Image) for panel in ui.gallery.children)


def test_visualizer_pickles_for_the_web_app_even_with_a_generator_dataset(model):
    vis = make_visualizer(model, n=4)
    copy = cloudpickle.loads(cloudpickle.dumps(vis))
    assert copy.dataset is None and len(copy.examples()) == 4
    torch.testing.assert_close(copy.examples()[2].inputs, vis.examples()[2].inputs)


def test_visualizer_rejects_what_it_cannot_show(model):
    feature = ImageFeature("Photo", None, None)
    with pytest.raises(ValueError, match="features"):
        AttributionVisualizer(model, ["a"], [feature, feature], [])
    with pytest.raises(ValueError, match="use_label_for_attr"):
        AttributionVisualizer(model, ["a"], feature, [], use_label_for_attr=False)



class SlowCNN(torch.nn.Module):
    """TinyImageCNN with a pause in every forward pass: a long computation on demand; counts its calls."""

    def __init__(self, pause=0.02):
        super().__init__()
        self.body, self.pause, self.calls = TinyImageCNN().eval(), pause, 0

    def forward(self, x):
        self.calls += 1
        time.sleep(self.pause)
        return self.body(x)


def test_a_newer_setting_stops_the_running_computation_at_its_next_batch(image, monkeypatch):
    monkeypatch.setattr(_methods, "BATCH_ELEMENTS", 1)  # one integration step per forward pass
    model = SlowCNN()
    w = explore(model, image, method="Saliency", debounce=0.01)
    assert w.wait(timeout=30)
    w.controls["method"].value = "IntegratedGradients"
    w.controls["n_steps"].value = 200  # about 200 forward passes, 4 s
    deadline = time.monotonic() + 30
    while model.calls < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "computing IntegratedGradients" in w.status.value
    w.controls["method"].value = "InputXGradient"
    assert w.wait(timeout=30)
    assert w.status.value.count("InputXGradient") and "IntegratedGradients" not in w.status.value
    assert model.calls < 100, "the superseded computation should have stopped at its next batch"
    expected = attrkit.InputXGradient(model).attribute(image[None], target=w.controls["target"].value)
    torch.testing.assert_close(w.attribution, expected)
    assert not any(k[0] == "IntegratedGradients" and dict(k[2:]).get("n_steps") == 200 for k in w._cache)


def test_a_setting_estimated_to_take_long_says_so_before_it_starts(model, image, monkeypatch):
    w = explore(model, image, debounce=10)  # the request waits: we read the status before it starts
    assert w.wait(timeout=30) and w.estimate() is not None
    monkeypatch.setattr(_status, "LONG_SECONDS", w.estimate() * 2)
    w.controls["n_steps"].value = 100  # five times the cost of the 20 steps just measured
    assert "estimated from the last run" in w.status.value
    assert f"about {w.estimate():.0f} s" in w.status.value
    w.cancel()


def test_the_estimate_follows_each_methods_own_speed(model, image):
    assert _status.Timing().estimate("Occlusion", 50.0) is None  # nothing measured yet: no guess
    w = explore(model, image, method="Saliency", debounce=0)
    saliency = w._timing.per_method["Saliency"]
    assert w.estimate("Occlusion") == pytest.approx(saliency * _methods.cost("Occlusion", w._settings(
        "Occlusion")[1], w.inputs))  # a method not run yet: the last run's speed
    w._timing.record("Occlusion", 10.0, 1.0)  # as if occlusion had run at 0.1 s per forward pass
    w.controls["method"].value = "Saliency"
    params = w._settings("Occlusion")[1]
    assert w.estimate("Occlusion") == pytest.approx(0.1 * _methods.cost("Occlusion", params, w.inputs))
    assert w.estimate("Saliency") == pytest.approx(saliency * _methods.cost("Saliency", {}, w.inputs))
    assert _status.computing_text("", "Occlusion", "cat (50.0%)", 2.2).endswith("about 2 s")


def test_the_status_above_the_controls_names_method_class_and_baseline(model, image):
    w = explore(model, image, classes=[f"class {i}" for i in range(10)], debounce=0)
    assert w.children.index(w.status) < len(w.children) - 1  # above the controls and the images
    label = w._labels[w.controls["target"].value]
    name = label.rsplit(" (", 1)[0]
    status = w.status.value
    assert "IntegratedGradients" in status and f"<b>{name}</b>" in status and "baseline: black image" in status
    assert "IntegratedGradients" in w.title.value and f"<b>{name}</b>" in w.title.value  # the map's title
    w.controls["method"].value = "Saliency"  # no baseline: the status says so instead of naming one
    assert "no baseline" in w.status.value and "Saliency" in w.title.value
    other = w.controls["target"].options[1]
    w.controls["target"].value = other[1]
    assert f"<b>{other[0].rsplit(' (', 1)[0]}</b>" in w.title.value


def test_the_default_baseline_is_a_black_image_through_the_transform(model):
    picture = Image.new("RGB", (40, 40), (200, 120, 40))
    normalise = T.Compose([T.Resize(32), T.ToTensor(), T.Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])])
    w = explore(model, picture, transform=normalise, debounce=0)
    black = normalise(Image.new("RGB", (40, 40)))[None]
    torch.testing.assert_close(w.baselines, black)  # not zeros: the normalised black
    assert w.baseline_name == "black image" and "baseline: black image" in w.status.value
    normalised = normalise(picture)  # a normalised tensor without its transform: zeros, named as such
    assert explore(model, normalised, debounce=0).baseline_name == "zeros in the model's input space"
    assert "0.5 everywhere" in explore(model, normalised, baselines=0.5, debounce=0).status.value


def test_switching_the_example_dims_the_old_map_at_once_and_computes_in_the_background(model):
    ui = make_visualizer(model).widget(debounce=0.05)
    old = ui.explorer
    assert old.wait(timeout=30) and old.attribution is not None
    ui.example.value = 3
    assert "loading example #3" in old.status.value and "attrkit-stale" in old.heatmap._dom_classes
    new = ui.explorer
    assert new is not old and new.wait(timeout=30)
    assert new.attribution is not None and "attrkit-stale" not in new.heatmap._dom_classes
    torch.testing.assert_close(new.inputs[0], ui.vis.examples()[3].inputs)


def test_the_guard_around_the_model_keeps_its_mode_and_stops_when_stale(model):
    from attrkit.insights.widget import _Cancelled, _Guarded

    stale = [False]
    guarded = _Guarded(model, lambda: stale[0])
    assert guarded.training is False and model.training is False
    guarded(torch.rand(1, 3, 32, 32))
    stale[0] = True
    with pytest.raises(_Cancelled):
        guarded(torch.rand(1, 3, 32, 32))
