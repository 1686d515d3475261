"""attrkit.robust against the Captum oracle (same adversarial examples, summaries and minimal parameters),
batching invariance, bad input, and the caller's model and tensors left as they were."""
from collections import namedtuple

import pytest
import torch
from torch import nn

import attrkit.robust as robust
from attrkit.robust import FGSM, PGD, AttackComparator, MinParamPerturbation, Perturbation
from attrkit.testing import SmallCNN

captum_robust = pytest.importorskip("captum.robust")


class Probs(nn.Module):
    """A small CNN returning probabilities (the attacks' default loss is -log p)."""

    def __init__(self):
        super().__init__()
        self.body = SmallCNN(n_classes=3, seed=1)

    def forward(self, x):
        return torch.softmax(self.body(x) / 10, dim=1)


class TwoInput(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, x, y, scale=1.0):
        return torch.softmax(scale * (self.a(x) + self.b(y)), dim=1)


@pytest.fixture
def model():
    return Probs().eval()


@pytest.fixture
def images():
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# =========================================================================== FGSM
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("bounds", [(float("-inf"), float("inf")), (0.0, 1.0)])
def test_fgsm_matches_captum(model, images, targeted, bounds):
    target = torch.tensor([0, 1, 2, 0, 1])
    ours = FGSM(model, lower_bound=bounds[0], upper_bound=bounds[1]).perturb(images, 0.1, target, targeted=targeted)
    theirs = captum_robust.FGSM(model, lower_bound=bounds[0], upper_bound=bounds[1]).perturb(
        images, 0.1, target, targeted=targeted)
    _same(ours, theirs)
    assert not torch.equal(ours, images)


def test_fgsm_mask_loss_func_tuple_inputs_and_args_match_captum():
    model = TwoInput().eval()
    x, y = torch.randn(4, 4), torch.randn(4, 2)
    mask = (torch.tensor([[1, 0, 1, 0]]).expand(4, 4), torch.ones(4, 2))
    loss = nn.CrossEntropyLoss(reduction="none")
    labels = torch.tensor([0, 1, 2, 1])
    kwargs = dict(epsilon=0.3, target=labels, additional_forward_args=(2.0,), mask=mask)
    ours = FGSM(lambda *a: torch.log(model(*a)), loss_func=loss).perturb((x, y), **kwargs)
    theirs = captum_robust.FGSM(lambda *a: torch.log(model(*a)), loss_func=loss).perturb((x, y), **kwargs)
    _same(ours, theirs)
    assert isinstance(ours, tuple) and torch.equal(ours[0][:, 1], x[:, 1])  # masked features stay put


def test_fgsm_int_target_and_callable():
    model = Probs().eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    attack = FGSM(model)
    assert isinstance(attack, Perturbation)
    _same(attack(x, epsilon=0.05, target=2), captum_robust.FGSM(model)(x, epsilon=0.05, target=2))


# =========================================================================== PGD
@pytest.mark.parametrize("norm", ["Linf", "L2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_matches_captum(model, images, norm, targeted):
    target = torch.tensor([2, 1, 0, 0, 1])
    kwargs = dict(radius=0.3, step_size=0.05, step_num=6, target=target, targeted=targeted, norm=norm)
    ours = PGD(model, lower_bound=0.0, upper_bound=1.0).perturb(images, **kwargs)
    theirs = captum_robust.PGD(model, lower_bound=0.0, upper_bound=1.0).perturb(images, **kwargs)
    _same(ours, theirs)
    change = (ours - images).flatten(1)
    size = change.abs().amax(1) if norm == "Linf" else change.norm(dim=1)
    assert (size <= 0.3 + 1e-5).all()


def test_pgd_linf_random_start_same_seed_matches_captum(model, images):
    mask = torch.zeros_like(images)
    mask[:, :, 2:6, 2:6] = 1
    kwargs = dict(radius=0.2, step_size=0.05, step_num=3, target=1, random_start=True, mask=mask)
    torch.manual_seed(11)
    ours = PGD(model, lower_bound=0.0, upper_bound=1.0).perturb(images, **kwargs)
    torch.manual_seed(11)
    theirs = captum_robust.PGD(model, lower_bound=0.0, upper_bound=1.0).perturb(images, **kwargs)
    _same(ours, theirs)
    assert torch.equal(ours * (1 - mask), images * (1 - mask))


def test_pgd_l2_random_start_stays_in_the_ball(model, images):
    """Captum's L2 random start broadcasts the radii into the last dimension (it fails for these 8-wide
    images with a batch of 5); attrkit's scales each example by its own radius."""
    torch.manual_seed(0)
    start = PGD._random_point(images, 0.5, "L2", 1)
    norms = (start - images).flatten(1).norm(dim=1)
    assert (norms <= 0.5 + 1e-6).all() and (norms > 0).all()
    with pytest.raises(RuntimeError):
        captum_robust.PGD(model).perturb(images, 0.5, 0.1, 1, 0, random_start=True, norm="L2")
    out = PGD(model).perturb(images, 0.5, 0.1, 2, 0, random_start=True, norm="L2")
    assert ((out - images).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


# =========================================================================== AttackComparator
def _accuracy(out, target):
    return (out.argmax(dim=1) == target).float()


Scores = namedtuple("Scores", ["accuracy", "top_prob"])


def _two_metrics(out, target):
    return Scores(_accuracy(out, target), out.max(dim=1).values.mean())


def _noise(x, std=0.3):
    return x + std * torch.randn_like(x)


def _fill(cls, model, metric, preproc=None):
    comparator = cls(model, metric, preproc) if preproc else cls(model, metric)
    comparator.add_attack(FGSM(model) if cls is AttackComparator else captum_robust.FGSM(model), "FGSM",
                          attack_kwargs={"epsilon": 0.2}, additional_attack_arg_names=["target"],
                          apply_before_preproc=False)
    comparator.add_attack(_noise, "noise", num_attempts=4, attack_kwargs={"std": 0.5})
    comparator.add_attack(lambda x: torch.flip(x, dims=[-1]), "flip")
    return comparator


def _same_results(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys(), key
            for stat in a[key]:
                _same(tuple(a[key][stat]) if isinstance(a[key][stat], tuple) else a[key][stat],
                      tuple(b[key][stat]) if isinstance(b[key][stat], tuple) else b[key][stat])
        else:
            _same(tuple(a[key]) if isinstance(a[key], tuple) else a[key],
                  tuple(b[key]) if isinstance(b[key], tuple) else b[key])


@pytest.mark.parametrize("metric", [_accuracy, _two_metrics])
@pytest.mark.parametrize("per_eval", [None, 1, 3])
def test_attack_comparator_matches_captum(model, images, metric, per_eval):
    labels = torch.tensor([0, 1, 2, 0, 1])
    ours, theirs = _fill(AttackComparator, model, metric), _fill(captum_robust.AttackComparator, model, metric)
    for batch in range(2):
        x = images if batch == 0 else images.flip(0)
        torch.manual_seed(batch)
        got = ours.evaluate(x, perturbations_per_eval=per_eval, target=labels)
        torch.manual_seed(batch)
        want = theirs.evaluate(x, perturbations_per_eval=per_eval or 1, target=labels)
        _same_results(got, want)
    _same_results(ours.summary(), theirs.summary())
    assert set(ours.summary()) == {"Original", "FGSM", "flip", "noise Mean Attempt", "noise Min Attempt",
                                   "noise Max Attempt"}
    if metric is _two_metrics:
        assert type(ours.summary()["Original"]["mean"]).__name__ == "Scores"
    ours.reset()
    assert ours.summary() == {}


def test_attack_comparator_preproc_and_additional_forward_args():
    model = TwoInput().eval()
    x = torch.randn(3, 6)
    split = lambda v: (v[:, :4], v[:, 4:])  # noqa: E731
    fwd = lambda ab, scale: model(*ab, scale)  # noqa: E731
    results = []
    for cls in (AttackComparator, captum_robust.AttackComparator):
        comparator = cls(fwd, lambda out: out[:, 0], split)
        comparator.add_attack(lambda v: v * 0.5, "half")
        comparator.add_attack(lambda t: (t[0] + 1, t[1]), "shift", apply_before_preproc=False)
        results.append(comparator.evaluate(x, additional_forward_args=(torch.full((3, 1), 2.0),),
                                           perturbations_per_eval=None if cls is AttackComparator else 1))
    _same_results(*results)


def test_attack_comparator_warns_on_missing_attack_arg(model, images):
    comparator = AttackComparator(model, lambda out: out[:, 0])
    comparator.add_attack(lambda x, target=None: x, "identity", additional_attack_arg_names=["target"])
    with pytest.warns(UserWarning, match="target"):
        comparator.evaluate(images)


def test_attack_comparator_bad_input(model):
    with pytest.raises(TypeError, match="metric"):
        AttackComparator(model, metric=None)
    comparator = AttackComparator(model, _accuracy)
    comparator.add_attack(_noise, "noise")
    with pytest.raises(RuntimeError, match="noise"):
        comparator.add_attack(_noise, "noise")
    with pytest.raises(ValueError, match="num_attempts"):
        comparator.add_attack(_noise, "other", num_attempts=0)
    with pytest.raises(TypeError, match="attack_kwargs"):
        comparator.add_attack(_noise, "third", attack_kwargs=[0.1])
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        comparator.evaluate(torch.rand(2, 1, 8, 8), perturbations_per_eval=0, target=torch.tensor([0, 1]))


# =========================================================================== MinParamPerturbation
def _shift_down(x, delta):
    return x - delta


def _random_shift(x, std):
    return x - std * 2 * torch.rand_like(x)


@pytest.mark.parametrize("mode", ["linear", "binary"])
@pytest.mark.parametrize("per_eval", [None, 1, 5])
def test_min_param_matches_captum(model, images, mode, per_eval):
    x = images[:1]
    target = int(model(x).argmax())
    kwargs = dict(arg_name="delta", arg_min=0.0, arg_max=3.0, arg_step=0.05, mode=mode)
    got = MinParamPerturbation(model, _shift_down, **kwargs)
    want = captum_robust.MinParamPerturbation(model, _shift_down, **kwargs)
    ours = got.evaluate(x, target=target, perturbations_per_eval=per_eval)
    theirs = want.evaluate(x, target=target, perturbations_per_eval=per_eval or 1)
    assert theirs[1] is not None and ours[1] == theirs[1]
    _same(ours[0], theirs[0])


@pytest.mark.parametrize("mode", ["linear", "binary"])
def test_min_param_random_attack_with_attempts_matches_captum(model, images, mode):
    x = images[3:4]
    target = int(model(x).argmax())
    results = []
    # linear: Captum's one-at-a-time default; binary: attrkit tries a value's attempts together, which is
    # Captum with perturbations_per_eval=num_attempts (the random draws of later values depend on it)
    captum_per_eval = 1 if mode == "linear" else 3
    for cls, per_eval in ((MinParamPerturbation, None), (captum_robust.MinParamPerturbation, captum_per_eval)):
        search = cls(model, _random_shift, "std", 0.0, 4.0, 0.1, mode=mode, num_attempts=3)
        torch.manual_seed(5)
        results.append(search.evaluate(x, target=target, perturbations_per_eval=per_eval))
    assert results[0][1] == results[1][1]
    _same(results[0][0], results[1][0])


def test_min_param_none_when_never_fooled_and_custom_correct_fn(model, images):
    x = images[:1]
    search = MinParamPerturbation(model, _shift_down, "delta", 0.0, 0.001, 0.0002)
    assert search.evaluate(x, target=int(model(x).argmax())) == (None, None)
    # a custom correctness test: "correct" while the top probability stays above a threshold
    judge = lambda out, threshold: bool(out.max() > threshold)  # noqa: E731
    for cls in (MinParamPerturbation, captum_robust.MinParamPerturbation):
        search = cls(model, _random_shift, "std", 0.0, 2.0, 0.1, correct_fn=judge)
        torch.manual_seed(2)
        out = search.evaluate(x, correct_fn_kwargs={"threshold": 0.9})
        assert out[1] == 0.0  # this model is never that sure


def test_min_param_preproc_before_and_after():
    two = TwoInput().eval()
    model = lambda ab: two(*ab)  # noqa: E731  (Captum passes the preprocessed tuple as one argument)
    x = torch.randn(1, 6)
    target = int(two(x[:, :4], x[:, 4:]).argmax())
    split = lambda v: (v[:, :4], v[:, 4:])  # noqa: E731
    for before in (True, False):
        attack = (lambda v, s: v * (1 - s)) if before else (lambda t, s: (t[0] * (1 - s) - s, t[1]))
        outs = []
        for cls in (MinParamPerturbation, captum_robust.MinParamPerturbation):
            search = cls(model, attack, "s", 0.0, 5.0, 0.25, preproc_fn=split, apply_before_preproc=before)
            outs.append(search.evaluate(x, target=target))
        assert outs[0][1] == outs[1][1]
        if outs[0][1] is not None:
            _same(outs[0][0], outs[1][0])


def test_min_param_bad_input(model):
    with pytest.raises(ValueError, match="arg_step"):
        MinParamPerturbation(model, _shift_down, "delta", 0.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="mode"):
        MinParamPerturbation(model, _shift_down, "delta", 0.0, 1.0, 0.1, mode="ternary")
    with pytest.raises(TypeError, match="arg_name"):
        MinParamPerturbation(model, _shift_down, 3, 0.0, 1.0, 0.1)
    with pytest.raises(TypeError, match="attack"):
        MinParamPerturbation(model, None, "delta", 0.0, 1.0, 0.1)
    search = MinParamPerturbation(model, _shift_down, "delta", 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="target"):
        search.evaluate(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="attack_kwargs"):
        search.evaluate(torch.rand(1, 1, 8, 8), target=0, attack_kwargs=[1])


# =========================================================================== bad input, state restored
def test_attack_bad_input(model, images):
    with pytest.raises(ValueError, match="norm"):
        PGD(model).perturb(images, 0.1, 0.01, 2, 0, norm="L1")
    with pytest.raises(ValueError, match="step_num"):
        PGD(model).perturb(images, 0.1, 0.01, -1, 0)
    with pytest.raises(ValueError, match="epsilon"):
        FGSM(model).perturb(images, -0.1, 0)
    with pytest.raises(TypeError, match="epsilon"):
        FGSM(model).perturb(images, "big", 0)
    with pytest.raises(ValueError, match="mask"):
        FGSM(model).perturb(images, 0.1, 0, mask=torch.ones(5, 1, 7, 7))
    with pytest.raises(TypeError, match="inputs"):
        FGSM(model).perturb(images.long(), 0.1, 0)
    with pytest.raises(ValueError, match="lower_bound"):
        FGSM(model, lower_bound=1.0, upper_bound=0.0)
    with pytest.raises(ValueError, match="target"):
        FGSM(model).perturb(images, 0.1, target=None)
    with pytest.raises(ValueError, match="target"):
        FGSM(model).perturb(images, 0.1, target=7)


@pytest.mark.parametrize("training", [False, True])
def test_model_mode_and_requires_grad_restored(images, training):
    model = Probs().train(training)
    x = images.clone().requires_grad_(False)
    y = images.clone().requires_grad_(True)
    FGSM(model).perturb(x, 0.1, 0)
    PGD(model).perturb(y, 0.1, 0.02, 2, 0)
    comparator = AttackComparator(model, lambda out: out[:, 0])
    comparator.add_attack(PGD(model), "pgd", attack_kwargs=dict(radius=0.1, step_size=0.02, step_num=1, target=0))
    comparator.evaluate(x)
    MinParamPerturbation(model, _shift_down, "delta", 0.0, 1.0, 0.1).evaluate(x[:1], target=0)
    assert model.training is training
    assert not x.requires_grad and y.requires_grad and x.grad is None and y.grad is None
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, images)



@pytest.mark.parametrize("package", ["robust", "module"])
def test_public_names_and_keywords_match_captum(package):
    """Captum code moves across by changing the import: same names, same keyword arguments."""
    import importlib
    import inspect
    ours = importlib.import_module(f"attrkit.{package}")
    theirs = importlib.import_module(f"captum.{package}")
    assert sorted(ours.__all__) == sorted(theirs.__all__)
    for name in theirs.__all__:
        for method in ("__init__", "perturb", "evaluate", "add_attack", "forward", "get_gate_values"):
            if not hasattr(getattr(theirs, name), method) or method == "perturb" and name == "Perturbation":
                continue
            want = list(inspect.signature(getattr(getattr(theirs, name), method)).parameters)
            got = list(inspect.signature(getattr(getattr(ours, name), method)).parameters)
            assert got == want, (name, method)


def test_captum_robustness_tutorial_calls_run_after_the_import_swap():
    """The calls of Captum's CIFAR robustness tutorial, on a tiny CIFAR-shaped model, through both libraries."""
    transforms = pytest.importorskip("torchvision.transforms")
    from attrkit.testing import TinyImageCNN

    net = TinyImageCNN(n_classes=10, seed=0).eval()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    label = net(image).argmax(dim=1)
    Metrics = namedtuple("Metrics", ["accuracy", "logit"])

    def metric(model_out, target):
        return Metrics((model_out.argmax(dim=1) == target).float(), model_out[:, target].mean())

    def pixel_dropout(image, pixels_removed):
        keep = torch.ones(1, 1, 32, 32)
        keep.view(-1)[:pixels_removed] = 0
        return image * keep

    outs = []
    for lib in (robust, captum_robust):
        fgsm = lib.FGSM(net, lower_bound=-1, upper_bound=1).perturb(image, epsilon=0.16, target=label)
        pgd = lib.PGD(net, nn.CrossEntropyLoss(reduction="none"), lower_bound=-1, upper_bound=1).perturb(
            inputs=image, radius=0.13, step_size=0.02, step_num=7, target=torch.tensor([3]), targeted=True)
        search = lib.MinParamPerturbation(forward_func=net, attack=pixel_dropout, arg_name="pixels_removed",
                                          mode="linear", arg_min=0, arg_max=1024, arg_step=16, preproc_fn=None,
                                          apply_before_preproc=True)
        dropped, removed = search.evaluate(image, target=label, perturbations_per_eval=10)
        comparator = lib.AttackComparator(forward_func=net, metric=metric)
        comparator.add_attack(transforms.RandomRotation(degrees=30), "Random Rotation", num_attempts=5)
        comparator.add_attack(transforms.GaussianBlur(kernel_size=3), "Gaussian Blur", num_attempts=1)
        comparator.add_attack(lib.FGSM(net), "FGSM", attack_kwargs={"epsilon": 0.15},
                              apply_before_preproc=False, additional_attack_arg_names=["target"])
        torch.manual_seed(0)
        results = comparator.evaluate(image, target=label)
        outs.append((fgsm, pgd, dropped, removed, results, comparator.summary()))
    (f1, p1, d1, r1, res1, s1), (f2, p2, d2, r2, res2, s2) = outs
    _same(f1, f2)
    _same(p1, p2)
    assert r1 == r2 and isinstance(r1, int)
    if r1 is not None:
        _same(d1, d2)
    _same_results(res1, res2)
    _same_results(s1, s2)
