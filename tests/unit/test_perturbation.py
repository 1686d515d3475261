"""The ablation family: closed forms, loop-based reference implementations, batching, inference mode,
models that aggregate over the batch, progress bars, and bad input by name."""
import re
import warnings

import pytest
import torch
from torch import nn

from attrkit import FeatureAblation, FeaturePermutation, Occlusion
from attrkit import _plumbing as P
from attrkit import _batching as B
from attrkit.testing import MLP, LinearModel, SmallCNN, TwoInputModel
import threading
import captum.attr as C
import attrkit as A
from _helpers import X, close, seeded_linear, seeded_mlp

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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one = Occlusion(recorder).attribute(x, **kwargs)
    ours = [str(w.message) for w in caught if "model.eval" in str(w.message)]
    assert len(ours) == 1, ours  # one warning, not the generic training-mode one as well
    message = ours[0]
    assert re.search(r"norm` \(BatchNorm2d\).*one perturbation per pass.*model.eval", message)
    assert ("change from call to call" in message) == training  # the training-mode part, only when training
    assert recorder.rows == [3] * 17  # the reference, then each of the 16 windows on its own
    with pytest.warns(UserWarning, match="model.eval"):
        asked = Occlusion(model).attribute(x, perturbations_per_eval=16, **kwargs)
    torch.testing.assert_close(asked, one)  # the batch size asked for cannot change the result
    assert model.training == training and model.norm.training == training
    captum_attr = pytest.importorskip("captum.attr")
    expected = captum_attr.Occlusion(model).attribute(x, perturbations_per_eval=1, **kwargs)
    torch.testing.assert_close(one, expected, rtol=1e-5, atol=1e-6)


def test_occlusion_in_eval_mode_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Occlusion(NormCNN().eval()).attribute(torch.randn(2, 1, 8, 8), (1, 3, 3), 2, target=0)
        Occlusion(SmallCNN().train()).attribute(torch.randn(2, 1, 8, 8), (1, 3, 3), 2, target=0)  # no batch norm


# ------------------------- Captum drop-in: futures, several outputs, feature groups, integer inputs, progress labels
def _future_of(model):
    def forward(*inputs):
        future = torch.futures.Future()
        future.set_result(model(*inputs))
        return future
    return forward


@pytest.mark.parametrize("name", ["FeatureAblation", "FeaturePermutation", "ShapleyValueSampling", "ShapleyValues"])
def test_attribute_future_matches_captum(name):
    model = seeded_mlp()
    torch.manual_seed(0)
    expected = getattr(C, name)(_future_of(model)).attribute_future(X, target=1).wait()
    torch.manual_seed(0)
    future = getattr(A, name)(_future_of(model)).attribute_future(X, target=1)
    assert isinstance(future, torch.futures.Future)
    close(future.wait(), expected)


@pytest.mark.parametrize("name", ["Occlusion", "Lime", "KernelShap", "Saliency", "IntegratedGradients", "DeepLift",
                                  "GradientShap", "InputXGradient", "GuidedBackprop", "LRP", "NoiseTunnel"])
def test_attribute_future_not_implemented_where_captum_has_none(name):
    model = seeded_mlp()
    method = A.NoiseTunnel(A.Saliency(model)) if name == "NoiseTunnel" else getattr(A, name)(model)
    with pytest.raises(NotImplementedError, match=name):
        method.attribute_future()
    with pytest.raises(NotImplementedError, match=name):
        method.attribute_future(X, target=0)


def test_occlusion_one_int_window_and_stride_for_several_inputs():
    lin = seeded_linear()
    model = lambda a, b: lin(a) + 2 * lin(b)  # noqa: E731
    inputs = (X, X.flip(1))
    expected = C.Occlusion(model).attribute(inputs, sliding_window_shapes=((2,), (2,)), strides=((1,), (1,)),
                                            target=0)
    got = A.Occlusion(model).attribute(inputs, sliding_window_shapes=2, strides=1, target=0)
    for g, e in zip(got, expected):
        close(g, e)


def test_occlusion_window_tuple_per_input_matches_captum():  # the spelled-out form works today
    lin = seeded_linear()
    model = lambda a, b: lin(a) + 2 * lin(b)  # noqa: E731
    inputs = (X, X.flip(1))
    expected = C.Occlusion(model).attribute(inputs, sliding_window_shapes=((2,), (2,)), strides=((1,), (1,)),
                                            target=0)
    got = A.Occlusion(model).attribute(inputs, sliding_window_shapes=((2,), (2,)), strides=((1,), (1,)), target=0)
    for g, e in zip(got, expected):
        close(g, e)


@pytest.mark.parametrize("name,kwargs", [("FeatureAblation", {}), ("Occlusion", {"sliding_window_shapes": (1,)})])
def test_integer_inputs_with_float_baselines(name, kwargs):
    lin = seeded_linear()
    model = lambda t: lin(t.float())  # noqa: E731
    x = torch.randint(0, 5, (2, 4), generator=torch.Generator().manual_seed(0))
    expected = getattr(C, name)(model).attribute(x, baselines=0.5, target=0, **kwargs)
    got = getattr(A, name)(model).attribute(x, baselines=0.5, target=0, **kwargs)
    close(got, (x - 0.5) * lin.weight[0].detach())  # linear: weight times (x - baseline)
    close(got, expected)


def test_feature_ablation_sparse_feature_ids_match_captum():
    model = seeded_mlp()
    mask = torch.tensor([[0, 0, 5, 2]])  # ids 1, 3 and 4 name no element
    expected = C.FeatureAblation(model).attribute(X, target=1, feature_mask=mask)
    close(A.FeatureAblation(model).attribute(X, target=1, feature_mask=mask), expected)


def test_feature_ablation_empty_input_tensor_in_a_tuple():
    lin = seeded_linear()
    model = lambda a, b: lin(a) + b.sum(1, keepdim=True)  # noqa: E731
    inputs = (X, torch.zeros(2, 0))
    expected = C.FeatureAblation(model).attribute(inputs, target=0)
    got = A.FeatureAblation(model).attribute(inputs, target=0)
    assert got[1].shape == (2, 0)
    close(got[0], expected[0])


@pytest.mark.parametrize("name,label,kwargs", [
    ("FeatureAblation", "Feature Ablation attribution", {}),
    ("Occlusion", "Occlusion attribution", {"sliding_window_shapes": (1,)}),
    ("ShapleyValueSampling", "Shapley Value Sampling attribution", {"n_samples": 2}),
    ("KernelShap", "Kernel Shap attribution", {"n_samples": 8}),
])
def test_show_progress_label_like_captum(name, label, kwargs, capsys):
    getattr(A, name)(seeded_mlp()).attribute(X, target=0, show_progress=True, **kwargs)
    err = capsys.readouterr().err
    assert f"{label}: 100%" in err, err[-300:]


def test_captum_progress_label_for_reference(capsys):
    C.FeatureAblation(seeded_mlp()).attribute(X, target=0, show_progress=True)
    assert "Feature Ablation attribution: 100%" in capsys.readouterr().err


def test_empty_batch_feature_ablation_gives_an_empty_result_like_captum():
    model = seeded_linear(4, 2)
    expected = C.FeatureAblation(model).attribute(torch.zeros(0, 4), target=0)
    got = FeatureAblation(model).attribute(torch.zeros(0, 4), target=0)
    assert got.shape == expected.shape == (0, 4)


def test_runtime_error_in_first_perturbation_pass_propagates_at_once():
    calls = []

    def forward(x):
        calls.append(len(x))
        raise RuntimeError("model is broken")

    with pytest.raises(RuntimeError, match="model is broken"):
        FeatureAblation(forward).attribute(torch.rand(2, 4), target=0)
    assert len(calls) == 1


class SlowRemote:
    """A forward that returns a Future completed by another thread once no new pass has been started for
    ``quiet`` seconds; ``peak`` is how many passes were running at once (no timing is asserted: a method that
    waits for each pass in turn sees 1, one that starts them all first sees every pass)."""

    def __init__(self, model, quiet=1.0):
        self.model, self.quiet, self.pending, self.peak = model, quiet, [], 0
        self.changed = threading.Condition()
        self.worker = threading.Thread(target=self._complete, daemon=True)
        self.stopped = False
        self.worker.start()

    def __call__(self, x):
        future = torch.futures.Future()
        with self.changed:
            self.pending.append((future, x))
            self.peak = max(self.peak, len(self.pending))
            self.changed.notify()
        return future

    def _complete(self):
        with self.changed:
            while not self.stopped:
                if not self.changed.wait(self.quiet) and self.pending:  # quiet: finish what is running
                    for future, x in self.pending:
                        try:
                            future.set_result(self.model(x))
                        except Exception as error:  # the caller's wait() raises it
                            future.set_exception(error)
                    self.pending = []

    def stop(self):
        with self.changed:
            self.stopped = True
            self.changed.notify()


@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValueSampling"])
def test_attribute_future_starts_every_pass_before_waiting(name):
    model = seeded_mlp()
    remote = SlowRemote(model)
    try:
        kwargs = {"n_samples": 1} if name == "ShapleyValueSampling" else {}
        torch.manual_seed(0)
        got = getattr(A, name)(remote).attribute_future(X, target=1, perturbations_per_eval=1, **kwargs).wait()
    finally:
        remote.stop()
    assert remote.peak == 4  # the four features' passes ran side by side (the reference pass sizes them first)
    torch.manual_seed(0)
    close(got, getattr(A, name)(model).attribute(X, target=1, perturbations_per_eval=1, **kwargs))


def test_plain_attribute_refuses_a_future_returning_model():
    def forward(x):
        future = torch.futures.Future()
        future.set_result(x.sum(1))
        return future

    with pytest.raises(TypeError, match="attribute_future"):
        A.FeatureAblation(forward).attribute(X)


@pytest.mark.parametrize("name", ["FeatureAblation", "FeaturePermutation", "ShapleyValueSampling", "ShapleyValues"])
def test_several_outputs_per_example_are_each_attributed_as_captum(name):
    """``target=None`` on a model with three outputs per example: Captum gives ablation and permutation
    ``(n * 3, features)`` and Shapley values ``(n, 3, features)``; attrkit gives the same numbers."""
    model = seeded_mlp()
    kwargs = {"n_samples": 3} if name == "ShapleyValueSampling" else {}
    torch.manual_seed(0)
    expected = getattr(C, name)(model).attribute(X, **kwargs)
    torch.manual_seed(0)
    got = getattr(A, name)(model).attribute(X, **kwargs)
    assert got.shape == expected.shape
    close(got, expected)


def test_several_outputs_with_per_example_masks_give_each_output_its_examples_mask():
    model = seeded_mlp()
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    got = A.FeatureAblation(model).attribute(X, feature_mask=mask)
    for i in range(2):
        one = A.FeatureAblation(model).attribute(X[i:i + 1], feature_mask=mask[i:i + 1])
        close(got[3 * i:3 * i + 3], one)


def test_a_group_spanning_two_inputs_with_a_float_mask_as_captum():
    torch.manual_seed(0)
    head = nn.Linear(6, 2)
    model = lambda a, b: head(torch.cat([a, b], 1))  # noqa: E731
    a, b = torch.rand(3, 4), torch.rand(3, 2)
    masks = (torch.tensor([[0.0, 0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0]]))  # groups 1 and 2 span both inputs
    for name in ["FeatureAblation", "FeaturePermutation"]:
        torch.manual_seed(0)
        expected = getattr(C, name)(model).attribute((a, b), target=1, feature_mask=masks)
        torch.manual_seed(0)
        got = getattr(A, name)(model).attribute((a, b), target=1, feature_mask=masks)
        for g, e in zip(got, expected):
            close(g, e)
    with pytest.raises(TypeError, match="feature_mask"):
        A.FeatureAblation(model).attribute((a, b), target=1, feature_mask=(masks[0] + 0.5, masks[1]))
