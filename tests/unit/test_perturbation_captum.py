"""Perturbation methods where Captum's users meet them: Future-returning models, models with several outputs
per example, feature groups across inputs. Captum 0.9 is the oracle where it is right."""
import threading

import pytest
import torch
from torch import nn

import captum.attr as C

import attrkit as A


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _mlp(n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Softplus(), nn.Linear(5, n_out)).eval()


X = torch.rand(2, 4, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- attribute_future
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
    model = _mlp()
    remote = SlowRemote(model)
    try:
        kwargs = {"n_samples": 1} if name == "ShapleyValueSampling" else {}
        torch.manual_seed(0)
        got = getattr(A, name)(remote).attribute_future(X, target=1, perturbations_per_eval=1, **kwargs).wait()
    finally:
        remote.stop()
    assert remote.peak == 4  # the four features' passes ran side by side (the reference pass sizes them first)
    torch.manual_seed(0)
    _close(got, getattr(A, name)(model).attribute(X, target=1, perturbations_per_eval=1, **kwargs))


def test_plain_attribute_refuses_a_future_returning_model():
    def forward(x):
        future = torch.futures.Future()
        future.set_result(x.sum(1))
        return future

    with pytest.raises(TypeError, match="attribute_future"):
        A.FeatureAblation(forward).attribute(X)


# --------------------------------------------------------------------------- several outputs per example
@pytest.mark.parametrize("name", ["FeatureAblation", "FeaturePermutation", "ShapleyValueSampling", "ShapleyValues"])
def test_several_outputs_per_example_are_each_attributed_as_captum(name):
    """``target=None`` on a model with three outputs per example: Captum gives ablation and permutation
    ``(n * 3, features)`` and Shapley values ``(n, 3, features)``; attrkit gives the same numbers."""
    model = _mlp()
    kwargs = {"n_samples": 3} if name == "ShapleyValueSampling" else {}
    torch.manual_seed(0)
    expected = getattr(C, name)(model).attribute(X, **kwargs)
    torch.manual_seed(0)
    got = getattr(A, name)(model).attribute(X, **kwargs)
    assert got.shape == expected.shape
    _close(got, expected)


def test_several_outputs_with_per_example_masks_give_each_output_its_examples_mask():
    model = _mlp()
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    got = A.FeatureAblation(model).attribute(X, feature_mask=mask)
    for i in range(2):
        one = A.FeatureAblation(model).attribute(X[i:i + 1], feature_mask=mask[i:i + 1])
        _close(got[3 * i:3 * i + 3], one)


def test_gradient_of_a_scalar_neuron_selector_as_captum():
    model = _mlp()
    expected = C.NeuronGradient(model, model[0]).attribute(X, neuron_selector=lambda out: out.sum())
    _close(A.NeuronGradient(model, model[0]).attribute(X, neuron_selector=lambda out: out.sum()), expected)


def test_lrp_on_a_one_output_model_without_target_as_captum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 1)).eval()
    _close(A.LRP(model).attribute(X), C.LRP(model).attribute(X))


# --------------------------------------------------------------------------- grouped features
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
            _close(g, e)
    with pytest.raises(TypeError, match="feature_mask"):
        A.FeatureAblation(model).attribute((a, b), target=1, feature_mask=(masks[0] + 0.5, masks[1]))
