"""LRP and LayerLRP: each rule against a small reference implementation and against Captum,
relevance conservation, rules set per layer, reused and in-place modules, and bad input."""
import pytest
import torch
from torch import nn

import attrkit
from attrkit import LRP, Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule, LayerLRP
from attrkit.testing import ResidualCNN
from cases_deeplift import LRPNet
import attrkit as A
from _helpers import Add, X, close, seeded_linear

captum_attr = pytest.importorskip("captum.attr")
C = captum_attr
captum_rules = pytest.importorskip("captum.attr._utils.lrp_rules")


def mlp(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5, bias=bias), nn.ReLU(), nn.Linear(5, 3, bias=bias))


def reference_lrp(net: nn.Sequential, x, target: int, first_weight, last_eps: float):
    """The textbook computation for mlp(): R = a * W'^T (R / z') layer by layer."""
    w1, b1, w2, b2 = net[0].weight, net[0].bias, net[2].weight, net[2].bias
    a = torch.relu(x @ w1.T + b1)
    z = a @ w2.T + b2
    r_out = torch.zeros_like(z)
    r_out[:, target] = z[:, target]
    r_hidden = a * ((r_out / (z + last_eps * z.sign())) @ w2)
    w1p = first_weight(w1)
    z1 = x @ w1p.T + b1
    return x * ((r_hidden / (z1 + 1e-9 * z1.sign())) @ w1p)


@pytest.mark.parametrize("rule, first_weight", [
    (EpsilonRule(), lambda w: w),
    (GammaRule(gamma=0.5), lambda w: w + 0.5 * w.clamp(min=0)),
    (Alpha1_Beta0_Rule(), lambda w: w.clamp(min=0)),
])
def test_rules_match_a_reference_implementation(rule, first_weight):
    net, x = mlp(), torch.randn(3, 4)
    net[0].rule, net[2].rule = rule, EpsilonRule(epsilon=0.1)
    got = LRP(net).attribute(x, target=1)
    torch.testing.assert_close(got, reference_lrp(net, x, 1, first_weight, 0.1).detach())


def _set_rules(model, rules, config):
    if config == "gamma":
        model.conv1.rule = rules.GammaRule()
        model.conv2.rule = rules.GammaRule(gamma=0.5, set_bias_to_zero=True)
    elif config == "alpha-beta":
        model.conv1.rule = rules.Alpha1_Beta0_Rule()
        model.fc1.rule = rules.Alpha1_Beta0_Rule(set_bias_to_zero=True)
        model.fc2.rule = rules.EpsilonRule(epsilon=0.05)
    elif config == "identity-bn":
        model.bn.rule = rules.IdentityRule()
    return model


@pytest.mark.parametrize("config", ["gamma", "alpha-beta", "identity-bn"])
def test_rules_set_per_layer_agree_with_captum(config):
    x = torch.randn(3, 1, 8, 8)
    ours, our_delta = LRP(_set_rules(LRPNet().eval(), attrkit, config)).attribute(
        x, target=[0, 1, 2], return_convergence_delta=True)
    theirs, their_delta = captum_attr.LRP(_set_rules(LRPNet().eval(), captum_rules, config)).attribute(
        x, target=[0, 1, 2], return_convergence_delta=True)
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(our_delta, their_delta.detach(), rtol=1e-4, atol=1e-6)
    for to_input in (False, True):
        model_ours = _set_rules(LRPNet().eval(), attrkit, config)
        model_theirs = _set_rules(LRPNet().eval(), captum_rules, config)
        ours = LayerLRP(model_ours, model_ours.conv2).attribute(x, 1, attribute_to_layer_input=to_input)
        theirs = captum_attr.LayerLRP(model_theirs, model_theirs.conv2).attribute(
            x, 1, attribute_to_layer_input=to_input)
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-7)


def bias_free_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.ReLU(), nn.AvgPool2d(3), nn.Flatten(), nn.Linear(4, 5, bias=False), nn.ReLU(),
        nn.Linear(5, 3, bias=False),
    )


@pytest.mark.parametrize("first_rule", [None, GammaRule(), Alpha1_Beta0_Rule()])
def test_relevance_is_conserved_without_biases(first_rule):
    model, x = bias_free_cnn(), torch.randn(4, 1, 8, 8)
    if first_rule is not None:
        model[0].rule = first_rule
    attr, delta = LRP(model).attribute(x, target=0, return_convergence_delta=True)
    output = model(x)[:, 0]
    assert delta.abs().max() < 1e-5 * output.abs().max()
    torch.testing.assert_close(attr.flatten(1).sum(1), output.detach(), rtol=1e-5, atol=1e-6)
    layers = [model[0], model[3], model[7]]
    relevances, deltas = LayerLRP(model, layers).attribute(x, target=0, return_convergence_delta=True)
    assert isinstance(relevances, list) and [r.shape[1] for r in relevances] == [3, 4, 5]
    assert all(d.abs().max() < 1e-5 * output.abs().max() for d in deltas)


def test_gamma_zero_is_the_epsilon_rule():
    x = torch.randn(3, 4)
    a = LRP(mlp()).attribute(x, target=2)
    net = mlp()
    net[0].rule = GammaRule(gamma=0.0)
    torch.testing.assert_close(LRP(net).attribute(x, target=2), a)


def test_model_rules_weights_and_attributes_are_left_as_they_were():
    model = LRPNet().eval()
    model.conv1.rule = rule = GammaRule()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = {name: set(vars(m)) for name, m in model.named_modules()}
    LRP(model).attribute(torch.randn(2, 1, 8, 8), target=0)
    assert model.conv1.rule is rule  # Captum deletes the rules it was given; attrkit keeps them
    assert {name: set(vars(m)) for name, m in model.named_modules()} == attributes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_reused_inplace_relu_matches_one_module_per_call():
    x = torch.randn(2, 3, 16, 16)
    shared = LRP(ResidualCNN().eval()).attribute(x, target=1)
    separate = LRP(ResidualCNN(shared_relu=False).eval()).attribute(x, target=1)
    torch.testing.assert_close(shared, separate)


def test_verbose_names_the_rules(capsys):
    LRP(mlp()).attribute(torch.randn(2, 4), target=0, verbose=True)
    out = capsys.readouterr().out
    assert "Applied EpsilonRule(epsilon=1e-09) on layer Linear" in out and "IdentityRule()" in out


def test_a_layer_without_a_default_rule_is_named_and_a_rule_fixes_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"GELU.*rule"):
        LRP(model).attribute(torch.randn(2, 4), target=0)
    model[1].rule = IdentityRule()
    assert LRP(model).attribute(torch.randn(2, 4), target=0).shape == (2, 4)


def test_bad_rules_and_models_are_named():
    model = mlp()
    model[0].rule = "epsilon"
    with pytest.raises(TypeError, match=r"0\.rule"):
        LRP(model)
    with pytest.raises(TypeError, match="model"):
        LRP(lambda x: x)
    with pytest.raises(TypeError, match="layer"):
        LayerLRP(mlp(), "0")


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
        self.add, self.head = Add(), nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.head(self.add(self.a(x), self.b(x)))


@pytest.mark.parametrize("rule", [IdentityRule(), EpsilonRule(1e-9)], ids=["identity", "epsilon"])
def test_an_addition_module_splits_relevance_by_each_inputs_share(rule):
    model, x = _Branches(), torch.rand(3, 4)
    model.add.rule = rule
    for m in (model.a, model.b, model.head):
        m.rule = EpsilonRule(1e-9)
    attr, delta = LRP(model).attribute(x, target=0, return_convergence_delta=True)
    assert delta.abs().max() < 1e-4  # conserved: nothing lost or counted twice at the addition
    x_ = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x_)[:, 0].sum(), x_)
    torch.testing.assert_close(attr, grad * x, rtol=1e-4, atol=1e-4)  # linear, LRP-0: gradient x input


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.a(x) + x)  # a residual connection written in forward


def test_a_functional_residual_addition_is_named_in_a_warning():
    with pytest.warns(UserWarning, match=r"LRP: an addition of two activations \(Tensor\.add in _Residual\.forward\)"
                                         r".*not conserved"):
        LRP(_Residual()).attribute(torch.rand(2, 4), target=0)


def test_captum_rules_on_the_model_are_named_as_such():
    from captum.attr._utils.lrp_rules import EpsilonRule as CaptumEpsilonRule

    model = mlp()
    model[0].rule = CaptumEpsilonRule()  # code written for Captum, or left by a Captum LRP call that failed
    with pytest.raises(TypeError, match=r"`0\.rule`.*Captum.*del module\.rule"):
        LRP(model).attribute(torch.rand(2, 4), target=0)


def test_rules_are_importable_from_both_places():
    from attrkit import lrp

    for name in ("EpsilonRule", "GammaRule", "Alpha1_Beta0_Rule", "IdentityRule", "PropagationRule"):
        assert getattr(attrkit, name) is getattr(lrp, name)


# ----------------------------------- Captum drop-in: a module used twice, an addition module, a residual, one output
class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.relu, self.head = seeded_linear(4, 4, bias=False), nn.ReLU(), seeded_linear(4, 2, seed=1, bias=False)

    def forward(self, x):
        return self.head(self.relu(self.lin(self.relu(self.lin(x)))))


class _TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = seeded_linear(4, 4, bias=False), seeded_linear(4, 4, seed=2, bias=False)
        self.relu_a, self.relu_b, self.add = nn.ReLU(), nn.ReLU(), Add()
        self.head = seeded_linear(4, 2, seed=1, bias=False)

    def forward(self, x):
        return self.head(self.add(self.relu_a(self.a(x)), self.relu_b(self.b(x))))


def _gradient_x_input(model, x, target):
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return (grad * x).detach()


# With ReLUs, no biases and LRP-0 (epsilon ~ 0) everywhere, LRP equals gradient x input (Montavon et al. 2019).
def test_lrp_module_used_twice_equals_gradient_x_input():
    model, x = _Twice(), torch.rand(3, 4, generator=torch.Generator().manual_seed(3))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.rule = A.EpsilonRule(epsilon=1e-9)
    close(A.LRP(model).attribute(x, target=0), _gradient_x_input(model, x, 0), tol=1e-4)


def _two_branches(add_rule):
    model = _TwoBranches()
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.rule = A.EpsilonRule(epsilon=1e-9)
    if add_rule is not None:
        model.add.rule = add_rule
    return model


def test_lrp_addition_module_without_a_rule_is_a_clear_error():  # as Captum: no guessed rule, but say which
    with pytest.raises(TypeError, match=r"\bAdd\b"):
        A.LRP(_two_branches(None)).attribute(torch.rand(3, 4), target=0)


def test_lrp_addition_module_with_identity_rule_equals_gradient_x_input():
    model, x = _two_branches(A.IdentityRule()), torch.rand(3, 4, generator=torch.Generator().manual_seed(3))
    close(A.LRP(model).attribute(x, target=0), _gradient_x_input(model, x, 0), tol=1e-4)


def test_lrp_addition_module_with_epsilon_rule_equals_gradient_x_input():
    model, x = _two_branches(A.EpsilonRule(epsilon=1e-9)), torch.rand(3, 4, generator=torch.Generator().manual_seed(3))
    close(A.LRP(model).attribute(x, target=0), _gradient_x_input(model, x, 0), tol=1e-4)


def test_lrp_warns_on_residual_addition():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin1, self.relu, self.lin2 = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

        def forward(self, x):
            return self.lin2(x + self.relu(self.lin1(x)))

    with pytest.warns(UserWarning, match="resid|addition|conserv"):
        LRP(Residual().eval()).attribute(torch.rand(2, 4), target=0)


def test_lrp_on_a_one_output_model_without_target_as_captum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 1)).eval()
    close(A.LRP(model).attribute(X), C.LRP(model).attribute(X))
