"""Inputs whose first dimension is not the batch (Captum's "sparse features"): the flat ids of an
``EmbeddingBag`` next to a dense batch, as in recommendation models. The perturbation methods that Captum
runs on them (FeatureAblation, Occlusion, FeaturePermutation, the Shapley value methods) give Captum's numbers
with Captum as the oracle; where Captum gives wrong numbers or fails, attrkit refuses by name. Also:
FeaturePermutation where a shuffle cannot change anything."""
import captum.attr as C
import pytest
import torch
from torch import nn

import attrkit as A
from _helpers import close


class Recommender(nn.Module):
    """A dense tower plus one bag of sparse ids per example: ``ids`` is flat, ``offsets`` says where each
    example's bag starts (``EmbeddingBag``'s format), so ``ids`` has as many rows as there are ids."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dense = nn.Linear(3, 2)
        self.bag = nn.EmbeddingBag(10, 2, mode="sum", padding_idx=0)  # id 0 (the baseline) adds nothing

    def forward(self, dense, ids, offsets):
        return self.dense(dense) + self.bag(ids, offsets)


class Segments(nn.Module):
    """A 2-d non-batch input: ``values`` ``(M, 2)`` rows, each added to the example ``segment`` names."""

    def forward(self, dense, values, segment):
        return dense.sum(1, keepdim=True).repeat(1, 2).index_add(0, segment, values)


class Counting(nn.Module):
    """Wraps a model; records the length of the ids each forward pass receives."""

    def __init__(self, model):
        super().__init__()
        self.model, self.lengths = model, []

    def forward(self, dense, ids, offsets):
        self.lengths.append(ids.shape[0])
        return self.model(dense, ids, offsets)


DENSE = torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
IDS = torch.tensor([1, 7, 2, 4, 5, 3, 6])  # 3 ids for the first example, 4 for the second
OFFSETS = torch.tensor([0, 3])
ARGS = dict(target=0, additional_forward_args=(OFFSETS,))


def run(name, model, inputs, seed=0, **kwargs):
    """The same call through attrkit and Captum, from the same seed: ``(ours, Captum's)``."""
    torch.manual_seed(seed)
    expected = getattr(C, name)(model).attribute(inputs, **kwargs)
    torch.manual_seed(seed)
    got = getattr(A, name)(model).attribute(inputs, **kwargs)
    return got, expected


CASES = [
    ("FeatureAblation", {}),
    ("FeatureAblation", {"feature_mask": (torch.tensor([[0, 1, 1]]), torch.tensor([1]))}),  # ids grouped with 2 columns
    ("FeatureAblation", {"feature_mask": (torch.tensor([[0, 1, 2]]), torch.tensor(0))}),  # a 0-d mask
    ("Occlusion", {"sliding_window_shapes": ((2,), ())}),
    ("ShapleyValueSampling", {"n_samples": 3}),
    ("ShapleyValues", {}),
    ("FeaturePermutation", {}),  # the ids are shuffled along their own first dimension, drawn as Captum
    ("FeaturePermutation", {"feature_mask": (torch.tensor([[0, 1, 1]]), torch.tensor([1]))}),
]


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_embedding_bag_ids_match_captum(name, kwargs):
    got, expected = run(name, Recommender().eval(), (DENSE, IDS), **ARGS, **kwargs)
    assert got[1].shape == expected[1].shape == (2,)  # the ids' attribution: one number per example (as Captum)
    close(got[0], expected[0])
    close(got[1], expected[1])


@pytest.mark.parametrize("name,kwargs", [("FeatureAblation", {}), ("ShapleyValueSampling", {"n_samples": 2}),
                                         ("FeaturePermutation", {})])
def test_model_that_aggregates_the_batch_matches_captum(name, kwargs):
    model = Recommender().eval()
    total = lambda dense, ids, offsets: model(dense, ids, offsets).sum()  # noqa: E731
    got, expected = run(name, total, (DENSE, IDS), additional_forward_args=(OFFSETS,), **kwargs)
    assert got[0].shape == (1, 3) and got[1].shape == (1,)
    close(got[0], expected[0])
    close(got[1], expected[1])


@pytest.mark.parametrize("name,kwargs", [("FeatureAblation", {"target": 1}), ("FeatureAblation", {}),
                                         ("ShapleyValueSampling", {"n_samples": 2}),
                                         ("FeaturePermutation", {"target": 1}),
                                         ("Occlusion", {"sliding_window_shapes": ((2,), (1,)), "target": 1})])
def test_two_dimensional_non_batch_input_matches_captum(name, kwargs):
    values = torch.randn(5, 2, generator=torch.Generator().manual_seed(4))
    segment = torch.tensor([0, 0, 1, 1, 1])
    got, expected = run(name, Segments(), (DENSE, values), additional_forward_args=(segment,), **kwargs)
    assert got[1].shape == expected[1].shape  # (rows of output, 2): each column of values is a feature
    close(got[0], expected[0])
    close(got[1], expected[1])


@pytest.mark.parametrize("name", ["FeatureAblation", "ShapleyValueSampling", "FeaturePermutation"])
def test_an_empty_list_of_ids_gets_zeros_as_in_captum(name):
    kwargs = {"n_samples": 2} if name == "ShapleyValueSampling" else {}
    empty = torch.tensor([], dtype=torch.long)
    got, expected = run(name, Recommender().eval(), (DENSE, empty), target=0,
                        additional_forward_args=(torch.tensor([0, 0]),), **kwargs)
    assert torch.equal(got[1], torch.zeros(2))
    close(got[0], expected[0])
    close(got[1], expected[1])


def test_one_perturbation_per_pass_by_default_and_the_same_numbers():
    counting = Counting(Recommender().eval())
    got = A.FeatureAblation(counting).attribute((DENSE, IDS), perturbations_per_eval=1, **ARGS)
    assert counting.lengths == [7] * 5  # the reference and 4 features, the ids never stacked
    counting.lengths.clear()
    close(A.FeatureAblation(counting).attribute((DENSE, IDS), **ARGS)[1], got[1])  # automatic batch size
    assert counting.lengths == [7] * 5


# --------------------------------------------------------------------------- departures: refused by name
def test_several_perturbations_per_pass_are_refused_where_captum_gives_wrong_numbers():
    model = Recommender().eval()
    one = C.FeatureAblation(model).attribute((DENSE, IDS), perturbations_per_eval=1, **ARGS)
    two = C.FeatureAblation(model).attribute((DENSE, IDS), perturbations_per_eval=2, **ARGS)
    assert not torch.allclose(one[1], two[1])  # Captum stacks the ids; the bags no longer match the offsets
    for name in ["FeatureAblation", "ShapleyValueSampling", "FeaturePermutation"]:
        with pytest.raises(ValueError, match="perturbations_per_eval.*input 1 has 7 rows"):
            getattr(A, name)(model).attribute((DENSE, IDS), perturbations_per_eval=2, **ARGS)
    with pytest.raises(ValueError, match="perturbations_per_eval"):
        A.Occlusion(model).attribute((DENSE, IDS), ((1,), ()), perturbations_per_eval=3, **ARGS)


def test_a_mask_along_the_non_batch_dimension_is_refused_where_captum_fails():
    model, mask = Recommender().eval(), (torch.tensor([[0, 1, 2]]), torch.tensor([3, 3, 3, 4, 4, 4, 4]))
    with pytest.raises(RuntimeError):
        C.FeatureAblation(model).attribute((DENSE, IDS), feature_mask=mask, **ARGS)
    with pytest.raises(ValueError, match=r"feature_mask\[1\].*not the batch.*shape \(1,\)"):
        A.FeatureAblation(model).attribute((DENSE, IDS), feature_mask=mask, **ARGS)


@pytest.mark.parametrize("name", ["Lime", "KernelShap"])
def test_surrogate_methods_refuse_non_batch_inputs_by_name(name):
    model = Recommender().eval()
    with pytest.raises(RuntimeError):  # Captum's LIME builds one sample per example and breaks the offsets
        getattr(C, name)(model).attribute((DENSE, IDS), n_samples=4, **ARGS)
    with pytest.raises(ValueError, match="`inputs` tensors must share the batch dimension"):
        getattr(A, name)(model).attribute((DENSE, IDS), n_samples=4, **ARGS)


# --------------------------------------------------------------------------- FeaturePermutation: nothing to shuffle
def test_permutation_of_one_example_is_refused_where_captum_returns_zeros():
    model = nn.Linear(3, 2).eval()
    x = torch.randn(1, 3)
    assert torch.equal(C.FeaturePermutation(model).attribute(x, target=0), torch.zeros(1, 3))  # every group skipped
    with pytest.raises(ValueError, match="`inputs` must hold at least 2 examples.*got 1"):
        A.FeaturePermutation(model).attribute(x, target=0)
    with pytest.raises(ValueError, match="at least 2 examples"):  # grouping the features changes nothing
        A.FeaturePermutation(model).attribute(x, target=0, feature_mask=torch.tensor([[0, 0, 0]]))


def test_permutation_of_a_non_batch_input_with_one_row_is_refused():
    model = Recommender().eval()
    ids, offsets = torch.tensor([5]), torch.tensor([0, 1])  # one id: the second example's bag is empty
    captum_attr = C.FeaturePermutation(model).attribute((DENSE, ids), target=0, additional_forward_args=(offsets,))
    assert torch.equal(captum_attr[1], torch.zeros(2))  # Captum skips the group: "unimportant"
    with pytest.raises(ValueError, match=r"`inputs` must hold at least 2 rows.*\(input 1\).*got 1"):
        A.FeaturePermutation(model).attribute((DENSE, ids), target=0, additional_forward_args=(offsets,))
