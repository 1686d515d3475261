"""attrkit.concept against captum.concept: same CAVs -> same TCAV scores; bad input; state restored; caches."""
import warnings

import pytest
import torch

from attrkit import LayerGradientXActivation, LayerIntegratedGradients
from attrkit.concept import (CAV, Classifier, Concept, DefaultClassifier, TCAV, concepts_to_str,
                             tcav_significance)
from attrkit.testing import BranchCNN, SmallCNN

captum_concept = pytest.importorskip("captum.concept")
captum_attr = pytest.importorskip("captum.attr")


class MeanDifference(Classifier):
    """Deterministic: each class's weight row is its mean activation minus the mean of all examples."""

    def __init__(self):
        self.calls = 0

    def train_and_eval(self, dataloader, **kwargs):
        self.calls += 1
        xs, ys = zip(*dataloader)
        x, y = torch.cat(xs), torch.cat(ys)
        self._classes = sorted(set(y.tolist()))
        self._w = torch.stack([x[y == c].mean(0) - x.mean(0) for c in self._classes])
        return {"accs": torch.tensor(1.0)}

    def weights(self):
        return self._w

    def classes(self):
        return self._classes


class Replay(Classifier):
    """Hands back CAVs trained elsewhere, in the order Captum asks for them (sets, then layers)."""

    def __init__(self, cavs, order):
        self.queue = [cavs[key][layer] for key, layer in order]

    def train_and_eval(self, dataloader, **kwargs):
        self.cav = self.queue.pop(0)
        return {}

    def weights(self):
        return self.cav.stats["weights"].clone()

    def classes(self):
        return list(self.cav.stats["classes"])


def _concepts(n=5, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Concept(i, f"c{i}", [torch.rand(6, *shape, generator=g) + 0.3 * i, torch.rand(4, *shape, generator=g)])
            for i in range(n)]


def _inputs(n=7, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _assert_same(ours, theirs):
    assert set(ours) == set(theirs)
    for key in ours:
        assert set(ours[key]) == set(theirs[key])
        for layer in ours[key]:
            for kind in ("sign_count", "magnitude"):
                torch.testing.assert_close(ours[key][layer][kind], theirs[key][layer][kind], rtol=1e-5, atol=1e-6)


def _sets(cs):
    return [[cs[3], cs[1]], [cs[0], cs[2]], [cs[4], cs[0], cs[2]], [cs[2], cs[3]]]


def test_scores_equal_captums_with_the_same_deterministic_classifier(tmp_path):
    model, cs, x = SmallCNN(), _concepts(), _inputs()
    ours = TCAV(model, ["conv2", "fc"], classifier=MeanDifference()).interpret(x, _sets(cs), target=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_concept.TCAV(model, ["conv2", "fc"], classifier=MeanDifference(),
                                     save_path=str(tmp_path)).interpret(x, _sets(cs), target=1)
    _assert_same(ours, theirs)
    assert ours["3-1"]["conv2"]["sign_count"].shape == (2,) and ours["4-0-2"]["fc"]["magnitude"].shape == (3,)


def test_scores_equal_captums_given_the_cavs_of_the_default_classifier(tmp_path):
    model, cs, x = SmallCNN(), _concepts(), _inputs()
    layers, sets = ["conv1", "conv2"], _sets(cs)
    tcav = TCAV(model, layers)
    ours = tcav.interpret(x, sets, target=[0, 1, 2, 0, 1, 2, 0])
    order = [(concepts_to_str(s), layer) for s in sets for layer in layers]
    theirs = captum_concept.TCAV(model, layers, classifier=Replay(tcav.cavs, order), save_path=str(tmp_path)
                                 ).interpret(x, sets, target=[0, 1, 2, 0, 1, 2, 0])
    _assert_same(ours, theirs)


def test_layer_integrated_gradients_as_the_layer_method_matches_captum(tmp_path):
    model, cs, x = SmallCNN(), _concepts(), _inputs()
    try:
        ours_method = LayerIntegratedGradients(model, None, multiply_by_inputs=False)
    except TypeError:               # a layer of None is not accepted yet: any layer does, TCAV replaces it
        ours_method = LayerIntegratedGradients(model, model.fc, multiply_by_inputs=False)
    ours = TCAV(model, ["conv2", "fc"], classifier=MeanDifference(), layer_attr_method=ours_method
                ).interpret(x, _sets(cs), target=2, n_steps=8)
    theirs = captum_concept.TCAV(model, ["conv2", "fc"], classifier=MeanDifference(), save_path=str(tmp_path),
                                 layer_attr_method=captum_attr.LayerIntegratedGradients(
                                     model, None, multiply_by_inputs=False)).interpret(x, _sets(cs), target=2,
                                                                                       n_steps=8)
    _assert_same(ours, theirs)
    assert ours_method.layer is not model.conv2           # the caller's method is not changed


def test_gradient_x_activation_built_on_another_layer_gives_the_default_scores():
    model, cs, x = SmallCNN(), _concepts(), _inputs()
    default = TCAV(model, ["conv2"], classifier=MeanDifference()).interpret(x, _sets(cs), target=0)
    explicit = TCAV(model, ["conv2"], classifier=MeanDifference(),
                    layer_attr_method=LayerGradientXActivation(model, model.fc, multiply_by_inputs=False)
                    ).interpret(x, _sets(cs), target=0)
    _assert_same(default, explicit)


def test_default_classifier_separates_and_points_from_the_first_class_to_the_second():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 6, generator=g) - 1, torch.randn(30, 6, generator=g) + 1])
    y = torch.tensor([4] * 30 + [7] * 30)
    clf = DefaultClassifier()
    stats = clf.train_and_eval([(x[:30], y[:30]), (x[30:], y[30:])])
    w = clf.weights()
    assert clf.classes() == [4, 7] and w.shape == (2, 6)
    torch.testing.assert_close(w[0], -w[1])
    assert float(stats["accs"]) == 1.0
    assert float((x[30:].mean(0) - x[:30].mean(0)) @ w[1]) > 0
    again = DefaultClassifier()
    again.train_and_eval([(x[:30], y[:30]), (x[30:], y[30:])])
    torch.testing.assert_close(again.weights(), w)


def test_default_classifier_direction_agrees_with_captums_sklearn_classifier():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(20, generator=g)
    x = torch.cat([torch.randn(40, 20, generator=g) + mean, torch.randn(40, 20, generator=g) - mean])
    y = torch.tensor([0] * 40 + [1] * 40)
    ours = DefaultClassifier()
    ours.train_and_eval([(x, y)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_concept.DefaultClassifier()
        theirs.train_and_eval([(x, y)])
    a, b = ours.weights()[1], torch.as_tensor(theirs.weights()[1]).float()
    assert torch.cosine_similarity(a, b, dim=0) > 0.7   # Captum's SGD direction itself varies (0.73-0.91 to the exact SVM)
    assert list(theirs.classes()) == ours.classes()


def test_multi_class_default_classifier_has_one_row_per_concept():
    g = torch.Generator().manual_seed(2)
    centres = torch.eye(3) * 4
    x = torch.cat([torch.randn(20, 3, generator=g) + c for c in centres])
    y = torch.tensor([0] * 20 + [1] * 20 + [2] * 20)
    clf = DefaultClassifier()
    stats = clf.train_and_eval([(x, y)])
    assert clf.weights().shape == (3, 3) and clf.classes() == [0, 1, 2] and float(stats["accs"]) > 0.9
    assert torch.equal(clf.weights().argmax(1), torch.arange(3))


# ------------------------------------------------------------------------------------------ bad input
def test_a_layer_name_that_does_not_exist():
    with pytest.raises(ValueError, match="`layers`.*'conv9'"):
        TCAV(SmallCNN(), ["conv2", "conv9"])


@pytest.mark.parametrize("bad, match", [
    (lambda cs: [[Concept(9, "empty", [])] + cs[:1]], "empty"),
    (lambda cs: [[Concept(9, "nothing", None), cs[0]]], "data_iter"),
    (lambda cs: [[cs[0]]], "at least two"),
    (lambda cs: [], "experimental_sets"),
    (lambda cs: [[cs[0], Concept(0, "impostor", cs[1].data_iter)]], "share id 0"),
    (lambda cs: [[cs[0], cs[0]]], "repeats"),
    (lambda cs: [[cs[0], Concept(9, "rgb", [torch.rand(3, 3, 8, 8)])]], "'rgb'.*failed"),
])
def test_bad_concepts_name_what_is_wrong(bad, match):
    model = SmallCNN()
    with pytest.raises((ValueError, TypeError), match=match):
        TCAV(model, "conv2").interpret(_inputs(), bad(_concepts()), target=0)


def test_concepts_of_different_shapes_and_inputs_of_another_shape():
    model = BranchCNN()
    small, large = _concepts(2), _concepts(3, shape=(1, 10, 10))
    with pytest.raises(ValueError, match="experimental_sets.*different sizes"):
        TCAV(model, "conv_a", classifier=MeanDifference()).interpret(_inputs(), [[small[0], large[2]]], target=0)
    with pytest.raises(ValueError, match="`inputs`"):
        TCAV(model, "conv_a", classifier=MeanDifference()).interpret(torch.rand(3, 1, 10, 10), [small], target=0)
    with pytest.raises(ValueError, match="`inputs`"):
        TCAV(SmallCNN(), "conv2", classifier=MeanDifference()).interpret(torch.rand(3, 1, 10, 10), [small], target=0)


def test_wrong_arguments():
    model = SmallCNN()
    with pytest.raises(TypeError, match="layer_attr_method"):
        TCAV(model, "conv2", layer_attr_method="gradients")
    with pytest.raises(TypeError, match="classifier"):
        TCAV(model, "conv2", classifier=object())
    with pytest.raises(ValueError, match="attribute_to_layer_input"):
        TCAV(model, "conv2").interpret(_inputs(), [_concepts(2)], target=0, attribute_to_layer_input=True)
    with pytest.raises(ValueError, match="test_split_ratio"):
        TCAV(model, "conv2", test_split_ratio=1.5).interpret(_inputs(), [_concepts(2)], target=0)


def test_model_state_restored_even_after_an_error():
    model = SmallCNN().train()
    model.conv1.weight.requires_grad_(False)
    cs = _concepts()
    TCAV(model, ["conv1", "conv2"]).interpret(_inputs(), _sets(cs), target=0)
    with pytest.raises(ValueError):
        TCAV(model, "conv2").interpret(_inputs(), [[cs[0], Concept(9, "rgb", [torch.rand(3, 3, 8, 8)])]], target=0)
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


# ------------------------------------------------------------------------------------------ caches
def test_in_memory_cavs_are_reused_until_the_model_changes():
    model, cs, x = SmallCNN().eval(), _concepts(), _inputs()
    clf = MeanDifference()
    tcav = TCAV(model, "conv2", classifier=clf)
    first = tcav.interpret(x, _sets(cs), target=0)
    tcav.interpret(x, _sets(cs), target=0)
    assert clf.calls == 4
    with torch.no_grad():
        model.conv1.weight.mul_(-1)
    second = tcav.interpret(x, _sets(cs), target=0)
    assert clf.calls == 8
    assert any(not torch.equal(first[k]["conv2"]["magnitude"], second[k]["conv2"]["magnitude"]) for k in first)


def test_disk_cache_reads_back_only_for_the_same_model_and_concepts(tmp_path):
    model, cs, x = SmallCNN(), _concepts(), _inputs()
    clf = MeanDifference()
    first = TCAV(model, "conv2", classifier=clf, save_path=str(tmp_path)).interpret(x, _sets(cs), target=0)
    again = TCAV(model, "conv2", classifier=clf, save_path=str(tmp_path)).interpret(x, _sets(cs), target=0)
    assert clf.calls == 4
    _assert_same(first, again)
    other = SmallCNN(seed=1)
    TCAV(other, "conv2", classifier=clf, save_path=str(tmp_path)).interpret(x, _sets(cs), target=0)
    assert clf.calls == 8                                  # another model's weights: trained afresh
    changed = _concepts(seed=5)
    TCAV(model, "conv2", classifier=clf, save_path=str(tmp_path)).interpret(x, _sets(changed), target=0)
    assert clf.calls == 12                                 # same ids and names, other examples: trained afresh
    assert CAV.load(str(tmp_path), "default_model_id", [cs[3], cs[1]], "conv2") is None   # only keyed files


def test_nothing_is_written_without_a_save_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    TCAV(SmallCNN(), "conv2").interpret(_inputs(), [_concepts(2)], target=0)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ significance
def _direction_model():
    """Output 0 grows along feature 0 of `features` (an identity layer), so a concept living on feature 0 matters."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("features", torch.nn.Identity())
    head = torch.nn.Linear(6, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0, 0] = 1.0
    model.add_module("head", head)
    return model


def test_significance_finds_the_concept_the_output_uses_and_reports_scipys_p_value():
    from scipy.stats import ttest_ind
    g = torch.Generator().manual_seed(3)
    model = _direction_model()
    concept = Concept(0, "feature0", [torch.randn(20, 6, generator=g) + torch.tensor([3.0, 0, 0, 0, 0, 0])])
    randoms = [Concept(i, f"random_{i}", [torch.randn(20, 6, generator=g)]) for i in range(1, 12)]
    x = torch.randn(10, 6, generator=g)
    result = tcav_significance(TCAV(model, "features"), x, concept, randoms, target=0)["features"]
    assert result.concept_scores.shape == (10,) and result.random_scores.shape == (10,)
    assert result.mean == 1.0 and result.random_scores.mean() < 0.8 and result.significant
    t, p = ttest_ind(result.concept_scores.numpy(), result.random_scores.numpy(), equal_var=False)
    assert result.p_value == pytest.approx(float(p)) and result.t_statistic == pytest.approx(float(t))


def test_significance_bad_input():
    cs = _concepts()
    tcav = TCAV(SmallCNN(), "conv2")
    with pytest.raises(ValueError, match="random_concepts"):
        tcav_significance(tcav, _inputs(), cs[0], cs[1:3], target=0)
    with pytest.raises(ValueError, match="random_concepts"):
        tcav_significance(tcav, _inputs(), cs[0], cs[0:4], target=0)
    with pytest.raises(ValueError, match="score_type"):
        tcav_significance(tcav, _inputs(), cs[0], cs[1:], target=0, score_type="mean")


def test_default_classifier_solves_the_squared_hinge_svm_exactly():
    from sklearn.svm import LinearSVC
    g = torch.Generator().manual_seed(4)
    direction = torch.randn(15, generator=g)
    x = torch.cat([torch.randn(30, 15, generator=g) + 0.3 * direction, torch.randn(30, 15, generator=g) - 0.3 * direction])
    y = torch.tensor([0] * 30 + [1] * 30)
    ours = DefaultClassifier(alpha=0.01)
    ours.train_and_eval([(x, y)], test_split_ratio=0.0)
    # the same objective: 1/2 |w|^2 + C sum(squared hinge) with C = 1 / (n alpha); a barely penalised intercept
    ref = LinearSVC(C=1 / (0.01 * 60), loss="squared_hinge", tol=1e-10, max_iter=100000,
                    intercept_scaling=1000).fit(x.numpy(), y.numpy())
    torch.testing.assert_close(ours.weights()[1], torch.tensor(ref.coef_[0], dtype=torch.float32), rtol=1e-4, atol=1e-5)


def test_the_tutorials_calls_run_after_the_import_swap(tmp_path):
    """Captum's TCAV tutorial: concepts from folders of files, CustomIterableDataset + dataset_to_dataloader,
    LayerIntegratedGradients(model, None, multiply_by_inputs=False), interpret(..., n_steps=5)."""
    from attrkit.concept import CustomIterableDataset, dataset_to_dataloader
    g = torch.Generator().manual_seed(0)
    for name, shift in [("striped", 0.5), ("random_0", 0.0), ("random_1", 0.1)]:
        (tmp_path / name).mkdir()
        for i in range(6):
            torch.save(torch.rand(1, 8, 8, generator=g) + shift, tmp_path / name / f"{i}.pt")

    def assemble_concept(name, id):
        dataset = CustomIterableDataset(lambda f: torch.load(f), str(tmp_path / name) + "/")
        return Concept(id=id, name=name, data_iter=dataset_to_dataloader(dataset))

    striped, random_0, random_1 = (assemble_concept(n, i) for i, n in enumerate(["striped", "random_0", "random_1"]))
    model = SmallCNN()
    try:
        lig = LayerIntegratedGradients(model, None, multiply_by_inputs=False)
    except TypeError:
        lig = LayerIntegratedGradients(model, model.conv2, multiply_by_inputs=False)
    mytcav = TCAV(model=model, layers=["conv2", "fc"], layer_attr_method=lig)
    scores = mytcav.interpret(inputs=_inputs(), experimental_sets=[[striped, random_0], [striped, random_1]],
                              target=1, n_steps=5)
    assert set(scores) == {"0-1", "0-2"} and set(scores["0-1"]) == {"conv2", "fc"}
    sc = scores["0-1"]["conv2"]["sign_count"]
    assert sc.shape == (2,) and float(sc.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("times_activation", [False, True])
def test_one_pass_over_every_layer_equals_one_layer_at_a_time(times_activation):
    model, cs, x = SmallCNN(), _concepts(), _inputs()
    clf = MeanDifference()
    together = TCAV(model, ["conv1", "conv2", "fc"], classifier=clf, layer_attr_method=LayerGradientXActivation(
        model, model.fc, multiply_by_inputs=times_activation)).interpret(x, _sets(cs), target=1)
    apart = {}
    for layer in ["conv1", "conv2", "fc"]:
        one = TCAV(model, [layer], classifier=clf, layer_attr_method=LayerGradientXActivation(
            model, model.fc, multiply_by_inputs=times_activation)).interpret(x, _sets(cs), target=1)
        for key in one:
            apart.setdefault(key, {}).update(one[key])
    _assert_same(together, apart)


def test_significance_of_several_concepts_in_one_call_equals_one_at_a_time():
    g = torch.Generator().manual_seed(5)
    model = _direction_model()
    tested = [Concept(i, f"shift{i}", [torch.randn(12, 6, generator=g) + i]) for i in range(2)]
    randoms = [Concept(10 + i, f"random_{i}", [torch.randn(12, 6, generator=g)]) for i in range(5)]
    x = torch.randn(8, 6, generator=g)
    clf = MeanDifference()
    both = tcav_significance(TCAV(model, "features", classifier=clf), x, tested, randoms, target=0)
    for c in tested:
        one = tcav_significance(TCAV(model, "features", classifier=clf), x, c, randoms, target=0)["features"]
        assert both[c.name]["features"].p_value == pytest.approx(one.p_value, nan_ok=True)
        assert torch.equal(both[c.name]["features"].concept_scores, one.concept_scores)
