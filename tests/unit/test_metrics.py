"""attrkit.metrics: infidelity and sensitivity against the Captum oracle, pixel flipping
and model randomisation on models with known answers, bad input, and the figures."""
import copy
import doctest
import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from attrkit import IntegratedGradients, Saliency  # noqa: E402
from attrkit.metrics import (  # noqa: E402
    fidelity, flipping, infidelity, infidelity_perturb_func_decorator, model_randomization, pixel_flipping, plots,
    plot_model_randomization, plot_pixel_flipping, randomization, sensitivity_max, spearman_correlation, ssim,
)
from attrkit.testing import MLP, LinearModel, SmallCNN, ToyModel, TwoInputModel  # noqa: E402
from _helpers import close, seeded_linear  # noqa: E402


@pytest.fixture
def captum_metrics():
    return pytest.importorskip("captum.metrics")


@pytest.fixture
def captum_attr():
    return pytest.importorskip("captum.attr")


def _close(a, b, rtol=1e-5):
    torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=rtol * float(b.abs().max().clamp_min(1e-12)))


# =========================================================================== infidelity
def _sine_perturb(inputs):
    """Deterministic: the perturbation depends only on each row's values."""
    noise = 0.2 * torch.sin(3 * inputs + 1)
    return noise, inputs - noise


def _gaussian_perturb(inputs):
    noise = 0.1 * torch.randn_like(inputs)
    return noise, inputs - noise


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("perturb", [_sine_perturb, _gaussian_perturb], ids=["deterministic", "seeded-random"])
@pytest.mark.parametrize("max_examples_per_batch", [None, 4, 9])
def test_infidelity_equals_captum(captum_metrics, normalize, perturb, max_examples_per_batch):
    torch.manual_seed(0)
    model, x = MLP(n_features=5, act=nn.Tanh), torch.randn(4, 5)
    attr = IntegratedGradients(model).attribute(x, target=1, n_steps=16)
    kwargs = dict(target=1, n_perturb_samples=5, normalize=normalize, max_examples_per_batch=max_examples_per_batch)
    torch.manual_seed(3)
    ours = infidelity(model, perturb, x, attr, **kwargs)
    torch.manual_seed(3)
    theirs = captum_metrics.infidelity(model, perturb, x, attr, **kwargs)
    assert ours.shape == (4,)
    _close(ours, theirs)


@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_infidelity_decorated_tuple_inputs_equal_captum(captum_metrics, multiply_by_inputs):
    torch.manual_seed(0)
    model = TwoInputModel()
    xs = (torch.randn(5, 4), torch.randn(5, 4))
    baselines = (torch.randn(5, 4), 0.5)
    scale = torch.linspace(0.5, 1.5, 5)[:, None]
    target = [0, 1, 2, 0, 1]
    attrs = IntegratedGradients(model).attribute(xs, baselines=baselines, target=target,
                                                 additional_forward_args=(scale,), n_steps=8)

    def shrink(inputs, baselines):  # deterministic: halfway towards the baselines
        return tuple(x - 0.5 * (x - b) for x, b in zip(inputs, baselines))

    kwargs = dict(baselines=baselines, additional_forward_args=(scale,), target=target, n_perturb_samples=3,
                  max_examples_per_batch=10)
    ours = infidelity(model, infidelity_perturb_func_decorator(multiply_by_inputs)(shrink), xs, attrs, **kwargs)
    theirs = captum_metrics.infidelity(
        model, captum_metrics.infidelity_perturb_func_decorator(multiply_by_inputs)(shrink), xs, attrs, **kwargs)
    _close(ours, theirs)


def test_infidelity_zero_for_exact_linear_attributions():
    # For a linear model, (x - b) * w with the decorator's global perturbations is exact.
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    model, x = LinearModel(w), torch.randn(6, 4)
    attr = IntegratedGradients(model).attribute(x, target=0)

    @infidelity_perturb_func_decorator(multiply_by_inputs=True)
    def drop_random_features(inputs):
        keep = (torch.rand_like(inputs) < 0.5).to(inputs.dtype)
        return inputs * keep

    torch.manual_seed(0)
    infid = infidelity(model, drop_random_features, x, attr, target=0, n_perturb_samples=20)
    assert float(infid.abs().max()) < 1e-9
    wrong = infidelity(model, drop_random_features, x, attr.flip(1), target=0, n_perturb_samples=20)
    assert float(wrong.min()) > 1e-3


def test_infidelity_does_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model, x = MLP(n_features=3, act=nn.Tanh), torch.rand(3, 3)
    attr = Saliency(model).attribute(x, target=0, abs=False)
    ref = infidelity(model, _sine_perturb, x, attr, target=0, n_perturb_samples=7)
    for size in (1, 3, 8, 100):
        _close(infidelity(model, _sine_perturb, x, attr, target=0, n_perturb_samples=7, max_examples_per_batch=size),
               ref)


@pytest.mark.parametrize("bad, error", [
    (dict(attributions=torch.zeros(3, 4)), ValueError),
    (dict(attributions=(torch.zeros(3, 3), torch.zeros(3, 3))), ValueError),
    (dict(n_perturb_samples=0), ValueError),
    (dict(max_examples_per_batch=0), ValueError),
    (dict(perturb_func=lambda x: x - 0.1), ValueError),          # not a (perturbations, perturbed) pair
    (dict(perturb_func=lambda x: (x[:1], x[:1])), ValueError),    # wrong number of rows
    (dict(perturb_func=3), TypeError),
    (dict(target=7), ValueError),
])
def test_infidelity_bad_input(bad, error):
    model, x = ToyModel(), torch.rand(3, 3)
    kwargs = dict(forward_func=model, perturb_func=_sine_perturb, inputs=x, attributions=torch.zeros(3, 3), target=0)
    with pytest.raises(error):
        infidelity(**{**kwargs, **bad})


# =========================================================================== sensitivity
@pytest.mark.parametrize("norm_ord", ["fro", 1, float("inf")])
@pytest.mark.parametrize("max_examples_per_batch", [None, 8])
def test_sensitivity_max_equals_captum_for_the_same_noise(captum_metrics, captum_attr, norm_ord,
                                                          max_examples_per_batch):
    torch.manual_seed(0)
    model, x = MLP(n_features=6, act=nn.Tanh), torch.randn(4, 6)
    kwargs = dict(target=torch.tensor([0, 1, 2, 0]), n_perturb_samples=7, perturb_radius=0.3, norm_ord=norm_ord,
                  max_examples_per_batch=max_examples_per_batch)
    torch.manual_seed(3)
    ours = sensitivity_max(Saliency(model).attribute, x, **kwargs)
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_metrics.sensitivity_max(captum_attr.Saliency(model).attribute, x, **kwargs)
    assert ours.shape == (4,) and float(ours.min()) > 0
    _close(ours, theirs, rtol=1e-4)


def test_sensitivity_max_expands_baselines_and_args_like_captum(captum_metrics, captum_attr):
    torch.manual_seed(0)
    model = TwoInputModel()
    xs = (torch.randn(3, 4), torch.randn(3, 4))
    kwargs = dict(baselines=(torch.randn(3, 4), 0.0), target=[0, 2, 1],
                  additional_forward_args=(torch.tensor([[1.0], [2.0], [0.5]]),), n_steps=10)
    torch.manual_seed(3)
    ours = sensitivity_max(IntegratedGradients(model).attribute, xs, n_perturb_samples=4, perturb_radius=0.2,
                           max_examples_per_batch=6, **kwargs)
    torch.manual_seed(3)
    theirs = captum_metrics.sensitivity_max(captum_attr.IntegratedGradients(model).attribute, xs, n_perturb_samples=4,
                                            perturb_radius=0.2, max_examples_per_batch=6, **kwargs)
    _close(ours, theirs, rtol=1e-4)


def test_sensitivity_max_agrees_with_captum_in_expectation(captum_metrics, captum_attr):
    # different noise on each side: the mean of the sampled maxima agrees
    torch.manual_seed(0)
    model, x = MLP(n_features=2, act=nn.Tanh), torch.randn(3, 2)
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            torch.manual_seed(10 + seed)
            ours.append(sensitivity_max(Saliency(model).attribute, x, target=0, perturb_radius=0.2,
                                        n_perturb_samples=1000))
            torch.manual_seed(20 + seed)
            theirs.append(captum_metrics.sensitivity_max(captum_attr.Saliency(model).attribute, x, target=0,
                                                         perturb_radius=0.2, n_perturb_samples=1000))
    ours, theirs = torch.stack(ours).mean(0), torch.stack(theirs).mean(0)
    assert float(((ours - theirs).abs() / theirs).max()) < 0.1, (ours, theirs)


def test_sensitivity_max_is_zero_for_a_constant_explanation():
    x = torch.randn(5, 3, 4, 4)
    assert torch.equal(sensitivity_max(lambda inp: torch.ones_like(inp), x), torch.zeros(5))
    assert torch.equal(sensitivity_max(lambda inp: torch.zeros_like(inp), x), torch.zeros(5))


def test_sensitivity_max_calls_the_perturbation_with_radius_when_it_takes_one():
    seen = []

    def perturb(inputs, radius):
        seen.append(radius)
        return inputs + radius

    sens = sensitivity_max(lambda inp: inp * 2, torch.ones(2, 3), perturb_func=perturb, perturb_radius=0.5,
                           n_perturb_samples=3)
    assert seen == [0.5] and torch.allclose(sens, torch.full((2,), 0.5))  # |2x+1 - 2x| / |2x|


@pytest.mark.parametrize("bad", [dict(norm_ord="nuc"), dict(n_perturb_samples=0), dict(max_examples_per_batch=-1),
                                 dict(explanation_func=None)])
def test_sensitivity_max_bad_input(bad):
    kwargs = dict(explanation_func=lambda x: x, inputs=torch.ones(2, 3))
    with pytest.raises((ValueError, TypeError)):
        sensitivity_max(**{**kwargs, **bad})


# =========================================================================== pixel flipping
def _linear_setup(other_class_weight: float):
    torch.manual_seed(0)
    w = torch.stack([torch.randn(20), torch.full((20,), other_class_weight)])
    model, x = LinearModel(w), torch.rand(6, 20) + 0.1
    ig = IntegratedGradients(model).attribute(x, target=0)
    torch.testing.assert_close(ig, x * w[0])  # the closed form
    return model, x, ig, torch.randn(6, 20)


@pytest.mark.parametrize("score", ["logit", "softmax"])
def test_integrated_gradients_beat_random_attributions_on_a_linear_model(score):
    # With other-class weights of zero, the probability is monotone in the target logit, and for a linear model
    # removing features by decreasing (x - b) * w is the steepest possible descent at every step.
    model, x, ig, random_attr = _linear_setup(0.0)
    curves = {}
    for mode in ("deletion", "insertion"):
        for name, attr in (("ig", ig), ("random", random_attr)):
            curves[mode, name] = pixel_flipping(model, x, attr, target=0, mode=mode, steps=10, score=score)
    tol = 1e-6
    assert (curves["deletion", "ig"][1] <= curves["deletion", "random"][1] + tol).all()
    assert (curves["insertion", "ig"][1] >= curves["insertion", "random"][1] - tol).all()
    assert (curves["deletion", "ig"][2] < curves["deletion", "random"][2]).all()
    assert (curves["insertion", "ig"][2] > curves["insertion", "random"][2]).all()


def test_curve_endpoints_are_the_input_and_the_baseline():
    model, x, ig, _ = _linear_setup(0.3)
    logits = model(x)[:, 0].detach()
    base = model(torch.full_like(x, 0.2))[:, 0].detach()
    fractions, deletion, _ = pixel_flipping(model, x, ig, target=0, score="logit", steps=4, baselines=0.2)
    _, insertion, _ = pixel_flipping(model, x, ig, target=0, mode="insertion", score="logit", steps=4, baselines=0.2)
    torch.testing.assert_close(fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(deletion[:, 0], logits)
    torch.testing.assert_close(deletion[:, -1], base)
    torch.testing.assert_close(insertion[:, 0], base)
    torch.testing.assert_close(insertion[:, -1], logits)


class _RGBNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _reference_curve(model, x, attr, target, mode, steps, baseline):
    """One example, one step at a time: rank pixels by the channel-summed attribution."""
    n_pix = x.shape[1] * x.shape[2]
    order = torch.argsort(attr.sum(0).reshape(-1), descending=True, stable=True)
    scores = []
    for k in range(steps + 1):
        count = int(np.floor(k * n_pix / steps + 0.5))
        flipped = torch.zeros(n_pix, dtype=torch.bool)
        flipped[order[:count]] = True
        flipped = flipped.reshape(1, *x.shape[1:])
        take_base = flipped if mode == "deletion" else ~flipped
        point = torch.where(take_base, baseline, x)
        scores.append(model(point.unsqueeze(0)).softmax(1)[0, target])
    return torch.stack(scores).detach()


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_pixel_flipping_matches_a_step_by_step_reference_on_rgb_images(mode):
    model = _RGBNet()
    torch.manual_seed(1)
    x, attr, baseline = torch.randn(3, 3, 6, 6), torch.randn(3, 3, 6, 6), torch.randn(3, 6, 6)
    target = [0, 2, 1]
    _, scores, _ = pixel_flipping(model, x, attr, target=target, mode=mode, steps=7, baselines=baseline)
    for i in range(3):
        ref = _reference_curve(model, x[i], attr[i], target[i], mode, 7, baseline)
        torch.testing.assert_close(scores[i], ref)
    _, one_channel, _ = pixel_flipping(model, x, attr.sum(1, keepdim=True), target=target, mode=mode, steps=7,
                                       baselines=baseline)
    torch.testing.assert_close(one_channel, scores)


def test_pixel_flipping_with_tuple_inputs_ranks_all_features_together():
    model = TwoInputModel()
    torch.manual_seed(2)
    xs, attrs = (torch.randn(2, 4), torch.randn(2, 4)), (torch.randn(2, 4), torch.randn(2, 4))
    _, scores, _ = pixel_flipping(model, xs, attrs, target=1, steps=8, additional_forward_args=(2.0,), score="logit")
    order = torch.cat(attrs, 1).argsort(1, descending=True)
    for k in (0, 3, 8):
        flipped = torch.zeros(2, 8, dtype=torch.bool).scatter_(1, order[:, :k], True)
        a, b = (torch.where(flipped[:, s], 0.0, x) for s, x in zip((slice(0, 4), slice(4, 8)), xs))
        torch.testing.assert_close(scores[:, k], model(a, b, 2.0)[:, 1].detach())


class _Counting(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.inference = model, 0, []

    def forward(self, x):
        self.calls += 1
        self.inference.append(torch.is_inference_mode_enabled())
        return self.model(x)


def test_pixel_flipping_is_batched_and_batch_size_invariant():
    model = _Counting(SmallCNN().eval())
    x = torch.randn(3, 1, 8, 8)
    attr = torch.randn(3, 1, 8, 8)
    fractions, scores, auc = pixel_flipping(model, x, attr, target=1, steps=16)
    assert model.calls == 1 and all(model.inference)  # 17 steps x 3 examples in one forward pass
    assert not torch.is_inference(scores) and scores.shape == (3, 17) and auc.shape == (3,)
    for size in (1, 4, 20):
        model.calls = 0
        _, again, auc_again = pixel_flipping(model, x, attr, target=1, steps=16, max_examples_per_batch=size)
        assert model.calls == -(-17 // max(1, size // 3))
        torch.testing.assert_close(again, scores)
        torch.testing.assert_close(auc_again, auc)


@pytest.mark.parametrize("bad", [
    dict(mode="removal"), dict(score="probability"), dict(steps=0), dict(steps=2.5),
    dict(attributions=torch.zeros(2, 1, 8, 7)), dict(attributions=torch.zeros(2, 2, 8, 8)),
    dict(attributions=(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))), dict(max_examples_per_batch=0),
    dict(target=5),
])
def test_pixel_flipping_bad_input(bad):
    kwargs = dict(model=SmallCNN(), inputs=torch.randn(2, 1, 8, 8), attributions=torch.randn(2, 1, 8, 8), target=0)
    with pytest.raises(ValueError):
        pixel_flipping(**{**kwargs, **bad})


def test_softmax_score_needs_class_outputs():
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    with pytest.raises(ValueError, match="logit"):
        pixel_flipping(model, torch.rand(2, 3), torch.rand(2, 3))
    assert pixel_flipping(model, torch.rand(2, 3), torch.rand(2, 3), score="logit", steps=3)[1].shape == (2, 4)


# =========================================================================== model randomisation
def _saliency(m, x, t):
    return Saliency(m).attribute(x, target=t)


def _cnn_and_images():
    torch.manual_seed(0)
    return SmallCNN(), torch.randn(8, 1, 8, 8)


def test_original_model_is_never_modified():
    model, x = _cnn_and_images()
    model.train()
    before = copy.deepcopy(model.state_dict())
    ids = [id(p) for p in model.parameters()]
    result = model_randomization(model, _saliency, x, target=0)
    assert model.training and [id(p) for p in model.parameters()] == ids
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert result.layers == ["(none)", "fc", "conv2", "conv1"]


def test_no_randomised_layer_or_an_unused_one_keeps_correlation_at_one():
    model, x = _cnn_and_images()
    result = model_randomization(model, _saliency, x, target=0, layers=[])
    assert result.layers == ["(none)"]
    torch.testing.assert_close(result[0].spearman, torch.ones(8))
    torch.testing.assert_close(result[0].ssim, torch.ones(8))

    class WithUnusedLayer(SmallCNN):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(3, 3)

    torch.manual_seed(0)
    result = model_randomization(WithUnusedLayer(), _saliency, x, target=0, layers=["unused", "conv1"])
    assert result.layers == ["(none)", "unused", "conv1"]  # top down: registered last first
    torch.testing.assert_close(result[1].spearman, torch.ones(8))
    assert float(result[2].spearman.mean()) < 0.9


@pytest.mark.parametrize("method, absolute", [("saliency", True), ("integrated_gradients", False)])
def test_correlation_falls_as_the_cascade_reaches_the_input(method, absolute):
    model, x = _cnn_and_images()
    attribute = _saliency if method == "saliency" else (
        lambda m, inp, t: IntegratedGradients(m).attribute(inp, target=t, n_steps=8))
    result = model_randomization(model, attribute, x, target=0, absolute=absolute)
    spearman, similarity = result.spearman.nanmean(1), result.ssim.nanmean(1)
    assert float(spearman[0]) > 0.999 and float(similarity[0]) > 0.999
    assert (spearman[1:] < 0.8).all() and (similarity[1:] < 0.8).all(), result
    assert float(spearman[-1]) < 0.4, result  # every layer randomised: little of the original ranking is left


def test_orders_seeds_and_layer_selection():
    model, x = _cnn_and_images()
    rng = torch.get_rng_state()
    cascading = model_randomization(model, _saliency, x, target=0)
    independent = model_randomization(model, _saliency, x, target=0, order="independent")
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    # the top layer is the first step of both orders; the same seed gives the same new weights
    torch.testing.assert_close(independent[1].attributions, cascading[1].attributions)
    # independent: conv1 alone, as if it were the only layer chosen (modules accepted too)
    only_conv1 = model_randomization(model, _saliency, x, target=0, layers=[model.conv1])
    torch.testing.assert_close(independent[-1].attributions, only_conv1[-1].attributions)
    assert not torch.allclose(cascading[-1].attributions, independent[-1].attributions)
    again = model_randomization(model, _saliency, x, target=0)
    torch.testing.assert_close(again.spearman, cascading.spearman)


def test_result_is_a_notebook_friendly_table():
    model, x = _cnn_and_images()
    result = model_randomization(model, _saliency, x[:2], target=0, layers="fc")
    rows = result.rows()
    assert [r["layer"] for r in rows] == ["(none)", "fc"] and set(rows[0]) == {"layer", "spearman", "ssim"}
    assert "spearman" in repr(result) and len(result) == 2 and result.spearman.shape == (2, 2)


def test_tabular_attributions_have_spearman_but_no_ssim():
    torch.manual_seed(0)
    result = model_randomization(MLP(), _saliency, torch.randn(4, 10), target=0)
    assert result.layers == ["(none)", "net.4", "net.2", "net.0"]
    assert torch.isnan(result.ssim).all() and not torch.isnan(result[0].spearman).any()


@pytest.mark.parametrize("bad, error", [
    (dict(order="random"), ValueError), (dict(layers=["conv3"]), ValueError), (dict(layers=["relu1"]), ValueError),
    (dict(model=lambda x: x), TypeError), (dict(attribute_fn="saliency"), TypeError),
    (dict(attribute_fn=lambda m, x, t: 1.0), TypeError),
])
def test_model_randomization_bad_input(bad, error):
    model, x = _cnn_and_images()
    kwargs = dict(model=model, attribute_fn=_saliency, inputs=x[:2], target=0)
    with pytest.raises(error):
        model_randomization(**{**kwargs, **bad})


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(0)
    a, b = torch.randint(0, 5, (4, 30)).float(), torch.randint(0, 7, (4, 30)).float()
    ours = spearman_correlation(a, b)
    for i in range(4):
        assert abs(float(ours[i]) - stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic) < 1e-5
    assert torch.isnan(spearman_correlation(torch.ones(1, 5), torch.rand(1, 5))).all()


def _reference_ssim(a, b, size=7, sigma=1.5):
    coords = np.arange(size) - (size - 1) / 2
    g = np.exp(-coords**2 / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa**2).sum() - ma**2, (w * pb**2).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            c1, c2 = 0.01**2, 0.03**2
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_definition():
    torch.manual_seed(0)
    a, b = torch.rand(2, 9, 10), torch.rand(2, 9, 10)
    ours = ssim(a, b, window_size=7)
    for i in range(2):
        assert abs(float(ours[i]) - _reference_ssim(a[i].double().numpy(), b[i].double().numpy())) < 1e-5
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    torch.testing.assert_close(ssim(a, b), ssim(b, a))
    assert ssim(torch.rand(1, 4, 4), torch.rand(1, 4, 4), window_size=11).shape == (1,)  # window shrinks to 3
    with pytest.raises(ValueError):
        ssim(torch.rand(2, 9), torch.rand(2, 9))


# =========================================================================== figures and examples
def test_figures_render_without_warnings():
    import matplotlib.pyplot as plt

    model, x = _cnn_and_images()
    ig = IntegratedGradients(model).attribute(x, target=0, n_steps=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curves = {name: pixel_flipping(model, x, attr, target=0, steps=8)
                  for name, attr in (("IG", ig), ("random", torch.randn_like(x)))}
        fig, ax = plot_pixel_flipping(curves, mode="deletion")
        fig.canvas.draw()
        assert len(ax.lines) == 2 and "AUC" in ax.get_legend().get_texts()[0].get_text()
        assert "removed" in ax.get_xlabel()
        result = model_randomization(model, _saliency, x, target=0)
        fig2, axes = plot_model_randomization(result, example=1)
        fig2.canvas.draw()
        assert len(axes) == 4 and [a.get_title() for a in axes] == ["original", "fc", "conv2", "conv1"]
        assert axes[1].get_xlabel().startswith("Spearman")
        tab = model_randomization(MLP(), _saliency, torch.randn(2, 10), target=0, layers="net.4")
        fig3, _ = plot_model_randomization(tab)
        fig3.canvas.draw()
    plt.close("all")


def test_plot_bad_input():
    with pytest.raises(TypeError):
        plot_pixel_flipping({})
    with pytest.raises(TypeError):
        plot_model_randomization([])


@pytest.mark.parametrize("module", [fidelity, flipping, randomization, plots], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    failed, attempted = doctest.testmod(module, verbose=False)
    assert attempted > 0 and failed == 0


# ------------------------------------------------------------------------------- pixel flipping on a one-logit model
def test_pixel_flipping_one_logit_follows_the_sigmoid():
    model = seeded_linear(4, 1)
    x = torch.rand(3, 4)
    good = x * model.weight[0].detach()
    bad = -good
    _, scores_good, auc_good = pixel_flipping(model, x, good, steps=4)
    _, scores_bad, auc_bad = pixel_flipping(model, x, bad, steps=4)
    # the curve follows sigmoid(logit): it starts at the input's and ends at the baseline's probability
    close(scores_good[:, 0], torch.sigmoid(model(x)[:, 0]).detach())
    close(scores_good[:, -1], torch.sigmoid(model(torch.zeros_like(x))[:, 0]).detach())
    assert not torch.allclose(scores_good, torch.ones_like(scores_good))
    # deletion by the faithful map falls faster than by its opposite: lower AUC
    assert (auc_good < auc_bad).all()


def test_pixel_flipping_one_logit_logit_score_is_the_raw_output():
    model, x = seeded_linear(4, 1), torch.rand(3, 4)
    _, scores, _ = pixel_flipping(model, x, x, score="logit", steps=4)
    close(scores[:, 0], model(x)[:, 0].detach())
