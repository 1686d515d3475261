"""Shapley values, LIME and KernelSHAP: the Shapley axioms, the estimators against the exact values, the
surrogates against sklearn, Captum's interfaces (custom sampling, interpretable models, LimeBase), bad input."""
import pytest
import torch
from torch import nn

from attrkit import FeatureAblation, KernelShap, Lime, LimeBase, ShapleyValues, ShapleyValueSampling
from attrkit.shapley import Lasso, LinearRegression, Ridge, get_exp_kernel_similarity_function
from attrkit.testing import MLP, LinearModel, TwoInputModel
import captum.attr as C
import attrkit as A
from _helpers import X, close, seeded_linear

W = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]])


class Game(nn.Module):
    """x0 * x1 + x2, and x3 does nothing: symmetric players 0 and 1, a dummy player 3."""

    def forward(self, x):
        return x[:, 0] * x[:, 1] + x[:, 2] + 0 * x[:, 3]


# --------------------------------------------------------------------------- the axioms
def test_exact_values_of_a_small_game():
    x = torch.tensor([[2.0, 3.0, -1.0, 5.0], [1.0, -4.0, 2.0, 0.0]])
    attr = ShapleyValues(Game()).attribute(x)
    half = (x[:, 0] * x[:, 1] / 2)[:, None]
    torch.testing.assert_close(attr, torch.cat([half, half, x[:, 2:3], torch.zeros(2, 1)], 1))


@pytest.mark.parametrize("method, kwargs", [(ShapleyValues, {}), (ShapleyValueSampling, {"n_samples": 3})])
def test_efficiency_values_add_up_to_the_output_change(method, kwargs):
    model, x, base = MLP(), torch.randn(3, 10), torch.randn(3, 10)
    mask = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4, 5, 5])
    attr = method(model).attribute(x, base, target=2, feature_mask=mask, **kwargs)
    per_feature = torch.stack([attr[:, mask == f][:, 0] for f in range(6)], 1)
    with torch.no_grad():
        gain = model(x)[:, 2] - model(base)[:, 2]
    torch.testing.assert_close(per_feature.sum(1), gain, rtol=1e-5, atol=1e-5)  # every order telescopes


def test_sampling_converges_to_the_exact_values():
    model, x = MLP(n_features=5), torch.randn(2, 5)
    exact = ShapleyValues(model).attribute(x, target=0)
    torch.manual_seed(0)
    sampled = ShapleyValueSampling(model).attribute(x, target=0, n_samples=600)
    torch.testing.assert_close(sampled, exact, rtol=0, atol=0.05 * float(exact.abs().max()))


def test_kernel_shap_converges_to_the_exact_values():
    model, x, base = MLP(n_features=5), torch.randn(2, 5), torch.randn(1, 5)
    exact = ShapleyValues(model).attribute(x, base, target=1)
    torch.manual_seed(0)
    estimate = KernelShap(model).attribute(x, base, target=1, n_samples=3000)
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.05 * float(exact.abs().max()))


def test_linear_model_every_estimator_is_exact():
    x, base = torch.randn(3, 4), torch.randn(3, 4)
    expected = (x - base) * W[1]
    torch.testing.assert_close(ShapleyValues(LinearModel(W)).attribute(x, base, target=1), expected)
    torch.testing.assert_close(ShapleyValueSampling(LinearModel(W)).attribute(x, base, target=1, n_samples=2), expected)
    for method in (KernelShap(LinearModel(W)), Lime(LinearModel(W), interpretable_model=LinearRegression())):
        torch.testing.assert_close(method.attribute(x, base, target=1, n_samples=60), expected, rtol=1e-4, atol=1e-4)


def test_exact_values_refuse_too_many_features():
    with pytest.raises(ValueError, match="ShapleyValueSampling"):
        ShapleyValues(LinearModel(torch.ones(1, 21))).attribute(torch.randn(1, 21))


# --------------------------------------------------------------------------- LIME and KernelSHAP
def test_lime_shapes_and_coefficients():
    model, x = MLP(), torch.randn(3, 10)
    mask = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]])
    attr = Lime(model).attribute(x, target=1, feature_mask=mask, n_samples=50)
    coefs = Lime(model).attribute(x, target=1, feature_mask=mask, n_samples=50, return_input_shape=False)
    assert attr.shape == x.shape and coefs.shape == (3, 5)
    total = Lime(lambda x: model(x)[:, 1].sum()).attribute(x, feature_mask=mask, n_samples=50)
    assert total.shape == (1, 10)  # one surrogate for a model that aggregates the batch


def test_lime_matches_captum_on_one_example():
    """With one example Captum draws the same samples; our Lasso solves sklearn's problem."""
    captum_attr = pytest.importorskip("captum.attr")
    pytest.importorskip("sklearn")
    model, x = MLP(), torch.randn(1, 10)
    torch.manual_seed(0)
    ours = Lime(model).attribute(x, target=0, n_samples=200)
    torch.manual_seed(0)
    theirs = captum_attr.Lime(model).attribute(x, target=0, n_samples=200)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-3 * float(theirs.abs().max()))


@pytest.mark.parametrize("surrogate, name", [(LinearRegression(), "LinearRegression"), (Ridge(0.5), "Ridge"),
                                             (Lasso(0.02), "Lasso")])
@pytest.mark.parametrize("n_samples", [7, 200])  # fewer samples than features, and more
def test_surrogates_solve_sklearns_problems(surrogate, name, n_samples):
    linear_model = pytest.importorskip("sklearn.linear_model")
    torch.manual_seed(0)
    X = torch.bernoulli(torch.full((3, n_samples, 12), 0.5)).double()
    y, w = X @ torch.randn(12).double() + 0.1 * torch.randn(3, n_samples).double(), torch.rand(3, n_samples).double()
    ours = surrogate.solve(X, y, w)
    args = {"LinearRegression": {}, "Ridge": {"alpha": 0.5}, "Lasso": {"alpha": 0.02, "tol": 1e-8, "max_iter": 10**5}}
    for b in range(3):
        fit = getattr(linear_model, name)(**args[name]).fit(X[b].numpy(), y[b].numpy(), sample_weight=w[b].numpy())
        theirs = torch.as_tensor(fit.coef_)
        if name != "Lasso" or n_samples > 12:  # an underdetermined Lasso may have many minimisers
            torch.testing.assert_close(ours[b], theirs, rtol=1e-3, atol=2e-3)


def test_any_model_with_fit_and_representation_is_a_surrogate():
    captum_models = pytest.importorskip("captum._utils.models.linear_model")
    pytest.importorskip("sklearn")
    model, x = MLP(), torch.randn(2, 10)
    torch.manual_seed(0)
    ours = Lime(model, interpretable_model=LinearRegression()).attribute(x, target=0, n_samples=80)
    torch.manual_seed(0)
    sklearn_surrogate = captum_models.SkLearnLinearRegression()
    theirs = Lime(model, interpretable_model=sklearn_surrogate).attribute(x, target=0, n_samples=80)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def _every_coalition(original, **kwargs):  # a deterministic perturb_func, in Captum's generator form
    for c in range(2 ** kwargs["num_interp_features"]):
        yield torch.tensor([[(c >> f) & 1 for f in range(kwargs["num_interp_features"])]])


def _distance_weight(original, perturbed, sample, **kwargs):
    return 1.0 / (1.0 + float(sample.sum()))


def test_custom_sampling_and_similarity_match_captum():
    captum_attr = pytest.importorskip("captum.attr")
    captum_models = pytest.importorskip("captum._utils.models.linear_model")
    pytest.importorskip("sklearn")
    model, xs = TwoInputModel(), (torch.randn(3, 4), torch.randn(3, 4))
    mask = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 3, 3, 4]]))
    kwargs = {"target": torch.tensor([0, 2, 1]), "feature_mask": mask, "n_samples": 32, "baselines": (0.5, -1.0),
              "additional_forward_args": (torch.tensor([[1.0], [2.0], [3.0]]),)}
    ours = Lime(model, LinearRegression(), _distance_weight, _every_coalition).attribute(xs, **kwargs)
    theirs = captum_attr.Lime(model, captum_models.SkLearnLinearRegression(), _distance_weight,
                              _every_coalition).attribute(xs, **kwargs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_lime_base_in_model_space_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    captum_models = pytest.importorskip("captum._utils.models.linear_model")
    pytest.importorskip("sklearn")

    def shifted(original, **kwargs):  # model-space samples: the input moved along each axis
        for k in range(12):
            yield original + torch.eye(4)[k % 4] * (k // 4 + 1)

    def binary(sample, original, **kwargs):
        return (sample != original).float()

    similarity = get_exp_kernel_similarity_function("euclidean", kernel_width=2.0)
    model, x = LinearModel(W), torch.randn(1, 4)
    args = (similarity, shifted, False, None, binary)
    ours = LimeBase(model, LinearRegression(), *args).attribute(x, target=1, n_samples=12)
    theirs = captum_attr.LimeBase(model, captum_models.SkLearnLinearRegression(), *args).attribute(x, target=1,
                                                                                                  n_samples=12)
    torch.testing.assert_close(ours, theirs.reshape(ours.shape), rtol=1e-4, atol=1e-4)


def test_kernel_shap_samples_start_with_full_and_empty_coalitions():
    samples = KernelShap(LinearModel(W))._draw(2, 50, 6, "cpu")
    assert samples[:, 0].all() and not samples[:, 1].any()
    sizes = samples[:, 2:].sum(-1)
    assert sizes.min() >= 1 and sizes.max() <= 5  # the kernel never draws the ends again


# --------------------------------------------------------------------------- bad input, by name
@pytest.mark.parametrize("method", [ShapleyValueSampling, Lime, KernelShap])
def test_n_samples_must_be_positive(method):
    with pytest.raises(ValueError, match="n_samples"):
        method(LinearModel(W)).attribute(torch.randn(2, 4), target=0, n_samples=0)


@pytest.mark.parametrize("method", [ShapleyValueSampling, ShapleyValues, Lime, KernelShap])
def test_mask_and_baselines_are_checked(method):
    with pytest.raises(ValueError, match="feature_mask"):
        method(LinearModel(W)).attribute(torch.randn(2, 4), target=0, feature_mask=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="baselines"):
        method(LinearModel(W)).attribute(torch.randn(2, 4), torch.zeros(3, 4), target=0)


def test_shapley_feature_ids_must_not_be_negative():
    with pytest.raises(ValueError, match="feature_mask"):
        ShapleyValueSampling(LinearModel(W)).attribute(torch.randn(2, 4), target=0,
                                                       feature_mask=torch.tensor([-1, 0, 1, 2]))


# --------------------------------------------------------------------------- scalar outputs (Captum's own cases)
def _captum_multilayer():
    from captum.testing.helpers.basic_models import BasicModel_MultiLayer, BasicModel_MultiLayer_MultiInput

    return BasicModel_MultiLayer(), BasicModel_MultiLayer_MultiInput()


@pytest.mark.parametrize("kind", ["float", "int", "0-d", "1-d"])
def test_kernel_shap_on_scalar_outputs_is_within_captums_tolerance(kind):
    """Captum's test_kernel_shap scalar cases (delta 1.0). A (1,)-shaped output for one example used to fail
    under automatic batching; now the first batched pass shows the model does not grow with the batch."""
    net, _ = _captum_multilayer()
    as_kind = {"float": lambda t: t.item(), "int": lambda t: int(t.item()), "0-d": lambda t: t,
               "1-d": lambda t: t.reshape(1)}[kind]
    model = lambda x: as_kind(torch.sum(net(x)))  # noqa: E731
    x, mask = torch.tensor([[2.0, 10.0, 3.0]]), torch.tensor([[0, 0, 1]])
    for seed in range(5):
        torch.manual_seed(seed)
        got = KernelShap(model).attribute(x, feature_mask=mask, n_samples=100)
        torch.testing.assert_close(got, torch.tensor([[79.0, 79.0, 21.0]], dtype=got.dtype), rtol=0, atol=1.0)


def test_kernel_shap_pairs_coalitions_with_their_complements():
    """Each drawn coalition is followed by its complement (the Shapley kernel is symmetric in the size, so
    every sample keeps its distribution; the pairs cancel much of the noise: Covert & Lee, 2021). On Captum's
    three-input scalar case the error over 8 seeds is well inside Captum's tolerance of 1."""
    _, net = _captum_multilayer()
    inputs = (torch.tensor([[23.0, 100.0, 0.0], [20.0, 50.0, 30.0]]),
              torch.tensor([[20.0, 50.0, 30.0], [0.0, 100.0, 0.0]]),
              torch.tensor([[0.0, 100.0, 10.0], [20.0, 10.0, 13.0]]))
    masks = (torch.tensor([[1, 1, 1]]), torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]]))
    model = lambda *xs: torch.sum(net(*xs))  # noqa: E731
    exact = ShapleyValues(model).attribute(inputs, feature_mask=masks, additional_forward_args=(1,))[1]
    errors = []
    for seed in range(8):
        torch.manual_seed(seed)
        got = KernelShap(model).attribute(inputs, feature_mask=masks, additional_forward_args=(1,), n_samples=1500)
        errors.append((got[1] - exact).abs().max())
    assert max(errors) < 1.0
    samples = KernelShap(model)._draw(1, 12, 5, "cpu")[0, 2:]
    assert torch.equal(samples[1::2], ~samples[0::2])


def test_python_float_outputs_give_float64_attributions_as_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = lambda x: float((x * torch.tensor([1.0, 2.0, 3.0])).sum())  # noqa: E731
    x = torch.rand(1, 3)
    got = FeatureAblation(model).attribute(x)
    expected = captum_attr.FeatureAblation(model).attribute(x)
    assert got.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------- Captum's LIME tutorial
def test_from_interp_rep_transform_takes_a_number_as_baselines_as_captums_tutorial():
    captum_attr = pytest.importorskip("captum.attr")
    model = MLP(12, 3)
    image, mask = torch.rand(1, 3, 2, 2), torch.arange(4).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    sample = torch.tensor([[1, 0, 0, 1]])
    ours = Lime(model).from_interp_rep_transform(sample, image, feature_mask=mask, baselines=0)
    theirs = captum_attr.Lime(model).from_interp_rep_transform(sample, image, feature_mask=mask, baselines=0)
    torch.testing.assert_close(ours, theirs)


def test_lime_base_with_samples_that_drop_words_runs_one_sample_per_pass():
    """The tutorial's text LimeBase: absent words are removed, so every sample has its own length."""
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    bag = nn.EmbeddingBag(20, 4, mode="mean")
    head = nn.Linear(4, 2)
    model = lambda text, offsets: head(bag(text.squeeze(0), offsets))  # noqa: E731
    text, offsets = torch.tensor([[3, 5, 7, 11, 13, 2]]), torch.tensor([0])

    def kwargs():
        return dict(interpretable_model=LinearRegression(),
                    similarity_func=lambda a, b, _s, **kw: torch.tensor(1.0),
                    perturb_func=lambda t, **kw: torch.bernoulli(torch.full_like(t, 0.5, dtype=torch.float)).long(),
                    perturb_interpretable_space=True,
                    from_interp_rep_transform=lambda s, t, **kw: t[s.bool()].view(t.size(0), -1),
                    to_interp_rep_transform=None)

    torch.manual_seed(1)
    ours = LimeBase(model, **kwargs()).attribute(text, target=1, additional_forward_args=(offsets,), n_samples=60)
    from captum._utils.models.linear_model import SkLearnLinearRegression
    theirs_kwargs = {**kwargs(), "interpretable_model": SkLearnLinearRegression()}
    torch.manual_seed(1)
    theirs = captum_attr.LimeBase(model, **theirs_kwargs).attribute(text, target=1, additional_forward_args=(offsets,),
                                                                    n_samples=60)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-4, atol=1e-5)


# ---------------------- Captum drop-in: scalar outputs, several targets, broadcast masks, custom surrogates, float16
def _scalar_model(kind):
    lin = seeded_linear()

    def forward(t):
        s = lin(t)[:, 0].sum()
        return {"float": float(s), "0d": s, "1el": s.reshape(1), "int": int(s.round())}[kind]
    return forward


@pytest.mark.parametrize("kind", ["float", "0d", "1el"])
@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValues", "ShapleyValueSampling", "KernelShap", "Lime"])
def test_scalar_per_batch_output_matches_captum(name, kind):
    model = _scalar_model(kind)
    kwargs = {"n_samples": 20} if name in ("Lime", "KernelShap") else {}
    torch.manual_seed(0)
    expected = getattr(C, name)(model).attribute(X, **kwargs)
    torch.manual_seed(0)
    got = getattr(A, name)(model).attribute(X, **kwargs)
    assert got.shape == expected.shape == (1, 4)
    close(got.float(), expected.float(), tol=1e-4)


def test_int_scalar_output_feature_ablation_matches_captum():
    model = _scalar_model("int")
    expected = C.FeatureAblation(model).attribute(X)
    close(A.FeatureAblation(model).attribute(X), expected)


@pytest.mark.parametrize("name", ["ShapleyValues", "ShapleyValueSampling"])
def test_int_scalar_output_shapley_matches_captum(name):
    model = _scalar_model("int")
    torch.manual_seed(0)
    expected = getattr(C, name)(model).attribute(X)
    torch.manual_seed(0)
    close(getattr(A, name)(model).attribute(X), expected)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
def test_int_scalar_output_lime_equals_its_float_version(name):
    as_int, lin = _scalar_model("int"), seeded_linear()
    as_float = lambda t: float(int(lin(t)[:, 0].sum().round()))  # noqa: E731 - the same numbers, as floats
    torch.manual_seed(0)
    got = getattr(A, name)(as_int).attribute(X, n_samples=20)
    torch.manual_seed(0)
    expected = getattr(A, name)(as_float).attribute(X, n_samples=20)  # float64: a Python float is one
    assert got.is_floating_point()
    close(got, expected.to(got.dtype))


class _Grid(nn.Module):
    """(N, 4) -> (N, 2, 3): an output with two dimensions, so a target is a tuple."""

    def __init__(self):
        super().__init__()
        self.lin = seeded_linear(4, 6)

    def forward(self, x):
        return self.lin(x).reshape(-1, 2, 3)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
@pytest.mark.parametrize("target", [(1, 2), [(0, 1), (1, 2)]], ids=["tuple", "list-of-tuples"])
def test_lime_kernelshap_tuple_targets(name, target):
    model = _Grid()
    rows = [target, target] if isinstance(target, tuple) else target
    # the closed form of a linear model: weight of the selected output times (x - 0)
    w = model.lin.weight.detach().reshape(2, 3, 4)
    expected = torch.stack([X[i] * w[r] for i, r in enumerate(rows)])
    kwargs = {"interpretable_model": LinearRegression()} if name == "Lime" else {}
    torch.manual_seed(0)
    got = getattr(A, name)(model, **kwargs).attribute(X, target=target, n_samples=40)
    close(got, expected, tol=1e-4)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
@pytest.mark.parametrize("target", [torch.tensor([0, 2]), [0, 2]], ids=["tensor", "list"])
def test_lime_kernelshap_one_target_per_example(name, target):
    model = seeded_linear()
    expected = torch.stack([X[0] * model.weight[0].detach(), X[1] * model.weight[2].detach()])
    kwargs = {"interpretable_model": LinearRegression()} if name == "Lime" else {}
    torch.manual_seed(0)
    got = getattr(A, name)(model, **kwargs).attribute(X, target=target, n_samples=40)
    close(got, expected, tol=1e-4)


def _rgb_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2, 3)).eval()


_GRID = torch.arange(4).reshape(2, 2).repeat_interleave(2, 0).repeat_interleave(2, 1)  # four 2x2 superpixels


@pytest.mark.parametrize("method", [Lime, KernelShap])
@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (1, 4, 4), (4, 4), (2, 1, 4, 4)],
                         ids=["1x1xHxW", "1xHxW", "HxW", "Nx1xHxW"])
def test_lime_kernelshap_accept_channel_broadcast_masks(method, shape):
    model, x = _rgb_cnn(), torch.rand(2, 3, 4, 4)
    full = _GRID.expand(2, 3, 4, 4)
    torch.manual_seed(1)
    expected = method(model).attribute(x, target=0, feature_mask=full, n_samples=30)
    torch.manual_seed(1)  # the draws depend only on the number of features: the same seed, the same samples
    mask = _GRID.expand(*shape) if shape[0] == 2 else _GRID.reshape(shape)
    got = method(model).attribute(x, target=0, feature_mask=mask, n_samples=30)
    close(got, expected)


@pytest.mark.parametrize("method", [FeatureAblation, ShapleyValueSampling])
def test_ablation_and_shapley_accept_the_same_masks(method):  # the reference behaviour defect 1 asks for
    model, x = _rgb_cnn(), torch.rand(2, 3, 4, 4)
    torch.manual_seed(0)
    expected = method(model).attribute(x, target=0, feature_mask=_GRID.expand(2, 3, 4, 4))
    for mask in (_GRID.reshape(1, 1, 4, 4), _GRID.reshape(1, 4, 4), _GRID, _GRID.expand(2, 1, 4, 4)):
        torch.manual_seed(0)
        close(method(model).attribute(x, target=0, feature_mask=mask), expected)


def test_lime_custom_similarity_func():
    model, x = seeded_linear(4, 2), torch.rand(2, 4)
    lime = Lime(model, interpretable_model=LinearRegression(), similarity_func=lambda o, p, i, **kw: 1.0)
    torch.manual_seed(0)
    got = lime.attribute(x, target=1, n_samples=40)
    close(got, x * model.weight[1].detach(), tol=1e-4)  # a linear model: weight times (x - 0)


class _CaptumStyleModel:
    """Captum's interpretable ``Model`` interface: ``fit(DataLoader)`` and ``representation()``."""

    def fit(self, train_data, **kwargs):
        X, y, w = (torch.cat(p) for p in zip(*train_data))
        X1 = torch.cat([X.double(), torch.ones(len(X), 1, dtype=torch.float64)], 1)
        root = w.double().sqrt().unsqueeze(1)
        self.coef = torch.linalg.lstsq(root * X1, root * y.double().reshape(-1, 1)).solution[:-1, 0]
        return {}

    def representation(self):
        return self.coef.reshape(1, -1)


class _SklearnStyleModel:
    """A scikit-learn-style estimator: ``fit(X, y, sample_weight)`` and ``coef_``."""

    def fit(self, X, y, sample_weight=None):
        X, y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
        w = torch.ones(len(y), dtype=torch.float64) if sample_weight is None else \
            torch.as_tensor(sample_weight, dtype=torch.float64)
        X1 = torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], 1)
        root = w.sqrt().unsqueeze(1)
        self.coef_ = torch.linalg.lstsq(root * X1, root * y.reshape(-1, 1)).solution[:-1, 0].numpy()
        return self


def test_lime_with_a_captum_style_interpretable_model():
    model, x = seeded_linear(4, 2), torch.rand(2, 4)
    torch.manual_seed(0)
    got = Lime(model, interpretable_model=_CaptumStyleModel()).attribute(x, target=1, n_samples=40)
    close(got, x * model.weight[1].detach(), tol=1e-4)


def test_lime_with_a_sklearn_style_estimator():
    model, x = seeded_linear(4, 2), torch.rand(2, 4)
    torch.manual_seed(0)
    got = Lime(model, interpretable_model=_SklearnStyleModel()).attribute(x, target=1, n_samples=40)
    close(got, x * model.weight[1].detach(), tol=1e-4)


def _captum_sample(original_inp, **kwargs):
    return torch.bernoulli(torch.full((1, original_inp.shape[1]), 0.5))


def _identity_interp(curr_sample, original_inp, **kwargs):
    return curr_sample


def test_limebase_with_a_captum_style_interpretable_model():
    model, x = seeded_linear(4, 2), torch.rand(1, 4)
    lime = LimeBase(model, _CaptumStyleModel(), lambda o, p, i, **kw: 1.0, _captum_sample, True,
                    lambda s, o, **kw: s * o, None)
    torch.manual_seed(0)
    got = lime.attribute(x, target=1, n_samples=40)
    close(got, x * model.weight[1].detach(), tol=1e-4)


def test_kernel_shap_float16_on_a_linear_model():
    model, x = seeded_linear(4, 2), torch.rand(2, 4)
    torch.manual_seed(0)
    got = KernelShap(model.half()).attribute(x.half(), target=1, n_samples=60)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), (x.half().float() * model.weight[1].detach().float()),
                               rtol=2e-2, atol=2e-2)


def test_surrogate_counts_an_infinite_weight_as_a_hard_constraint():
    # KernelShap's 1e6 weight overflows float16 to inf; the fit treats inf as 1e6 x the largest finite weight
    g = torch.Generator().manual_seed(0)
    X, y = torch.rand(1, 12, 3, generator=g), torch.rand(1, 12, generator=g)
    w = torch.ones(1, 12)
    w[0, :2] = float("inf")
    big = w.clone()
    big[0, :2] = 1e6
    got = LinearRegression().solve(X, y, w)
    assert torch.isfinite(got).all()
    close(got, LinearRegression().solve(X, y, big))


def test_lime_float16_on_a_linear_model():
    model, x = seeded_linear(4, 2), torch.rand(2, 4)
    torch.manual_seed(0)
    got = Lime(model.half(), interpretable_model=LinearRegression()).attribute(x.half(), target=1, n_samples=60)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), x.half().float() * model.weight[1].detach().float(),
                               rtol=2e-2, atol=2e-2)
