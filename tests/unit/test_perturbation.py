"""The ablation family: closed forms, loop-based reference implementations, batching, inference mode,
models that aggregate over the batch, progress bars, and bad input by name."""
import pytest
import torch
from torch import nn

from attrkit import FeatureAblation, FeaturePermutation, Occlusion
from attrkit import _plumbing as P
from attrkit import _batching as B
from attrkit.testing import MLP, LinearModel, SmallCNN, TwoInputModel

W = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]])


class Recorder(nn.Module):
    """Wraps a model; records the batch size of every call and whether it ran in inference mode."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows, self.inference = model, [], []

    def forward(self, *args):
        self.rows.append(args[0].shape[0])
        self.inference.append(torch.is_inference_mode_enabled())
        return self.model(*args)


class BatchTotal(nn.Module):
    """One number for the whole batch: the sum over the examples of a linear score."""

    def forward(self, x):
        return (x @ W[0]).sum()


# --------------------------------------------------------------------------- closed forms and references
def test_ablation_of_linear_model_is_weight_times_input_minus_baseline():
    x, base = torch.randn(5, 4), torch.randn(5, 4)
    attr = FeatureAblation(LinearModel(W)).attribute(x, base, target=1)
    torch.testing.assert_close(attr, (x - base) * W[1])


def test_grouped_ablation_gives_every_element_its_groups_drop():
    x = torch.randn(3, 4)
    attr = FeatureAblation(LinearModel(W)).attribute(x, target=0, feature_mask=torch.tensor([7, 7, 3, 7]))
    group = (x * W[0])[:, [0, 1, 3]].sum(1, keepdim=True)
    torch.testing.assert_close(attr, torch.cat([group, group, (x * W[0])[:, 2:3], group], 1))


def _ablation_by_loop(model, xs, masks, baselines, target):
    """The definition, one feature at a time."""
    reference = model(*xs)[:, target]
    out = [torch.zeros_like(x) for x in xs]
    for f in torch.unique(torch.cat([m.flatten() for m in masks])):
        ablated = [torch.where(m == f, b, x) for x, m, b in zip(xs, masks, baselines)]
        drop = reference - model(*ablated)[:, target]
        for o, m in zip(out, masks):
            o += drop.reshape(-1, *[1] * (o.dim() - 1)) * (m == f)
    return tuple(out)


def test_ablation_across_two_inputs_matches_a_loop():
    model, xs = TwoInputModel(), (torch.randn(4, 4), torch.randn(4, 4))
    masks = (torch.tensor([[0, 1, 1, 5]]), torch.tensor([[5, 2, 2, 3]]))
    baselines = (torch.randn(1, 4), torch.full((1, 4), 0.3))
    ours = FeatureAblation(model).attribute(xs, baselines, target=1, feature_mask=masks)
    with torch.no_grad():
        theirs = _ablation_by_loop(model, xs, masks, baselines, 1)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def _occlusion_by_loop(model, x, window, stride, baseline, target):
    """Every window position one by one; each element gets the mean drop of the windows covering it."""
    reference = model(x)[:, target]
    total, count = torch.zeros_like(x), torch.zeros_like(x[:1])
    starts = [range(0, max(d - w, 0) + s, s) if d > w else [0] for d, w, s in zip(x.shape[1:], window, stride)]
    for c0 in starts[0]:
        for c1 in starts[1]:
            for c2 in starts[2]:
                hit = torch.zeros_like(x[:1], dtype=torch.bool)
                hit[:, c0:c0 + window[0], c1:c1 + window[1], c2:c2 + window[2]] = True
                drop = reference - model(torch.where(hit, baseline, x))[:, target]
                total += drop.reshape(-1, 1, 1, 1) * hit
                count += hit
    return total / count


@pytest.mark.parametrize("window, stride", [((1, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)), ((1, 4, 2), (1, 3, 2)),
                                            ((1, 8, 8), (1, 1, 1)), ((1, 5, 3), (1, 4, 3))])
def test_occlusion_matches_a_loop_over_windows(window, stride):
    model, x, baseline = SmallCNN(), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    ours = Occlusion(model).attribute(x, window, stride, baseline, target=2)
    with torch.no_grad():
        reference = _occlusion_by_loop(model, x, window, stride, baseline, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_permutation_with_a_given_shuffle_is_weight_times_difference():
    x = torch.randn(6, 4)
    reverse = FeaturePermutation(LinearModel(W), perm_func=lambda x, mask: torch.where(mask, x.flip(0), x))
    torch.testing.assert_close(reverse.attribute(x, target=1), W[1] * (x - x.flip(0)))


def test_permutation_never_uses_the_identity():
    x = torch.randn(2, 4)
    for seed in range(5):
        torch.manual_seed(seed)
        attr = FeaturePermutation(LinearModel(W)).attribute(x, target=1)
        torch.testing.assert_close(attr, W[1] * (x - x.flip(0)))  # two examples: the only shuffle is a swap


# --------------------------------------------------------------------------- the shared pieces in _batching
def test_feature_ids_in_captums_order_and_spread_back():
    masks = B.format_feature_mask((torch.tensor([9, 2, 2]), torch.tensor([[5, 9, 1]])), (torch.ones(2, 3),) * 2)
    ids = B.feature_ids(masks)
    assert ids.tolist() == [2, 9, 1, 5]  # the first input's ids ascending, then the new ones of the next
    maps = B.unit_maps(masks, ids)
    assert [m.tolist() for m in maps] == [[[1, 0, 0]], [[3, 1, 2]]]
    values = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    spread = B.spread_units(values, maps, (torch.ones(2, 3),) * 2)
    assert [t.tolist() for t in spread] == [[[20, 10, 10], [2, 1, 1]], [[40, 20, 30], [4, 2, 3]]]


# --------------------------------------------------------------------------- batching
def _rows(**kwargs):
    model = Recorder(MLP())
    FeatureAblation(model).attribute(torch.randn(6, 10), target=0, **kwargs)
    return model.rows


def test_default_is_one_forward_pass_for_all_perturbations():
    assert _rows() == [6, 60]  # the unperturbed batch, then its 10 ablations of 6 rows each


def test_perturbations_per_eval_keeps_captums_meaning():
    assert _rows(perturbations_per_eval=3) == [6, 18, 18, 18, 6]


def test_memory_budget_argument_and_environment_variable(monkeypatch):
    assert _rows(max_batch_memory_mb=1e-9) == [6] * 11
    monkeypatch.setenv(B.BATCH_MEMORY_ENV, "1e-9")
    assert _rows() == [6] * 11
    assert _rows(max_batch_memory_mb=64) == [6, 60]  # the argument wins


def test_on_the_cpu_batches_keep_the_activations_small(monkeypatch):
    monkeypatch.setattr(B, "CPU_ACTIVATION_BUDGET_MB", 12 * 16 * 4 / 2**20)  # 12 rows of MLP()'s widest layer
    assert _rows() == [6] + [12] * 5
    monkeypatch.setattr(B, "CPU_MAX_ROWS", 18)
    monkeypatch.setattr(B, "CPU_ACTIVATION_BUDGET_MB", 64.0)
    assert _rows() == [6] + [18] * 3 + [6]


def test_runs_under_inference_mode_and_returns_normal_tensors():
    model = Recorder(SmallCNN())
    attr = Occlusion(model).attribute(torch.randn(2, 1, 8, 8), (1, 4, 4), 2, target=0)
    assert all(model.inference) and not attr.is_inference()
    weight = torch.ones_like(attr, requires_grad=True)
    (attr * weight).sum().backward()  # usable with autograd afterwards
    assert weight.grad is not None


def test_a_model_that_needs_autograd_inside_still_works():
    class GradientNorm(nn.Module):  # its forward takes a gradient: impossible under inference mode
        def forward(self, x):
            with torch.enable_grad():
                leaf = x.detach().requires_grad_()
                (g,) = torch.autograd.grad((leaf ** 2).sum(), leaf)
            return g.sum(1)

    x = torch.randn(3, 4)
    torch.testing.assert_close(FeatureAblation(GradientNorm()).attribute(x), 2 * x)


# --------------------------------------------------------------------------- one output for the whole batch
def test_model_that_aggregates_the_batch_gets_one_row_of_attributions():
    x = torch.randn(4, 4)
    model = Recorder(BatchTotal())
    attr = FeatureAblation(model).attribute(x)
    torch.testing.assert_close(attr, (x * W[0]).sum(0, keepdim=True))
    assert model.rows == [4] * 5  # the batch as it is, then one perturbation per forward pass
    occ = Occlusion(BatchTotal()).attribute(x, (1,))  # 1-element windows: ablation again
    torch.testing.assert_close(occ, attr)


def test_model_that_aggregates_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    x = torch.randn(3, 1, 8, 8)
    model = lambda x: SmallCNN()(x)[:, 1].sum()  # noqa: E731
    torch.testing.assert_close(Occlusion(model).attribute(x, (1, 3, 3), 2),
                               captum_attr.Occlusion(model).attribute(x, (1, 3, 3), 2), rtol=1e-5, atol=1e-5)


def test_aggregating_model_refuses_batched_perturbations_and_per_example_masks():
    x = torch.randn(4, 4)
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        FeatureAblation(BatchTotal()).attribute(x, perturbations_per_eval=2)
    with pytest.raises(ValueError, match="feature_mask"):
        FeatureAblation(BatchTotal()).attribute(x, feature_mask=torch.arange(16).reshape(4, 4))


# --------------------------------------------------------------------------- progress bar
def test_progress_bar_on_request_and_automatic_only_in_notebooks(capsys, monkeypatch):
    x = torch.randn(2, 10)
    FeatureAblation(MLP()).attribute(x, target=0, show_progress=True)
    assert "Feature Ablation attribution" in capsys.readouterr().err
    FeatureAblation(MLP()).attribute(x, target=0, perturbations_per_eval=1)
    assert capsys.readouterr().err == ""  # automatic mode, not in a notebook: silent
    monkeypatch.setattr(B, "_in_notebook", lambda: True)
    monkeypatch.setattr(B, "PROGRESS_AFTER_SECONDS", 0.0)
    FeatureAblation(MLP()).attribute(x, target=0, perturbations_per_eval=1)
    assert "Feature Ablation attribution" in capsys.readouterr().err
    FeatureAblation(MLP()).attribute(x, target=0, perturbations_per_eval=1, show_progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- bad input, by name
@pytest.mark.parametrize("kwargs, name", [
    ({"sliding_window_shapes": (1, 9, 3)}, "sliding_window_shapes"),  # larger than the 8x8 input
    ({"sliding_window_shapes": (3, 3)}, "sliding_window_shapes"),     # one size per dimension after the batch
    ({"sliding_window_shapes": (1, 3, 3), "strides": 0}, "strides"),
    ({"sliding_window_shapes": (1, 3, 3), "strides": (1, 4, 1)}, "strides"),  # would skip elements
    ({"sliding_window_shapes": (1, 3, 3), "baselines": torch.zeros(2, 8)}, "baselines"),
])
def test_occlusion_bad_input_is_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Occlusion(SmallCNN()).attribute(torch.randn(2, 1, 8, 8), target=0, **kwargs)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"feature_mask": torch.zeros(3, 4, dtype=torch.long)}, ValueError, "feature_mask"),  # batch of 2
    ({"feature_mask": torch.zeros(5, dtype=torch.long)}, ValueError, "feature_mask"),
    ({"feature_mask": torch.full((4,), 0.5)}, TypeError, "feature_mask"),  # ids must be whole numbers
    ({"baselines": torch.zeros(3)}, ValueError, "baselines"),
    ({"perturbations_per_eval": 0}, ValueError, "perturbations_per_eval"),
    ({"max_batch_memory_mb": 0}, ValueError, "max_batch_memory_mb"),
    ({"target": 5}, ValueError, "target"),
])
def test_ablation_bad_input_is_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        FeatureAblation(LinearModel(W)).attribute(torch.randn(2, 4), **{"target": 0, **kwargs})


def test_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv(B.BATCH_MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match=B.BATCH_MEMORY_ENV):
        FeatureAblation(LinearModel(W)).attribute(torch.randn(2, 4), target=0)


def test_several_outputs_per_example_without_a_target_are_each_attributed():
    x = torch.randn(3, 4)
    attr = FeatureAblation(LinearModel(W)).attribute(x)  # Captum's convention: (examples * outputs, ...)
    torch.testing.assert_close(attr.reshape(3, 2, 4), x.unsqueeze(1) * W)


def test_permutation_needs_two_examples_and_known_arguments():
    with pytest.raises(ValueError, match="inputs"):
        FeaturePermutation(LinearModel(W)).attribute(torch.randn(1, 4), target=0)
    with pytest.raises(TypeError, match="n_steps"):
        FeaturePermutation(LinearModel(W)).attribute(torch.randn(3, 4), target=0, n_steps=3)
    FeaturePermutation(LinearModel(W)).attribute(torch.randn(3, 4), target=0, baselines=0.0)  # accepted, ignored


# --------------------------------------------------------------------------- Occlusion on batch-statistics models
class NormCNN(nn.Module):
    """conv -> batch norm -> ReLU -> linear: in training mode each output depends on the whole batch."""

    def __init__(self, track_running_stats: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3)
        self.norm = nn.BatchNorm2d(3, track_running_stats=track_running_stats)
        self.fc = nn.Linear(3 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))


@pytest.mark.parametrize("model", [NormCNN().train(), NormCNN(track_running_stats=False).eval()],
                         ids=["training", "no-running-stats"])
def test_occlusion_with_batch_statistics_warns_and_runs_one_perturbation_per_pass(model):
    x = torch.randn(3, 1, 8, 8)
    recorder, training = Recorder(model), model.training
    kwargs = dict(sliding_window_shapes=(1, 3, 3), strides=2, target=1)
    with pytest.warns(UserWarning, match=r"norm` \(BatchNorm2d\).*one perturbation per pass"):
        one = Occlusion(recorder).attribute(x, **kwargs)
    assert recorder.rows == [3] * 17  # the reference, then each of the 16 windows on its own
    with pytest.warns(UserWarning, match="model.eval"):
        asked = Occlusion(model).attribute(x, perturbations_per_eval=16, **kwargs)
    torch.testing.assert_close(asked, one)  # the batch size asked for cannot change the result
    assert model.training == training and model.norm.training == training
    captum_attr = pytest.importorskip("captum.attr")
    expected = captum_attr.Occlusion(model).attribute(x, perturbations_per_eval=1, **kwargs)
    torch.testing.assert_close(one, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_in_eval_mode_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Occlusion(NormCNN().eval()).attribute(torch.randn(2, 1, 8, 8), (1, 3, 3), 2, target=0)
        Occlusion(SmallCNN().train()).attribute(torch.randn(2, 1, 8, 8), (1, 3, 3), 2, target=0)  # no batch norm
