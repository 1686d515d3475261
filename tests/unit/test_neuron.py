"""Neuron methods: axioms, neuron selectors as Captum takes them, and bad input by name."""
import doctest

import pytest
import torch
from torch import nn

import attrkit.neuron
import attrkit.neuron_rules
from attrkit import (Deconvolution, DeepLift, FeatureAblation, GuidedBackprop, LayerActivation, LayerConductance,
                     NeuronConductance, NeuronDeconvolution, NeuronDeepLift, NeuronDeepLiftShap,
                     NeuronFeatureAblation, NeuronGradient, NeuronGradientShap, NeuronGuidedBackprop,
                     NeuronIntegratedGradients)
from attrkit.testing import BranchCNN, ResidualCNN, SmallCNN, ToyModel
import warnings
import attrkit as A
from _helpers import X, bytes_model_and_images, close, seeded_mlp

captum_attr = pytest.importorskip("captum.attr")
C = captum_attr

NEURON_METHODS = [NeuronGradient, NeuronIntegratedGradients, NeuronConductance, NeuronDeepLift, NeuronDeepLiftShap,
                  NeuronGuidedBackprop, NeuronDeconvolution, NeuronFeatureAblation]


def _img(n=3, seed=0):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _kwargs(cls):
    if cls is NeuronConductance:
        return {"target": 0}
    return {"baselines": torch.zeros(2, 1, 8, 8)} if cls is NeuronDeepLiftShap else {}


def _neuron_change(model, layer, neuron, x, baseline):
    values = LayerActivation(model, layer)
    index = (slice(None), *neuron) if isinstance(neuron, tuple) else (slice(None), neuron)
    return values.attribute(x)[index] - values.attribute(baseline)[index]


@pytest.mark.parametrize("module", [attrkit.neuron, attrkit.neuron_rules])
def test_docstring_examples_run(module):
    assert doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


# --------------------------------------------------------------------------- axioms
def test_neuron_gradient_of_a_linear_layer_is_its_weight_row():
    model = ToyModel()
    grad = NeuronGradient(model, model.lin1).attribute(torch.randn(4, 3), neuron_selector=1)
    torch.testing.assert_close(grad, model.lin1.weight[1].detach().expand(4, 3))


def test_neuron_integrated_gradients_add_up_to_the_neuron_change():
    model, x, baseline = SmallCNN(), _img(), 0.3 * _img(seed=1)
    attr = NeuronIntegratedGradients(model, model.conv2).attribute(x, (4, 2, 1), baseline, n_steps=400)
    layer = LayerActivation(model, model.conv2)
    change = layer.attribute(x)[:, 4, 2, 1] - layer.attribute(baseline)[:, 4, 2, 1]
    torch.testing.assert_close(attr.sum((1, 2, 3)), change, rtol=0, atol=0.02 * float(change.abs().max()))


def test_neuron_conductance_summed_over_inputs_is_the_neurons_layer_conductance():
    model, x = SmallCNN(), _img()
    neuron = (2, 1, 1)
    per_input = NeuronConductance(model, model.conv2).attribute(x, neuron, target=1, n_steps=300)
    layer = LayerConductance(model, model.conv2).attribute(x, target=1, n_steps=300)[(slice(None), *neuron)]
    torch.testing.assert_close(per_input.sum((1, 2, 3)), layer, rtol=0, atol=0.02 * float(layer.abs().max()))


def test_neuron_conductance_default_trapezoid_differs_from_captum_by_n_over_n_minus_1():
    """Captum's trapezoid weights add up to (n-1)/n instead of 1; attrkit's add up to 1 (the same
    rule IntegratedGradients uses), so with the default method the results differ by exactly n/(n-1)."""
    model, x, n = SmallCNN(), _img(), 20
    ours = NeuronConductance(model, model.conv2).attribute(x, (1, 0, 2), target=2, n_steps=n)
    theirs = captum_attr.NeuronConductance(model, model.conv2).attribute(x, (1, 0, 2), target=2, n_steps=n)
    torch.testing.assert_close(ours * (n - 1) / n, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer, neuron", [("conv2", (4, 1, 1)), ("pool", (1, 1, 1)), ("fc", 2)])
def test_neuron_deeplift_adds_up_to_the_neuron_change_where_captums_does_not(layer, neuron):
    """SmallCNN's ReLU feeds its max pool directly: Captum's rules interfere there (as in its DeepLift)."""
    model = SmallCNN().eval()
    x, baseline = _img(), 0.2 * _img(seed=1)
    change = _neuron_change(model, getattr(model, layer), neuron, x, baseline)
    ours = NeuronDeepLift(model, getattr(model, layer)).attribute(x, neuron, baseline)
    torch.testing.assert_close(ours.sum((1, 2, 3)), change, rtol=1e-4, atol=1e-5)
    theirs = captum_attr.NeuronDeepLift(model, getattr(model, layer)).attribute(x, neuron, baseline)
    assert (theirs.sum((1, 2, 3)) - change).abs().max() > 0.01  # the documented difference


@pytest.mark.parametrize("layer, neuron", [("block_bn2", (2, 3, 1)), ("maxpool", (0, 4, 4)), ("fc", 1)])
def test_neuron_deeplift_adds_up_through_a_shared_inplace_relu(layer, neuron):
    model = ResidualCNN().eval()  # one ReLU(inplace=True), called three times
    x, baseline = torch.rand(2, 3, 16, 16), 0.3 * torch.rand(2, 3, 16, 16)
    attr = NeuronDeepLift(model, getattr(model, layer)).attribute(x, neuron, baseline)
    change = _neuron_change(model, getattr(model, layer), neuron, x, baseline)
    torch.testing.assert_close(attr.sum((1, 2, 3)), change, rtol=1e-4, atol=1e-5)
    assert model.relu.inplace is True


def test_neuron_deeplift_shap_is_the_mean_of_neuron_deeplift_over_the_baselines():
    model, x, distribution = SmallCNN().eval(), _img(2), _img(3, seed=1)
    ours = NeuronDeepLiftShap(model, model.pool).attribute(x, (3, 0, 2), distribution)
    per_baseline = [NeuronDeepLift(model, model.pool).attribute(x, (3, 0, 2), b.expand_as(x)) for b in distribution]
    torch.testing.assert_close(ours, torch.stack(per_baseline).mean(0))


@pytest.mark.parametrize("neuron_cls, primary_cls, kwargs", [
    (NeuronDeepLift, DeepLift, {"baselines": 0.1}),
    (NeuronGuidedBackprop, GuidedBackprop, {}),
    (NeuronDeconvolution, Deconvolution, {}),
    (NeuronFeatureAblation, FeatureAblation, {"baselines": 0.1}),
])
def test_a_neuron_of_the_output_layer_is_the_primary_method_with_that_target(neuron_cls, primary_cls, kwargs):
    model, x = SmallCNN().eval(), _img()
    ours = neuron_cls(model, model.fc).attribute(x, 2, **kwargs)
    torch.testing.assert_close(ours, primary_cls(model).attribute(x, target=2, **kwargs))


def test_neuron_feature_ablation_of_a_linear_neuron_is_weight_times_change():
    model, x = ToyModel(), torch.randn(4, 3)
    attr = NeuronFeatureAblation(model, model.lin1).attribute(x, 0, baselines=0.5, perturbations_per_eval=2)
    torch.testing.assert_close(attr, (x - 0.5) * model.lin1.weight[0].detach())


# --------------------------------------------------------------------------- neuron selectors, as Captum
@pytest.mark.parametrize("selector", [
    (slice(0, 2),),                      # a shorter index with a slice: channels 0-1, every position, summed
    (slice(None), 2, slice(1, 3)),
    (-1, -1, 0),                         # negative indices
    lambda out: out[:, 0].amax((1, 2)),  # a callable: any function of the layer's output, one number per example
])
def test_selectors_agree_with_captum(selector):
    model, x = SmallCNN(), _img()
    ours = NeuronGradient(model, model.conv2).attribute(x, selector)
    theirs = captum_attr.NeuronGradient(model, model.conv2).attribute(x, selector)
    torch.testing.assert_close(ours, theirs)


def test_callable_gets_the_tuple_of_a_tuple_layer_and_the_tensor_of_a_plain_one():
    model, x, seen = BranchCNN(), _img(), []

    def selector(out):
        seen.append(type(out))
        return (out[0] if isinstance(out, tuple) else out)[:, 0, 0, 0]

    NeuronGradient(model, model.split).attribute(x, selector)
    NeuronGradient(model, model.conv_a).attribute(x, selector)
    assert seen == [tuple, torch.Tensor]


def test_neuron_methods_accept_tuple_inputs_with_extra_arguments():
    class TwoImages(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = SmallCNN()

        def forward(self, a, b, weight):
            return self.cnn(a + weight * b)

    model = TwoImages()
    inputs, extra = (_img(), _img(seed=2)), (0.5,)
    for name, kwargs in [("NeuronGradient", {}), ("NeuronIntegratedGradients", {"n_steps": 8}),
                         ("NeuronConductance", {"n_steps": 8, "target": 1, "method": "riemann_left"})]:
        ours = getattr(attrkit, name)(model, model.cnn.conv2).attribute(
            inputs, (0, 1, 1), additional_forward_args=extra, **kwargs)
        theirs = getattr(captum_attr, name)(model, model.cnn.conv2).attribute(
            inputs, (0, 1, 1), additional_forward_args=extra, **kwargs)
        assert isinstance(ours, tuple) and len(ours) == 2
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_multiplies_by_inputs_follows_captum():
    model = SmallCNN()
    for name in ["NeuronGradient", "NeuronIntegratedGradients", "NeuronConductance", "NeuronGradientShap",
                 "NeuronDeepLift", "NeuronDeepLiftShap", "NeuronGuidedBackprop", "NeuronDeconvolution",
                 "NeuronFeatureAblation"]:
        ours, theirs = getattr(attrkit, name)(model, model.conv2), getattr(captum_attr, name)(model, model.conv2)
        assert ours.multiplies_by_inputs == theirs.multiplies_by_inputs, name
    assert not NeuronGradientShap(model, model.conv2, multiply_by_inputs=False).multiplies_by_inputs


# --------------------------------------------------------------------------- bad input, by name
@pytest.mark.parametrize("cls", NEURON_METHODS)
@pytest.mark.parametrize("selector", [(6, 0, 0), (0, 3, 0), (0, 0, -4), 2, (0, 1), (0, 1, 1, 1)])
def test_a_neuron_outside_the_layer_is_named(cls, selector):
    model = SmallCNN()  # conv2's output is (6, 3, 3) after the batch
    with pytest.raises(ValueError, match=r"`neuron_selector`.*\(6, 3, 3\)"):
        cls(model, model.conv2).attribute(_img(), selector, **_kwargs(cls))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("cls", NEURON_METHODS + [NeuronGradientShap])
def test_a_layer_that_is_not_part_of_the_model_is_named(cls):
    model = SmallCNN()
    kwargs = {"baselines": torch.zeros(2, 1, 8, 8)} if cls in (NeuronGradientShap, NeuronDeepLiftShap) else _kwargs(cls)
    with pytest.raises(ValueError, match=r"`layer` \(Linear\) was never called"):
        cls(model, nn.Linear(54, 3)).attribute(_img(), 0, **kwargs)


def test_an_index_into_a_tuple_layer_asks_for_a_callable():
    model = BranchCNN()
    with pytest.raises(ValueError, match="callable"):
        NeuronGradient(model, model.split).attribute(_img(), (0, 0, 0))


@pytest.mark.parametrize("cls", [NeuronDeepLift, NeuronDeepLiftShap, NeuronGuidedBackprop, NeuronDeconvolution])
def test_a_model_that_is_not_a_module_is_named(cls):
    model = SmallCNN()
    with pytest.raises(TypeError, match=f"`model` must be a torch.nn.Module for {cls.__name__}"):
        cls(model.forward, model.conv2)


# ----------------------------------------------------------------------- Captum drop-in: the calls Captum users make
def test_grad_kwargs_on_neuron_conductance():
    model = seeded_mlp()
    # gausslegendre: the same weights in both (attrkit's riemann_trapezoid, NeuronConductance's default, departs)
    kwargs = dict(neuron_selector=2, target=1, n_steps=8, method="gausslegendre", grad_kwargs={"retain_graph": True})
    expected = C.NeuronConductance(model, model[0]).attribute(X, **kwargs)
    got = A.NeuronConductance(model, model[0]).attribute(X, **kwargs)
    close(got, expected)


def test_neuron_conductance_docstring_states_the_trapezoid_departure():
    doc = A.NeuronConductance.__doc__
    assert "n/(n-1)" in doc.replace(" ", "").replace("\\", "") or "n / (n - 1)" in doc


@pytest.mark.parametrize("name", ["NeuronGradient", "NeuronIntegratedGradients", "NeuronConductance",
                                  "NeuronGuidedBackprop", "NeuronDeepLift"])
def test_neuron_index_is_a_deprecated_alias(name):
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    method = getattr(A, name)(model, model[0])
    kwargs = {"target": 1} if name == "NeuronConductance" else {}  # it explains a target through the neuron
    expected = method.attribute(X, neuron_selector=2, **kwargs)
    with pytest.warns(DeprecationWarning, match="neuron_selector"):
        got = method.attribute(X, neuron_index=2, **kwargs)
    close(got, expected)


def test_neuron_selector_has_no_deprecation_warning():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        A.NeuronGradient(model, model[0]).attribute(X, neuron_selector=2)


def test_neuron_integrated_gradients_uint8_matches_captum():
    model, x = bytes_model_and_images()
    expected = C.NeuronIntegratedGradients(model, model.conv).attribute(x, (1, 2, 2), n_steps=20)
    got = NeuronIntegratedGradients(model, model.conv).attribute(x, (1, 2, 2), n_steps=20)
    close(got.float(), expected.float())


def test_gradient_of_a_scalar_neuron_selector_as_captum():
    model = seeded_mlp()
    expected = C.NeuronGradient(model, model[0]).attribute(X, neuron_selector=lambda out: out.sum())
    close(A.NeuronGradient(model, model[0]).attribute(X, neuron_selector=lambda out: out.sum()), expected)
