"""Guided backpropagation and deconvolution: a hand-built network with a known answer, no
negative gradient below any ReLU, reused and in-place ReLUs, and the shared rule mechanism."""
import pytest
import torch
from torch import nn

from attrkit import Deconvolution, GuidedBackprop, Saliency
from attrkit._rules import BackwardRule, rules_applied
from attrkit.testing import MLP, ResidualCNN, TwoInputModel


def two_layer_net(inplace: bool = False) -> nn.Module:
    """f(x) = relu(x1 - x2) - 3 relu(2 x1 + x2)."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(inplace=inplace), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, -3.0]]))
    return net


@pytest.mark.parametrize("inplace", [False, True])
def test_known_answers_on_a_two_layer_network(inplace):
    net = two_layer_net(inplace)
    both_on, first_off = torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0, 1.0]])  # hidden (1, 5) and (-1, 1)
    # gradient: W1^T (w2 * mask); guided: W1^T (relu(w2) * mask); deconv: W1^T relu(w2)
    expected = {
        Saliency: [[-5.0, -4.0], [-6.0, -3.0]],
        GuidedBackprop: [[1.0, -1.0], [0.0, 0.0]],
        Deconvolution: [[1.0, -1.0], [1.0, -1.0]],
    }
    for method, answer in expected.items():
        kwargs = {"abs": False} if method is Saliency else {}
        got = torch.cat([method(net).attribute(x, **kwargs) for x in (both_on, first_off)])
        torch.testing.assert_close(got, torch.tensor(answer))
    assert net[1].inplace is inplace


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_no_negative_gradient_reaches_a_relu_input(method):
    model = MLP(n_features=6, hidden=12, n_out=4)
    seen = []

    def watch(module, args):
        args[0].register_hook(lambda g: seen.append(g))

    handles = [m.register_forward_pre_hook(watch) for m in model.modules() if isinstance(m, nn.ReLU)]
    method(model).attribute(torch.randn(8, 6), target=1)
    for h in handles:
        h.remove()
    assert len(seen) == 2 and all(bool((g >= 0).all()) for g in seen)
    assert any(bool((g > 0).any()) for g in seen)


@pytest.mark.parametrize("method", [GuidedBackprop, Deconvolution])
def test_reused_inplace_relu_matches_one_module_per_call(method):
    x = torch.randn(3, 3, 16, 16)
    shared = method(ResidualCNN().eval()).attribute(x, target=1)
    separate = method(ResidualCNN(shared_relu=False).eval()).attribute(x, target=1)
    torch.testing.assert_close(shared, separate)
    assert not torch.allclose(shared, Saliency(ResidualCNN().eval()).attribute(x, target=1, abs=False))


def test_functional_relu_keeps_its_gradient_and_is_named():
    x = (torch.randn(3, 4), torch.randn(3, 4))
    with pytest.warns(UserWarning, match=r"torch\.relu \(in TwoInputModel\.forward\)"):
        guided = GuidedBackprop(TwoInputModel()).attribute(x, target=1)
    plain = Saliency(TwoInputModel()).attribute(x, target=1, abs=False)
    for g, s in zip(guided, plain):
        torch.testing.assert_close(g, s)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        GuidedBackprop(lambda x: x)


class _Double(BackwardRule):
    def backward(self, state, grad):
        return 2 * grad, None


def test_rules_apply_per_call_and_leave_no_trace():
    relu = nn.ReLU(inplace=True)
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu, nn.Linear(3, 1))
    x = torch.randn(4, 3, requires_grad=True)
    with rules_applied(model, lambda m: _Double() if m is relu else None) as hooked:
        assert hooked == {relu: "1"} and relu.inplace is False
        model(x).sum().backward()
    w = [model[i].weight for i in (0, 2, 4)]
    assert relu.inplace is True and not relu._forward_hooks
    torch.testing.assert_close(x.grad, 4 * (w[2] @ w[1] @ w[0]).expand(4, 3))  # both calls doubled, no mask


def test_rules_applied_restores_flags_when_a_rule_fails():
    relu = nn.ReLU(inplace=True)
    model = nn.Sequential(nn.Linear(3, 3), relu)

    class Broken(BackwardRule):
        def forward(self, module, x, y):
            raise RuntimeError("broken rule")

    with pytest.raises(RuntimeError, match="broken rule"):
        with rules_applied(model, lambda m: Broken() if m is relu else None):
            model(torch.randn(2, 3))
    assert relu.inplace is True and not relu._forward_hooks
