"""attrkit.module (stochastic gates) against the Captum oracle: same parameters from the same seed, same
forward outputs in training (sampled) and eval mode, same gate values and active probabilities; bad input."""

import pytest
import torch

import attrkit.module as module
from attrkit.module import BinaryConcreteStochasticGates, GaussianStochasticGates, StochasticGatesBase

captum_module = pytest.importorskip("captum.module")

CASES = [
    ("BinaryConcreteStochasticGates", {}),
    ("BinaryConcreteStochasticGates", {"temperature": 0.5, "lower_bound": -0.2, "upper_bound": 1.3,
                                       "reg_weight": 0.1, "reg_reduction": "mean"}),
    ("GaussianStochasticGates", {}),
    ("GaussianStochasticGates", {"std": 0.2, "reg_weight": 2.0, "reg_reduction": "none"}),
]


def _pair(name, n_gates, **kwargs):
    torch.manual_seed(7)
    ours = getattr(module, name)(n_gates, **kwargs)
    torch.manual_seed(7)
    theirs = getattr(captum_module, name)(n_gates, **kwargs)
    return ours, theirs


def _params_apart(gates):
    """Move the parameters away from their near-constant initialisation, so the test sees real differences."""
    with torch.no_grad():
        for p in gates.parameters():
            p.copy_(torch.linspace(-1.5, 1.5, p.numel()))


@pytest.mark.parametrize("name,kwargs", CASES)
@pytest.mark.parametrize("use_mask", [False, True])
def test_gates_match_captum(name, kwargs, use_mask):
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 4]]) if use_mask else None
    n_gates = 5 if use_mask else 8
    ours, theirs = _pair(name, n_gates, mask=mask, **kwargs)
    for (a, pa), (b, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert a == b and torch.equal(pa, pb)  # same initialisation from the same seed
    _params_apart(ours)
    _params_apart(theirs)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        torch.manual_seed(3)
        got, got_reg = ours(x)
        torch.manual_seed(3)
        want, want_reg = theirs(x)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got_reg, want_reg, rtol=1e-6, atol=1e-7)
    for clamp in (True, False):
        torch.testing.assert_close(ours.get_gate_values(clamp), theirs.get_gate_values(clamp))
    torch.testing.assert_close(ours.get_gate_active_probs(), theirs.get_gate_active_probs())
    assert isinstance(ours, StochasticGatesBase) and isinstance(ours, torch.nn.Module)


def test_gates_train_by_gradient_and_prune():
    """The penalty drives useless gates shut: learn to reproduce feature 0 only, with an L0 penalty."""
    torch.manual_seed(0)
    gates = GaussianStochasticGates(4, reg_weight=0.05)
    opt = torch.optim.Adam(gates.parameters(), lr=0.05)
    for _ in range(300):
        x = torch.randn(64, 4)
        gated, reg = gates(x)
        loss = ((gated[:, 0] - x[:, 0]) ** 2).mean() + reg
        opt.zero_grad()
        loss.backward()
        opt.step()
    values = gates.get_gate_values()
    assert values[0] > 0.8 and (values[1:] < 0.1).all(), values
    assert not values.requires_grad


def test_from_pretrained_matches_captum():
    log_alpha = torch.tensor([-2.0, 0.0, 3.0])
    ours = BinaryConcreteStochasticGates._from_pretrained(log_alpha, reg_weight=0.5)
    theirs = captum_module.BinaryConcreteStochasticGates._from_pretrained(log_alpha, reg_weight=0.5)
    torch.testing.assert_close(ours.get_gate_values(), theirs.get_gate_values())
    mu = torch.tensor([0.1, 0.9])
    g = GaussianStochasticGates._from_pretrained(mu, std=0.3)
    torch.testing.assert_close(g.get_gate_active_probs(),
                               captum_module.GaussianStochasticGates._from_pretrained(mu, std=0.3).get_gate_active_probs())


def test_gates_bad_input():
    with pytest.raises(ValueError, match="mask"):
        GaussianStochasticGates(3, mask=torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match="mask"):
        GaussianStochasticGates(2, mask=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="reg_reduction"):
        GaussianStochasticGates(2, reg_reduction="max")
    with pytest.raises(ValueError, match="std"):
        GaussianStochasticGates(2, std=0.0)
    with pytest.raises(ValueError, match="temperature"):
        BinaryConcreteStochasticGates(2, temperature=1.5)
    with pytest.raises(ValueError, match="lower_bound"):
        BinaryConcreteStochasticGates(2, lower_bound=0.1)
    with pytest.raises(ValueError, match="upper_bound"):
        BinaryConcreteStochasticGates(2, upper_bound=0.9)
    with pytest.raises(ValueError, match="n_gates"):
        BinaryConcreteStochasticGates(0)
    gates = BinaryConcreteStochasticGates(4)
    with pytest.raises(ValueError, match="input_tensor"):
        gates(torch.randn(2, 5))
    with pytest.raises(ValueError, match="input_tensor"):
        gates(torch.randn(4))
    with pytest.raises(TypeError):
        StochasticGatesBase(3)  # abstract

