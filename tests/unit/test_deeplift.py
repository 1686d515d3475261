"""DeepLift and DeepLiftShap: closed forms, completeness on real architectures, reuse and
in-place modules, the internal API for layer and neuron methods, and bad input."""
import warnings

import pytest
import torch
from torch import nn

from attrkit import DeepLift, DeepLiftShap, LayerDeepLift, NeuronDeepLift, Saliency
from attrkit._hooks import layer_as_variable, layer_values, neuron_objective
from attrkit.deeplift import NONLINEAR_RULES, Rescale, layer_multipliers, multipliers
from attrkit.testing import LinearModel, ResidualCNN, SmallCNN, TwoInputModel
from cases_deeplift import oracle_cnn, pool1d_net, pool3d_net, softmax_net


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# --------------------------------------------------------------------------- closed forms
def test_linear_model_gives_weight_times_difference():
    w = torch.tensor([[1.0, -2.0, 3.0]])
    x, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, 0.0, -1.0]])
    attr = DeepLift(LinearModel(w)).attribute(x, b)
    torch.testing.assert_close(attr, (x - b) * w)


def test_rescale_multiplier_is_the_secant_slope():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.fill_(2.0)
    x, b = torch.tensor([[1.5]]), torch.tensor([[-0.5]])
    m = DeepLift(model, multiply_by_inputs=False).attribute(x, b)
    secant = (torch.sigmoid(2 * x) - torch.sigmoid(2 * b)) / (x - b)
    torch.testing.assert_close(m, secant)


def test_maxpool_rule_routes_changes_to_the_argmax_of_input_and_baseline():
    # one window of two: max(3, 1) = 3 for the input, max(0, 2) = 2 for the baseline
    model = nn.Sequential(nn.MaxPool1d(2))
    x, b = torch.tensor([[[3.0, 1.0]]]), torch.tensor([[[0.0, 2.0]]])
    attr = DeepLift(model).attribute(x, b)
    # the output change 3 - 2 = 1 splits into max(3, 2) - 2 = 1 for the input's argmax (position 0)
    # and 3 - max(3, 2) = 0 for the baseline's argmax (position 1)
    torch.testing.assert_close(attr, torch.tensor([[[1.0, 0.0]]]))
    # output 3 vs reference 4: the change -1 is y - max(y, y_ref), so it goes to the baseline's argmax
    x, b = torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[4.0, 0.0]]])
    attr = DeepLift(model).attribute(x, b)
    torch.testing.assert_close(attr, torch.tensor([[[-1.0, 0.0]]]))


def test_equal_input_and_baseline_fall_back_to_the_gradient():
    model = SmallCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    local = DeepLift(model, multiply_by_inputs=False).attribute(x, baselines=x.clone(), target=1)
    torch.testing.assert_close(local, Saliency(model).attribute(x, target=1, abs=False))


def test_softmax_rule_is_per_example():
    x, b = torch.randn(4, 5), torch.randn(4, 5)
    together = DeepLift(softmax_net()).attribute(x, b, target=1)
    alone = torch.cat([DeepLift(softmax_net()).attribute(x[i:i + 1], b[i:i + 1], target=1) for i in range(4)])
    torch.testing.assert_close(together, alone)


# --------------------------------------------------------------------------- completeness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    model = ResidualCNN().eval().to(dtype)
    x = torch.randn(2, 3, 16, 16, dtype=dtype)
    attr, delta = DeepLift(model).attribute(x, x.flip(0), target=0, return_convergence_delta=True)
    assert attr.dtype == dtype and delta.abs().max() < (1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("make, shape", [
    (lambda: SmallCNN().eval(), (4, 1, 8, 8)),       # ReLU straight into non-overlapping max pooling
    (lambda: ResidualCNN().eval(), (3, 3, 16, 16)),  # overlapping 3x3/2 pooling, reused in-place ReLU
    (pool1d_net, (3, 2, 12)),
    (pool3d_net, (2, 1, 6, 6, 6)),
])
def test_deltas_are_small_on_relu_and_max_pool_networks(make, shape):
    torch.manual_seed(0)
    x, b = torch.randn(*shape), torch.randn(*shape) * 0.3
    _, delta = DeepLift(make()).attribute(x, b, target=1, return_convergence_delta=True)
    assert delta.abs().max() < 1e-4


def test_resnet18_as_it_is():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    flags = [m.inplace for m in model.modules() if hasattr(m, "inplace")]
    # not a zero baseline: with random weights every activation of a zero image is zero, and there
    # DeepLift's secants equal the gradients, which would hide a wrong rule
    x, b = torch.randn(2, 3, 224, 224), torch.randn(1, 3, 224, 224) * 0.5
    attr, delta = DeepLift(model).attribute(x, b, target=3, return_convergence_delta=True)
    gain = attr.flatten(1).sum(1) - delta  # f(x) - f(b)
    assert attr.shape == x.shape
    assert delta.abs().max() < 1e-4 and gain.abs().min() > 1e-2  # a real difference, explained exactly
    assert [m.inplace for m in model.modules() if hasattr(m, "inplace")] == flags and all(flags)
    assert _hooks(model) == 0


def test_timm_efficientnet_lite_as_it_is():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0").eval()  # ReLU6(inplace=True) inside BatchNormAct2d
    x, b = torch.randn(2, 3, 96, 96), torch.randn(1, 3, 96, 96) * 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every nonlinearity is a module with a rule: no warning
        _, delta = DeepLift(model).attribute(x, b, target=0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-4


# --------------------------------------------------------------------------- reuse, in place, state
def test_reused_inplace_relu_matches_one_module_per_call():
    x, b = torch.randn(3, 3, 16, 16), torch.rand(1, 3, 16, 16)
    shared = DeepLift(ResidualCNN().eval()).attribute(x, b, target=2)
    separate = DeepLift(ResidualCNN(shared_relu=False).eval()).attribute(x, b, target=2)
    torch.testing.assert_close(shared, separate)


def test_flags_and_hooks_restored_after_an_error_inside_forward():
    model = ResidualCNN().eval()

    def explode(module, args, out):
        raise RuntimeError("boom")

    handle = model.fc.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        DeepLift(model).attribute(torch.randn(2, 3, 16, 16), target=0)
    handle.remove()
    assert model.relu.inplace is True and _hooks(model) == 0
    assert set(vars(model.relu)) == set(vars(nn.ReLU(inplace=True)))


# --------------------------------------------------------------------------- functional nonlinearities, custom rules
def test_functional_nonlinearities_are_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"torch\.relu \(in TwoInputModel\.forward\)"):
        DeepLift(TwoInputModel()).attribute((torch.randn(2, 4), torch.randn(2, 4)), target=0)


class _Gate(nn.Module):  # squeeze-excitation in miniature: the input times a function of itself
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.gate, self.out = nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(x * self.gate(self.fc(x)))


def test_a_product_of_two_activations_is_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"product of two activations \(Tensor\.mul in _Gate\.forward\)"):
        DeepLift(_Gate().eval()).attribute(torch.randn(2, 4), target=0)


def test_modules_without_a_rule_are_named_by_their_place_in_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with pytest.warns(UserWarning, match=r"`1` \(LayerNorm\) has no DeepLift rule"):
        DeepLift(model).attribute(torch.randn(2, 3), target=0)


def test_covered_models_give_no_warning():  # products with weights, rules on every nonlinearity: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DeepLift(SmallCNN().eval()).attribute(torch.rand(2, 1, 8, 8), target=0)
        DeepLift(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU()).eval()).attribute(
            torch.rand(3, 4), target=0)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def _swish_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), Swish(), nn.Linear(8, 2))


def test_a_registered_custom_activation_becomes_exact():
    x, b = torch.randn(4, 6), torch.randn(4, 6)
    with pytest.warns(UserWarning, match=r"torch\.sigmoid \(in Swish\.forward\)"):
        _, before = DeepLift(_swish_net()).attribute(x, b, target=1, return_convergence_delta=True)
    with_swish = DeepLift(_swish_net(), rules={**NONLINEAR_RULES, Swish: Rescale})
    _, after = with_swish.attribute(x, b, target=1, return_convergence_delta=True)
    assert before.abs().max() > 1e-3 and after.abs().max() < 1e-5


def test_the_rules_argument_reaches_layer_and_neuron_deeplift():
    x, b = torch.randn(4, 6), torch.randn(4, 6)
    rules = {**NONLINEAR_RULES, Swish: Rescale}
    model = _swish_net()
    _, delta = LayerDeepLift(model, model[0], rules=rules).attribute(x, b, target=1, return_convergence_delta=True)
    neuron = NeuronDeepLift(model, model[2], rules=rules).attribute(x, 1, baselines=b)
    with torch.no_grad():
        change = model(x)[:, 1] - model(b)[:, 1]
    assert delta.abs().max() < 1e-5
    torch.testing.assert_close(neuron.sum(1), change, atol=1e-5, rtol=1e-5)


def test_rules_must_be_a_table_of_module_types():
    with pytest.raises(TypeError, match="`rules`"):
        DeepLift(_swish_net(), rules=[Rescale])


# --------------------------------------------------------------------------- the internal API for layer/neuron methods
def test_multipliers_accept_any_function_running_the_model():
    model = SmallCNN().eval()
    x, b = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    plain = multipliers(model, model, (x,), (b,), target=1)
    doubled = multipliers(model, lambda inp: 2 * model(inp), (x,), (b,), target=1)
    torch.testing.assert_close(doubled[0], 2 * plain[0])


def test_multipliers_at_a_layer_via_layer_as_variable():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), head).eval()
    x, b = torch.randn(3, 3), torch.randn(3, 3)
    (lx,), _ = layer_values(model, model[1], (x,))
    (lb,), _ = layer_values(model, model[1], (b,))
    rerooted = layer_as_variable(model, model[1], 1)
    at_layer = multipliers(model, rerooted, (lx,), (lb,), target=0, args=(x,))
    direct = multipliers(head, head, (lx,), (lb,), target=0)
    torch.testing.assert_close(at_layer[0], direct[0])


# Captum's LayerDeepLift is not complete at the input of a nonlinearity ((1, True), (3, True): its
# delta is ~1e-3 there), so those layers are checked for completeness only.
@pytest.mark.parametrize("layer, to_input, oracle", [
    (0, False, True), (1, False, True), (3, False, True), (4, True, True), (6, False, True), (7, True, True),
    (1, True, False), (3, True, False),
])
def test_layer_multipliers_give_captums_layer_deeplift(layer, to_input, oracle):
    captum_attr = pytest.importorskip("captum.attr")
    model, x, b = oracle_cnn(), torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8) * 0.1
    mults, values, base_values = layer_multipliers(model, model, model[layer], (x,), (b,), target=2,
                                                   attribute_to_input=to_input)
    ours = mults[0] * (values[0] - base_values[0])
    gain = model(x)[:, 2] - model(b)[:, 2]  # completeness holds at every layer
    torch.testing.assert_close(ours.flatten(1).sum(1), gain.detach(), rtol=1e-4, atol=1e-5)
    if oracle:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = captum_attr.LayerDeepLift(model, model[layer]).attribute(
                x, b, target=2, attribute_to_layer_input=to_input)
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("to_input", [False, True])
def test_a_neuron_objective_gives_captums_neuron_deeplift(to_input):
    captum_attr = pytest.importorskip("captum.attr")
    model, x, b = oracle_cnn(), torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8) * 0.1
    objective = neuron_objective(model, model[6], 4, attribute_to_input=to_input)
    ours = multipliers(model, objective, (x,), (b,))[0] * (x - b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.NeuronDeepLift(model, model[6]).attribute(x, 4, b, attribute_to_neuron_input=to_input)
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-7)
    # DeepLift(Shap) hooks `model` and differentiates `forward_func`: swapping the latter gives the neuron method
    shap = DeepLiftShap(model)
    shap.forward_func = objective
    dist = torch.randn(3, 1, 8, 8) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.NeuronDeepLiftShap(model, model[6]).attribute(
            x, 4, dist, attribute_to_neuron_input=to_input)
    torch.testing.assert_close(shap.attribute(x, dist), theirs.detach(), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- custom attribution functions
def test_custom_attribution_func_gets_one_two_or_three_arguments():
    model, x, b = SmallCNN().eval(), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    dl = DeepLift(model)
    m = DeepLift(model, multiply_by_inputs=False).attribute(x, b, target=0)
    torch.testing.assert_close(dl.attribute(x, b, 0, custom_attribution_func=lambda ms: (ms[0] * 3,)), 3 * m)
    torch.testing.assert_close(dl.attribute(x, b, 0, custom_attribution_func=lambda ms, xs: (ms[0] * xs[0],)), m * x)
    three = dl.attribute(x, b, 0, custom_attribution_func=lambda ms, xs, bs: (ms[0] * (xs[0] - bs[0]),))
    torch.testing.assert_close(three, dl.attribute(x, b, 0))
    with pytest.raises(TypeError, match="custom_attribution_func"):
        dl.attribute(x, b, 0, custom_attribution_func=lambda a, b, c, d: a)


# --------------------------------------------------------------------------- DeepLiftShap
def test_deepliftshap_is_the_mean_of_deeplift_over_baselines():
    model = SmallCNN().eval()
    x, dist = torch.randn(2, 1, 8, 8), torch.randn(3, 1, 8, 8)
    attr, delta = DeepLiftShap(model).attribute(x, dist, target=1, return_convergence_delta=True)
    runs = [DeepLift(model).attribute(x, dist[i:i + 1], target=1, return_convergence_delta=True) for i in range(3)]
    torch.testing.assert_close(attr, sum(a for a, _ in runs) / 3)
    by_pair = torch.stack([d for _, d in runs], 1).reshape(-1)  # input-major, then baseline
    torch.testing.assert_close(delta, by_pair, atol=1e-5, rtol=1e-4)
    assert delta.shape == (6,)


def test_deepliftshap_takes_a_callable_and_tuple_inputs():
    model = TwoInputModel()
    x = (torch.randn(3, 4), torch.randn(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = DeepLiftShap(model).attribute(x, lambda a, c: (torch.zeros(2, 4), torch.ones(2, 4)), target=0)
    assert isinstance(attr, tuple) and [a.shape for a in attr] == [(3, 4), (3, 4)]


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_named():
    model = SmallCNN().eval()
    with pytest.raises(TypeError, match="model"):
        DeepLift(lambda x: x)
    with pytest.raises(ValueError, match="baselines"):
        DeepLift(model).attribute(torch.randn(2, 1, 8, 8), baselines=torch.randn(3, 1, 7, 7))
    with pytest.raises(ValueError, match="baselines"):
        DeepLiftShap(model).attribute(torch.randn(2, 1, 8, 8), baselines=torch.randn(3, 1, 7, 7))
    with pytest.raises(ValueError, match="target"):
        DeepLift(model).attribute(torch.randn(2, 1, 8, 8), target=7)


def test_a_nonlinearity_without_a_batch_dimension_is_named():
    class GateOnParameter(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate, self.p, self.lin = nn.Sigmoid(), nn.Parameter(torch.ones(3)), nn.Linear(3, 1)

        def forward(self, x):
            return self.lin(x * self.gate(self.p))

    with pytest.raises(ValueError, match="Sigmoid"):
        DeepLift(GateOnParameter()).attribute(torch.randn(2, 3))


# ------------------------- Captum drop-in: half precision and warnings about modules DeepLift cannot explain exactly
def test_deeplift_float16_is_finite_and_close_to_float32():
    model, x = SmallCNN().eval(), torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = DeepLift(model).attribute(x, target=0)
    got = DeepLift(model.half()).attribute(x.half(), target=0)
    assert got.dtype == torch.float16
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05 * float(expected.abs().max()))


def test_deeplift_bfloat16_is_finite():  # bf16 already works; keep it so
    model, x = SmallCNN().eval(), torch.randn(2, 1, 8, 8)
    assert torch.isfinite(DeepLift(model.bfloat16()).attribute(x.bfloat16(), target=0)).all()


def test_deeplift_adaptive_max_pool_warning_names_the_module():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(8, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DeepLift(model.eval()).attribute(torch.randn(2, 1, 6, 6), target=0)
    messages = [str(w.message) for w in caught]
    assert not any("is a function, not a module" in m for m in messages), messages


def test_deeplift_warns_on_layernorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).eval()
    with pytest.warns(UserWarning, match="LayerNorm"):
        DeepLift(model).attribute(torch.randn(2, 3), target=0)


def test_deeplift_warns_on_attention():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0].mean(1))

    with pytest.warns(UserWarning, match="MultiheadAttention|attn"):
        DeepLift(Attn().eval()).attribute(torch.randn(2, 3, 4), target=0)
