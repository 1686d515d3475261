"""The summarizers against Captum 0.9 (same numbers, dtypes and keys), the ordered merge, the deliberate
departures, and bad input."""
import captum.attr as ca
import pytest
import torch
from captum.attr._utils import stat as cs

import attrkit as ak
from attrkit.dataset import summarizer as S

CAPTUM = {"Count": cs.Count, "Mean": cs.Mean, "MSE": cs.MSE, "Var": cs.Var, "StdDev": cs.StdDev, "Min": cs.Min,
          "Max": cs.Max, "Sum": cs.Sum}
OURS = {"Count": S.Count, "Mean": S.Mean, "MSE": S.MSE, "Var": S.Var, "StdDev": S.StdDev, "Min": S.Min,
        "Max": S.Max, "Sum": S.Sum}
SPECS = [
    [("Count", {})], [("Mean", {})], [("MSE", {})], [("Var", {})], [("Var", {"order": 1})], [("StdDev", {})],
    [("StdDev", {"order": 1})], [("Min", {})], [("Max", {})], [("Sum", {})],
    [("Mean", {}), ("Var", {"order": 1}), ("StdDev", {"order": 1}), ("Min", {}), ("Max", {})],
    [("Sum", {}), ("Count", {}), ("MSE", {}), ("Var", {}), ("Mean", {}), ("Mean", {})],
]


def build(table, spec):
    return [table[name](**kw) for name, kw in spec]


def assert_same(a, b):
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
        return
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape, k
            torch.testing.assert_close(y, x, rtol=0, atol=0, equal_nan=True)
        else:
            assert x == y, k


def stream(n, shape=(3, 2), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(shape, generator=g) * 3 + 1 for _ in range(n)]
    return [x.to(dtype) if dtype.is_floating_point else (x * 2).round().to(dtype) for x in xs]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "+".join(n + str(k.get("order", "")) for n, k in s))
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_summarizer_equals_captum(spec, n, dtype):
    theirs, ours = ca.Summarizer(build(CAPTUM, spec)), ak.Summarizer(build(OURS, spec))
    for x in stream(n, dtype=dtype):
        theirs.update(x)
        ours.update(x)
    assert_same(theirs.summary, ours.summary)


def test_common_stats_keys_and_order_match_captum():
    theirs, ours = ca.Summarizer(ca.CommonStats()), ak.Summarizer(ak.CommonStats())
    for x in stream(4):
        theirs.update(x)
        ours.update(x)
    assert_same(theirs.summary, ours.summary)
    assert list(ours.summary) == ["mean", "sample_variance", "sample_std_dev", "min", "max"]


def test_tuple_and_number_updates_equal_captum():
    theirs, ours = ca.Summarizer(ca.CommonStats()), ak.Summarizer(ak.CommonStats())
    for x, y in zip(stream(5), stream(5, shape=(4,), seed=1)):
        theirs.update((x, y, 2.5))
        ours.update((x, y, 2.5))
    assert_same(theirs.summary, ours.summary)
    assert isinstance(ours.summary, list) and len(ours.summary) == 3
    theirs, ours = ca.Summarizer([ca.Mean()]), ak.Summarizer([ak.Mean()])
    for v in (1.0, 4.0):
        theirs.update(v)
        ours.update(v)
    assert_same(theirs.summary, ours.summary)


@pytest.mark.parametrize("labels", ["list", "scalar", "none"])
def test_class_summarizer_equals_captum(labels):
    theirs, ours = ca.ClassSummarizer(ca.CommonStats()), ak.ClassSummarizer(ak.CommonStats())
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        x, x2 = torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)
        lab = {"list": torch.randint(0, 3, (5,), generator=g).tolist(), "scalar": 1, "none": None}[labels]
        theirs.update((x, x2), lab)
        ours.update((x, x2), lab)
    assert_same(theirs.summary, ours.summary)
    assert theirs.class_summaries.keys() == ours.class_summaries.keys()
    for k in theirs.class_summaries:
        assert_same(theirs.class_summaries[k], ours.class_summaries[k])


def test_class_summarizer_tensor_labels_are_keyed_by_value():
    """Departure: Captum keys 0-d tensor labels by object identity (one class per example)."""
    ours = ak.ClassSummarizer([ak.Mean()])
    ours.update(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0, 1, 0]))
    assert sorted(ours.class_summaries) == [0, 1]
    torch.testing.assert_close(ours.class_summaries[0][0]["mean"], torch.tensor([2.5]))
    theirs = ca.ClassSummarizer([ca.Mean()])
    theirs.update(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0, 1, 0]))
    assert len(theirs.class_summaries) == 3  # the Captum behaviour we do not copy


def test_std_dev_higher_order_name_departs_from_captum_typo():
    s = ak.Summarizer([ak.StdDev(order=2)])
    for x in stream(4):
        s.update(x)
    assert list(s.summary) == ["std_dev(2)"]
    assert ca.StdDev(order=2).name == "std_dev2)"  # Captum's key, a typo
    c = ca.Summarizer([ca.StdDev(order=2)])
    for x in stream(4):
        c.update(x)
    torch.testing.assert_close(s.summary["std_dev(2)"], c.summary["std_dev2)"], rtol=0, atol=0)


def test_names_and_equality_follow_captum():
    assert [s.name for s in ak.CommonStats()] == [s.name for s in ca.CommonStats()]
    assert ak.Var(order=3).name == ca.Var(order=3).name == "variance(3)"
    assert ak.Min(name="lo") == ak.Min() and ak.Var(order=1) != ak.Var()
    assert ak.Mean(name="avg").name == "avg"


@pytest.mark.parametrize("split", [1, 3, 6])
def test_merge_equals_one_stream(split):
    xs = stream(9, dtype=torch.float64)
    whole = ak.Summarizer(ak.CommonStats() + [ak.Sum(), ak.Count(), ak.MSE()])
    for x in xs:
        whole.update(x)
    a = ak.Summarizer(ak.CommonStats() + [ak.Sum(), ak.Count(), ak.MSE()])
    b = ak.Summarizer(ak.CommonStats() + [ak.Sum(), ak.Count(), ak.MSE()])
    for x in xs[:split]:
        a.update(x)
    for x in xs[split:]:
        b.update(x)
    merged = a.merge(b).summary
    for k, v in whole.summary.items():
        torch.testing.assert_close(merged[k], v, rtol=1e-12, atol=1e-12) if torch.is_tensor(v) else None
    assert merged["count"] == 9


def test_merge_with_empty_and_of_class_summarizers():
    a, b = ak.ClassSummarizer([ak.Mean()]), ak.ClassSummarizer([ak.Mean()])
    a.update(torch.tensor([[1.0], [3.0]]), [0, 1])
    a.merge(ak.ClassSummarizer([ak.Mean()]))
    b.update(torch.tensor([[5.0], [7.0]]), [0, 2])
    a.merge(b)
    means = {k: v[0]["mean"].item() for k, v in a.class_summaries.items()}
    assert means == {0: 3.0, 1: 3.0, 2: 7.0}
    assert a.summary[0]["mean"].item() == 4.0


def test_bad_input():
    s = ak.Summarizer([ak.Mean()])
    s.update(torch.ones(2))
    with pytest.raises(TypeError, match="consistently"):
        s.update((torch.ones(2),))
    with pytest.raises(TypeError, match="stats"):
        ak.Summarizer([ak.Mean, "max"])
    with pytest.raises(ValueError, match="labels"):
        ak.ClassSummarizer([ak.Mean()]).update(torch.ones(3, 2), [0, 1])
    with pytest.raises(TypeError, match="same statistics"):
        ak.Summarizer([ak.Mean()]).merge(ak.Summarizer([ak.Max()]))
    assert ak.Summarizer([ak.Mean()]).summary is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32])
@pytest.mark.parametrize("n", [1, 2, 9])
def test_batch_summary_equals_one_update_per_example(dtype, n):
    """attribute_dataset summarizes a chunk in a few vectorised reductions; same keys, dtypes and values."""
    from attrkit.dataset.summarizer import class_summarizer_of_batch
    stats = [ak.Mean(), ak.Var(order=1), ak.StdDev(order=1), ak.Max(), ak.Sum(), ak.Count(), ak.MSE(),
             ak.Min(name="fold_min", min_fn=lambda a, b: torch.minimum(a, b))]  # a custom fn: folded row by row
    xs = torch.stack(stream(n, dtype=dtype)), torch.stack(stream(n, shape=(2,), dtype=dtype, seed=5))
    labels = torch.tensor([i % 3 for i in range(n)])
    loop = ak.ClassSummarizer(stats)
    loop.update(xs, labels)
    batch = class_summarizer_of_batch(stats, xs, labels)
    assert list(batch.class_summaries) == list(loop.class_summaries)
    for got, want in [(batch.summary, loop.summary)] + [(batch.class_summaries[k], loop.class_summaries[k])
                                                        for k in loop.class_summaries]:
        for g, w in zip(got, want):
            assert g.keys() == w.keys()
            for k in w:
                if torch.is_tensor(w[k]):
                    assert g[k].dtype == w[k].dtype, k
                    torch.testing.assert_close(g[k], w[k], rtol=1e-5, atol=1e-5)
                else:
                    assert g[k] == w[k]


def test_summarizers_hold_no_reference_cycles():
    """Their tensors are freed as soon as the summarizer is dropped, without waiting for the cyclic collector."""
    import gc
    import weakref
    gc.disable()
    try:
        s = ak.ClassSummarizer(ak.CommonStats())
        s.update(torch.randn(4, 3), [0, 1, 0, 1])
        refs = [weakref.ref(s), weakref.ref(s._summarizers[0]), weakref.ref(s.summaries[0]._summarizers[0])]
        del s
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


def test_a_class_summarizer_saves_and_loads_itself(tmp_path):
    """state_dict / load_state_dict (an attrkit addition): plain tensors, loadable with weights_only=True, and the
    loaded summarizer goes on updating and merging like the original."""
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(5, 3, generator=g) for _ in range(3)]
    labels = [torch.randint(0, 2, (5,), generator=g) for _ in range(3)]
    whole = S.ClassSummarizer(ak.CommonStats())
    part = S.ClassSummarizer(ak.CommonStats())
    for x, y in zip(xs, labels):
        whole.update(x, y)
    for x, y in zip(xs[:2], labels[:2]):
        part.update(x, y)
    torch.save(part.state_dict(), tmp_path / "s.pt")
    loaded = S.ClassSummarizer(ak.CommonStats()).load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    rest = S.ClassSummarizer(ak.CommonStats())
    rest.update(xs[2], labels[2])
    loaded.merge(rest)
    assert sorted(loaded.class_summaries) == sorted(whole.class_summaries)
    for got, want in [(loaded.summary, whole.summary)] + [(loaded.class_summaries[k], whole.class_summaries[k])
                                                          for k in whole.class_summaries]:
        for a, b in zip(got, want):
            for k in b:
                torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
