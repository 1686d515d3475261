"""The shared plumbing: expansion orders, batching, baselines, targets."""
import pytest
import torch

from attrkit import _plumbing as P
from attrkit import FeatureAblation, Saliency
from _helpers import seeded_linear


def test_expansion_orders():
    x = torch.tensor([[0.0], [1.0]])
    assert P.expand((x,), 3, "repeat")[0].flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert P.expand((x,), 3, "interleave")[0].flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert P.expand_target([4, 5], 2, "repeat") == [4, 5, 4, 5]
    assert P.expand_target([4, 5], 2, "interleave") == [4, 4, 5, 5]
    assert P.expand_target(torch.tensor([4, 5]), 2, "interleave").tolist() == [4, 4, 5, 5]
    assert P.expand_target(3, 5) == 3 and P.expand_target((1, 2), 5) == (1, 2)


def test_additional_args_tensors_repeat_others_pass_through():
    t = torch.tensor([1.0, 2.0])
    args = P.expand_args(P.format_args((t, "mode", 3, torch.tensor(7.0))), 2)
    assert args[0].tolist() == [1, 2, 1, 2] and args[1:3] == ("mode", 3) and args[3].item() == 7.0
    assert P.format_args(None) == () and P.format_args(t)[0] is t


@pytest.mark.parametrize("batch", [None, 1, 2, 5, 7, 100])
def test_chunks_cover_every_unit_once(batch):
    units = [k for r in P.chunks(10, 2, batch) for k in r]
    assert units == list(range(10))


@pytest.mark.parametrize("baseline", [None, 0.5, torch.zeros(3), torch.zeros(1, 3), torch.zeros(2, 3)])
def test_baseline_forms_broadcast(baseline):
    (b,) = P.format_baselines(baseline, (torch.ones(2, 3),))
    assert b.shape == (2, 3)


def test_integration_rules_integrate_polynomials():
    for method in P.INTEGRATION_METHODS:
        w, a = P.integration_rule(method, 200)
        assert sum(w) == pytest.approx(1.0)
        assert sum(wi * ai for wi, ai in zip(w, a)) == pytest.approx(0.5, abs=1e-2)
    w, a = P.integration_rule("gausslegendre", 5)  # exact for degree <= 9
    assert sum(wi * ai**9 for wi, ai in zip(w, a)) == pytest.approx(0.1)


def test_path_points_are_step_major():
    x, b = torch.ones(2, 1), torch.zeros(2, 1)
    (pts,) = P.path_points((x,), (b,), [0.25, 0.75])
    assert pts.flatten().tolist() == [0.25, 0.25, 0.75, 0.75]


def test_select_target_forms():
    out = torch.arange(12.0).reshape(2, 2, 3)
    assert P.select_target(out, (1, 2)).tolist() == [5.0, 11.0]
    assert P.select_target(out, [(0, 0), (1, 1)]).tolist() == [0.0, 10.0]
    assert P.select_target(out[:, 0], torch.tensor([2, 0])).tolist() == [2.0, 6.0]
    assert P.select_target(out[:, 0], -1).tolist() == [2.0, 8.0]


# ------------------------------------------------------------------------------ targets: a bool is not a class index
@pytest.mark.parametrize("method", [Saliency, FeatureAblation])
def test_bool_target_is_rejected(method):
    with pytest.raises(TypeError, match="target"):
        method(seeded_linear(4, 2)).attribute(torch.rand(2, 4), target=True)
