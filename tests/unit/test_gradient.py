"""The gradient family: axioms with closed-form answers, and bad input by name."""
import pytest
import torch

import attrkit
from attrkit import GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from attrkit.testing import MLP, LinearModel, SmallCNN, ToyModel, TwoInputModel
from torch import nn
import captum.attr as C
import attrkit as A
from _helpers import NOARG, X, bytes_model_and_images, close, seeded_linear, seeded_mlp

W = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]])
B = torch.tensor([0.3, -0.7])


@pytest.fixture
def linear():
    return LinearModel(W, B)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_ig_on_linear_model_is_input_minus_baseline_times_weight(linear, method):
    x, base = torch.randn(5, 4), torch.randn(5, 4)
    attr = IntegratedGradients(linear).attribute(x, base, target=1, n_steps=7, method=method)
    torch.testing.assert_close(attr, (x - base) * W[1], rtol=1e-5, atol=1e-6)


def test_saliency_of_linear_model_is_abs_weight(linear):
    x = torch.randn(3, 4)
    torch.testing.assert_close(Saliency(linear).attribute(x, target=0), W[0].abs().expand(3, 4))
    torch.testing.assert_close(Saliency(linear).attribute(x, target=0, abs=False), W[0].expand(3, 4))


def test_input_x_gradient_of_linear_model(linear):
    x = torch.randn(3, 4)
    torch.testing.assert_close(InputXGradient(linear).attribute(x, target=1), x * W[1])


def test_gradient_shap_on_linear_model_is_exact_in_expectation(linear):
    torch.manual_seed(0)
    x, dist = torch.randn(2, 4), torch.randn(50, 4)
    attr = GradientShap(linear).attribute(x, dist, n_samples=4000, target=0)
    torch.testing.assert_close(attr, (x - dist.mean(0)) * W[0], rtol=0.05, atol=0.05)


def test_ig_completeness_on_smooth_model_with_enough_steps():
    model = MLP(act=torch.nn.Tanh)
    x, base = torch.randn(4, 10), torch.randn(4, 10)
    _, delta = IntegratedGradients(model).attribute(x, base, target=2, n_steps=64, return_convergence_delta=True)
    assert delta.shape == (4,) and delta.abs().max() < 1e-3


def test_ig_delta_shrinks_with_more_steps():
    model = MLP(act=torch.nn.Tanh)
    x = torch.randn(3, 10) * 3
    ig = IntegratedGradients(model)
    errors = [ig.attribute(x, target=0, n_steps=n, method="riemann_left", return_convergence_delta=True)[1]
              .abs().max().item() for n in (2, 8, 64)]
    assert errors[0] > errors[1] > errors[2]


def test_ig_symmetry_equal_features_get_equal_attribution():
    # f(x) = relu(x0 + x1): x0 and x1 are symmetric, with equal inputs they must share credit equally
    model = LinearModel(torch.tensor([[1.0, 1.0, 0.0]]))
    f = lambda x: torch.relu(model(x))
    attr = IntegratedGradients(f).attribute(torch.tensor([[2.0, 2.0, 5.0]]), target=0)
    assert attr[0, 0] == pytest.approx(attr[0, 1].item()) and attr[0, 2] == 0  # dead feature gets zero


def test_trapezoid_weights_sum_to_one_unlike_captum():
    """Captum's riemann_trapezoid weights sum to (n-1)/n; ours integrate constants exactly."""
    from captum.attr import IntegratedGradients as CaptumIG

    model, x = ToyModel(), torch.rand(2, 3)
    ours = IntegratedGradients(model).attribute(x, target=0, n_steps=10, method="riemann_trapezoid")
    theirs = CaptumIG(model).attribute(x, target=0, n_steps=10, method="riemann_trapezoid")
    torch.testing.assert_close(ours, theirs * 10 / 9, rtol=1e-5, atol=1e-6)


def test_tuple_inputs_and_additional_args():
    model = TwoInputModel()
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    attrs, delta = IntegratedGradients(model).attribute(
        (a, b), target=1, additional_forward_args=(2.0,), n_steps=100, return_convergence_delta=True)
    assert isinstance(attrs, tuple) and len(attrs) == 2 and delta.abs().max() < 1e-2


def test_targets_in_every_form_agree():
    model, x = SmallCNN(), torch.randn(3, 1, 8, 8)
    sal = Saliency(model)
    per_example = sal.attribute(x, target=torch.tensor([1, 1, 1]))
    for target in (1, (1,), [1, 1, 1], torch.tensor(1), torch.tensor([1, 1, 1])):
        torch.testing.assert_close(sal.attribute(x, target=target), per_example)


def test_target_tuple_indexes_multidimensional_output():
    model = lambda x: x.reshape(x.shape[0], 2, 3) ** 2
    x = torch.randn(2, 6)
    attr = Saliency(model).attribute(x, target=(1, 2), abs=False)
    expected = torch.zeros_like(x)
    expected[:, 5] = 2 * x[:, 5]
    torch.testing.assert_close(attr, expected)
    attr = Saliency(model).attribute(x, target=[(0, 0), (1, 1)], abs=False)
    assert attr[0, 0] == 2 * x[0, 0] and attr[1, 4] == 2 * x[1, 4]


def test_inputs_and_their_flags_untouched():
    x = torch.randn(2, 3)
    IntegratedGradients(ToyModel()).attribute(x, target=0)
    assert not x.requires_grad and x.grad is None
    y = torch.randn(2, 3, requires_grad=True)
    Saliency(ToyModel()).attribute(y, target=0)
    assert y.requires_grad and y.grad is None


def test_works_under_no_grad():
    with torch.no_grad():
        attr = IntegratedGradients(ToyModel()).attribute(torch.rand(2, 3), target=0)
    assert attr.abs().sum() > 0


def test_convergence_delta_flags_and_multiplies_by_inputs():
    m = ToyModel()
    assert IntegratedGradients(m).has_convergence_delta() and IntegratedGradients(m).multiplies_by_inputs
    assert not IntegratedGradients(m, multiply_by_inputs=False).multiplies_by_inputs
    assert not Saliency(m).has_convergence_delta() and not Saliency(m).multiplies_by_inputs
    assert InputXGradient(m).multiplies_by_inputs and GradientShap(m).has_convergence_delta()
    assert NoiseTunnel(IntegratedGradients(m)).has_convergence_delta()
    assert not NoiseTunnel(Saliency(m)).has_convergence_delta()


def test_noise_tunnel_with_zero_noise_is_the_method_itself():
    m, x = ToyModel(), torch.rand(3, 3)
    ig = IntegratedGradients(m)
    out, delta = NoiseTunnel(ig).attribute(x, nt_samples=3, stdevs=0.0, target=0, return_convergence_delta=True)
    torch.testing.assert_close(out, ig.attribute(x, target=0))
    assert delta.shape == (9,)
    var = NoiseTunnel(ig).attribute(x, nt_type="vargrad", nt_samples=3, stdevs=0.0, target=0)
    assert var.abs().max() < 1e-5


def test_noise_tunnel_is_reproducible_with_a_seed():
    m, x = SmallCNN(), torch.randn(2, 1, 8, 8)
    nt = NoiseTunnel(Saliency(m))
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(nt.attribute(x, nt_samples=5, stdevs=0.1, target=0))
    torch.testing.assert_close(*runs)


# ------------------------------------------------------------------ bad input, by name
def _raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_bad_target():
    ig = IntegratedGradients(ToyModel())
    x = torch.rand(2, 3)
    _raises(ValueError, "`target`.*outside", ig.attribute, x, target=5)
    _raises(ValueError, "`target`.*outside", ig.attribute, x, target=[0, 7])
    _raises(ValueError, "`target`.*one index per example", ig.attribute, x, target=torch.tensor([0, 1, 0]))
    _raises(ValueError, "`target`", ig.attribute, x)  # two outputs, no target
    _raises(TypeError, "`target`", ig.attribute, x, target=0.5)
    _raises(ValueError, "`target`.*indexes", ig.attribute, x, target=(0, 1))


def test_bad_baselines():
    ig = IntegratedGradients(ToyModel())
    x = torch.rand(2, 3)
    _raises(ValueError, "`baselines`.*broadcast", ig.attribute, x, baselines=torch.zeros(2, 4), target=0)
    _raises(ValueError, "`baselines`.*broadcast", ig.attribute, x, baselines=torch.zeros(3, 3), target=0)
    _raises(ValueError, "`baselines`.*entries", ig.attribute, x, baselines=(0.0, 0.0), target=0)
    _raises(TypeError, "`baselines`", ig.attribute, x, baselines="zeros", target=0)
    _raises(ValueError, "`baselines`", GradientShap(ToyModel()).attribute, x, baselines=torch.zeros(5, 4), target=0)


def test_bad_steps_methods_and_types():
    ig = IntegratedGradients(ToyModel())
    x = torch.rand(2, 3)
    _raises(ValueError, "`n_steps`", ig.attribute, x, target=0, n_steps=0)
    _raises(ValueError, "`method`", ig.attribute, x, target=0, method="simpson")
    _raises(ValueError, "`internal_batch_size`", ig.attribute, x, target=0, internal_batch_size=0)
    _raises(ValueError, "`nt_type`", NoiseTunnel(ig).attribute, x, nt_type="smooth", target=0)
    _raises(ValueError, "`nt_samples`", NoiseTunnel(ig).attribute, x, nt_samples=0, target=0)
    _raises(ValueError, "`stdevs`", NoiseTunnel(ig).attribute, x, stdevs=(0.1, 0.2), target=0)
    _raises(ValueError, "return_convergence_delta", NoiseTunnel(Saliency(ToyModel())).attribute, x, target=0,
            return_convergence_delta=True)
    _raises(ValueError, "`n_samples`", GradientShap(ToyModel()).attribute, x, torch.zeros(3, 3), n_samples=0)
    _raises(TypeError, "`inputs`", ig.attribute, [[1.0, 2.0, 3.0]], target=0)
    _raises(TypeError, "`forward_func`", IntegratedGradients, "model")
    _raises(TypeError, "`attribution_method`", NoiseTunnel, ToyModel())


def test_model_output_that_target_cannot_index():
    scalar_model = lambda x: x.sum()
    _raises(ValueError, "`target`", Saliency(scalar_model).attribute, torch.rand(2, 3), target=0)


def test_public_names_match_captum():
    import captum.attr

    for name in ["Saliency", "InputXGradient", "IntegratedGradients", "GradientShap", "NoiseTunnel",
                 "Attribution", "GradientAttribution", "LayerAttribution", "NeuronAttribution",
                 "PerturbationAttribution"]:
        assert hasattr(attrkit, name) and hasattr(captum.attr, name)


def test_train_mode_warning_names_the_module_once_per_call():
    import warnings

    from attrkit import GradientShap, LayerIntegratedGradients
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2)).train()
    x = torch.rand(3, 4)
    for method, kwargs in ((GradientShap(model), {"baselines": torch.zeros(2, 4)}),  # built on two methods
                           (LayerIntegratedGradients(model, model[0]), {"n_steps": 4})):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method.attribute(x, target=0, **kwargs)
        train = [str(w.message) for w in caught if "training mode" in str(w.message)]
        assert len(train) == 1 and "`1` (Dropout)" in train[0] and type(method).__name__ in train[0]
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GradientShap(model).attribute(x, baselines=torch.zeros(2, 4), target=0)


# --------------------------------------------------------------------------- steps split to a memory budget
class _CountsRows(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.model(x)


@pytest.mark.parametrize("method", ["IntegratedGradients", "LayerIntegratedGradients", "LayerConductance",
                                    "InternalInfluence"])
def test_path_steps_split_to_the_memory_budget_give_the_same_result(method, monkeypatch):
    torch.manual_seed(0)
    model = _CountsRows(SmallCNN().eval())
    x = torch.rand(3, 1, 8, 8)
    make = (lambda: getattr(attrkit, method)(model)) if method == "IntegratedGradients" else \
        (lambda: getattr(attrkit, method)(model, model.model.conv2))
    monkeypatch.setenv("ATTRKIT_GRADIENT_MEMORY_MB", "100000")
    whole = make().attribute(x, target=1, n_steps=20)
    assert max(model.rows) >= 3 * 19  # one pass after the measuring step
    model.rows.clear()
    monkeypatch.setenv("ATTRKIT_GRADIENT_MEMORY_MB", "0.0001")  # less than one step: one step per pass
    split = make().attribute(x, target=1, n_steps=20)
    assert set(model.rows) == {3}
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)


def test_ig_with_many_steps_and_no_internal_batch_size_matches_captum_in_several_passes(monkeypatch):
    C = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = _CountsRows(SmallCNN().eval())
    x = torch.rand(2, 1, 8, 8)
    expected = C.IntegratedGradients(model).attribute(x, target=0, n_steps=200)
    model.rows.clear()
    monkeypatch.setenv("ATTRKIT_GRADIENT_MEMORY_MB", "0.5")
    got = IntegratedGradients(model).attribute(x, target=0, n_steps=200)
    assert len(model.rows) > 2 and max(model.rows) < 2 * 200
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

# --------------------------------------------------------------------------- n_steps="auto"
def _steep(x):
    """A sigmoid step 200 times steeper than the path is long: 50 Gauss-Legendre points miss it."""
    return torch.sigmoid(200 * (x - 0.37)).sum(1, keepdim=True)


def test_auto_steps_converge_where_the_default_does_not():
    x, base = torch.tensor([[1.0, 0.8]]), torch.zeros(1, 2)
    ig = IntegratedGradients(_steep)
    gain = (_steep(x) - _steep(base)).squeeze(1)
    _, fixed = ig.attribute(x, base, target=0, return_convergence_delta=True)
    assert ig.last_n_steps == 50 and (fixed.abs() > 0.05 * gain.abs()).any()
    attr, delta = ig.attribute(x, base, target=0, n_steps="auto", return_convergence_delta=True)
    assert ig.last_n_steps > 50 and ig.last_n_steps <= ig.auto_max_steps
    assert (delta.abs() <= 0.05 * gain.abs()).all()
    torch.testing.assert_close(delta, ig.last_delta)
    torch.testing.assert_close(attr.sum(1) - gain, delta, atol=1e-5, rtol=0)


def test_auto_steps_stop_at_the_start_when_converged_and_match_fixed_steps():
    model = MLP(act=torch.nn.Tanh)
    x = torch.randn(3, 10)
    ig = IntegratedGradients(model)
    auto = ig.attribute(x, target=1, n_steps="auto")
    assert ig.last_n_steps == ig.auto_start_steps == 32
    torch.testing.assert_close(auto, ig.attribute(x, target=1, n_steps=32))


def test_auto_steps_warn_at_the_cap_and_honour_instance_settings():
    ig = IntegratedGradients(_steep)
    ig.auto_start_steps, ig.auto_max_steps = 4, 8
    with pytest.warns(UserWarning, match="not converged"):
        ig.attribute(torch.tensor([[1.0, 0.8]]), target=0, n_steps="auto")
    assert ig.last_n_steps == 8
    ig.auto_rtol = 10.0  # a loose tolerance: the first step count is enough
    ig.attribute(torch.tensor([[1.0, 0.8]]), target=0, n_steps="auto")
    assert ig.last_n_steps == 4


def test_auto_steps_bad_values():
    ig = IntegratedGradients(ToyModel())
    _raises(ValueError, "`n_steps`", ig.attribute, torch.rand(2, 3), target=0, n_steps="many")
    _raises(ValueError, "multiply_by_inputs", IntegratedGradients(ToyModel(), multiply_by_inputs=False).attribute,
            torch.rand(2, 3), target=0, n_steps="auto")


# ----------------------------------------------------------------------- Captum drop-in: the calls Captum users make
@pytest.mark.parametrize("n_steps", [5, 10])
def test_trapezoid_weights_sum_to_one_so_results_are_captums_times_n_over_n_minus_1(n_steps):
    model = seeded_mlp()
    kwargs = dict(target=1, n_steps=n_steps, method="riemann_trapezoid")
    ratio = n_steps / (n_steps - 1)
    close(A.IntegratedGradients(model).attribute(X, **kwargs),
           C.IntegratedGradients(model).attribute(X, **kwargs) * ratio)
    # NeuronConductance's default method is the trapezoid rule in both libraries
    close(A.NeuronConductance(model, model[0]).attribute(X, 2, target=1, n_steps=n_steps),
           C.NeuronConductance(model, model[0]).attribute(X, 2, target=1, n_steps=n_steps) * ratio)


@pytest.mark.parametrize("with_inputs", [NOARG, pytest.param(True, id="inputs-arg")])
@pytest.mark.parametrize("name", ["GradientShap", "DeepLiftShap"])
def test_baselines_as_a_function(name, with_inputs):
    model, base = seeded_mlp(), torch.rand(3, 4, generator=torch.Generator().manual_seed(5))
    fn = (lambda inputs: base) if with_inputs else (lambda: base)
    kwargs = {"n_samples": 6} if name == "GradientShap" else {}
    torch.manual_seed(0)
    expected = getattr(A, name)(model).attribute(X, baselines=base, target=1, **kwargs)
    torch.manual_seed(0)
    got = getattr(A, name)(model).attribute(X, baselines=fn, target=1, **kwargs)
    close(got, expected)
    if name == "DeepLiftShap":
        close(got, C.DeepLiftShap(model).attribute(X, baselines=fn, target=1))


def test_integrated_gradients_uint8_matches_captum():
    model, x = bytes_model_and_images()
    expected = C.IntegratedGradients(model).attribute(x, target=1, n_steps=20)
    close(IntegratedGradients(model).attribute(x, target=1, n_steps=20), expected.float())


def test_gradient_shap_uint8_equals_float_input():
    model, x = bytes_model_and_images()
    base = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    torch.manual_seed(2)
    got = GradientShap(model).attribute(x, base, target=1, n_samples=8)
    torch.manual_seed(2)
    expected = GradientShap(model).attribute(x.float(), base.float(), target=1, n_samples=8)
    close(got.float(), expected)


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients])
def test_empty_batch_gradient_methods_give_a_clear_error(method):
    with pytest.raises(ValueError, match="inputs"):
        method(seeded_linear(4, 2)).attribute(torch.zeros(0, 4), target=0)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(4), nn.Dropout(0.5)], ids=["batchnorm", "dropout"])
def test_train_mode_with_batchnorm_or_dropout_warns(layer):
    model = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2)).train()
    with pytest.warns(UserWarning, match="train"):
        Saliency(model).attribute(torch.rand(3, 4), target=0)
