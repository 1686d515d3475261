"""attrkit.influence against Captum 0.9's captum.influence on the same tiny models, data and saved checkpoints;
properties Captum cannot check (random projections, batch-size invariance, the model left as it was); bad input."""
import warnings

import captum.influence as ci
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import attrkit.influence as ai

N_TRAIN, N_TEST = 23, 5


def _net(conv: bool = False) -> nn.Module:
    if conv:
        return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _data(conv: bool = False, n: int = N_TRAIN, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 2, 6, 6) if conv else (n, 4)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def load_with_lr(model, path):
    state = torch.load(path)
    lr = state.pop("learning_rate")
    model.load_state_dict(state)
    return lr


@pytest.fixture(scope="module", params=[False, True], ids=["mlp", "conv"])
def setup(request, tmp_path_factory):
    """A model trained a few SGD steps, three checkpoints with their learning rates, train and test data."""
    conv = request.param
    torch.manual_seed(1)
    model = _net(conv)
    x, y = _data(conv)
    folder = tmp_path_factory.mktemp("ckpt")
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for epoch, lr in enumerate([0.3, 0.2, 0.1]):
        for group in opt.param_groups:
            group["lr"] = lr
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        torch.save({**model.state_dict(), "learning_rate": lr}, folder / f"checkpoint-{epoch}.pt")
    test = _data(conv, N_TEST, seed=5)
    return model, TensorDataset(x, y), str(folder), test


def _close(a, b, rtol=1e-5):
    torch.testing.assert_close(a.to(torch.float64), b.to(torch.float64), rtol=rtol, atol=1e-8)


# ================================================================================== TracInCP
@pytest.mark.parametrize("layers", [None, ["2"]])
def test_tracincp_scores_topk_and_self_influence_equal_captum(setup, layers):
    model, train, folder, test = setup
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=7)
    if layers is not None and model[0].__class__ is nn.Conv2d:
        layers = ["3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ci.TracInCP(model, train, folder, layers=layers, **kwargs)
    ours = ai.TracInCP(model, train, folder, layers=layers, **kwargs)
    _close(ours.influence(test), theirs.influence(test))
    for proponents in (True, False):
        mine, ref = ours.influence(test, k=4, proponents=proponents), theirs.influence(test, k=4, proponents=proponents)
        assert torch.equal(mine.indices, ref.indices)
        _close(mine.influence_scores, ref.influence_scores)
    _close(ours.self_influence(), theirs.self_influence())
    _close(ours.self_influence(test), theirs.self_influence(test))
    _close(ours.influence(test, aggregate=True), theirs.influence(test, aggregate=True))
    _close(ours.compute_intermediate_quantities(test), theirs.compute_intermediate_quantities(test))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tracincp_sample_wise_grads_per_batch_equals_captum(setup, reduction):
    model, train, folder, test = setup
    if isinstance(model[0], nn.Conv2d):
        pytest.skip("the Linear model is enough: Captum's sample-wise path covers Linear and Conv2d only")
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction=reduction),
                  batch_size=6, sample_wise_grads_per_batch=True)
    theirs, ours = ci.TracInCP(model, train, folder, **kwargs), ai.TracInCP(model, train, folder, **kwargs)
    _close(ours.influence(test), theirs.influence(test))
    _close(ours.self_influence(), theirs.self_influence())


def test_tracincp_default_loader_and_no_loss(setup, tmp_path):
    """A plain state dict (learning rate 1) through the default loader; no loss: the output is differentiated."""
    model, train, _, test = setup
    torch.save(model.state_dict(), tmp_path / "only.pt")
    theirs = ci.TracInCP(model, train, [str(tmp_path / "only.pt")], batch_size=5)
    ours = ai.TracInCP(model, train, [str(tmp_path / "only.pt")], batch_size=5)
    _close(ours.influence(test), theirs.influence(test))


def test_tracincp_results_do_not_depend_on_the_batch_size_and_model_is_left_as_it_was(setup):
    model, train, folder, test = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    loss = nn.CrossEntropyLoss(reduction="none")
    a = ai.TracInCP(model, train, folder, load_with_lr, loss_fn=loss, batch_size=1).influence(test)
    b = ai.TracInCP(model, DataLoader(train, batch_size=50), folder, load_with_lr, loss_fn=loss).influence(test)
    _close(a, b, rtol=1e-9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and flags == [p.requires_grad for p in model.parameters()]
    model.eval()


# ============================================================================= TracInCPFast
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_tracincp_fast_equals_captum(setup, reduction):
    model, train, folder, test = setup
    fc = model[-1]
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction=reduction), batch_size=6)
    theirs, ours = ci.TracInCPFast(model, fc, train, folder, **kwargs), ai.TracInCPFast(model, fc, train, folder, **kwargs)
    _close(ours.influence(test), theirs.influence(test))
    for proponents in (True, False):
        mine, ref = ours.influence(test, k=3, proponents=proponents), theirs.influence(test, k=3, proponents=proponents)
        assert torch.equal(mine.indices, ref.indices)
        _close(mine.influence_scores, ref.influence_scores)
    _close(ours.self_influence(), theirs.self_influence())
    _close(ours.self_influence(outer_loop_by_checkpoints=True), theirs.self_influence(outer_loop_by_checkpoints=True))


def test_tracincp_fast_is_tracincp_on_the_last_weight(setup):
    """The closed form equals full TracIn on the last layer's weight (Captum's Fast leaves the bias out)."""
    model, train, folder, test = setup
    fast = ai.TracInCPFast(model, model[-1], train, folder, load_with_lr,
                           loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=8)
    full = ai.TracInCP(model, train, folder, load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction="none"),
                       batch_size=8)
    full._names = [n for n in full._names if n == f"{len(model) - 1}.weight"]
    _close(fast.influence(test), full.influence(test), rtol=1e-9)


# ===================================================================== TracInCPFastRandProj
def test_rand_proj_without_projection_equals_captum_and_fast(setup):
    model, train, folder, test = setup
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ci.TracInCPFastRandProj(model, model[-1], train, folder,
                                         nearest_neighbors=ai.TopKNearestNeighbors(), **kwargs)
    ours = ai.TracInCPFastRandProj(model, model[-1], train, folder, **kwargs)
    _close(ours.influence(test, k=None), theirs.influence(test, k=None))
    _close(ours.influence(test, k=None), ai.TracInCPFast(model, model[-1], train, folder, **kwargs).influence(test))
    mine, ref = ours.influence(test), theirs.influence(test)           # k=5 by default, as in Captum
    assert mine.indices.shape == (N_TEST, 5) and torch.equal(mine.indices, ref.indices)
    _close(mine.influence_scores, ref.influence_scores)
    with pytest.raises(NotImplementedError):
        ours.self_influence()


def test_rand_proj_is_unbiased_and_reproducible(setup):
    """Random projections keep TracIn scores in expectation: the mean over seeds approaches the exact scores."""
    model, train, folder, test = setup
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=23)
    exact = ai.TracInCPFast(model, model[-1], train, folder, **kwargs).influence(test)
    runs = [ai.TracInCPFastRandProj(model, model[-1], train, folder, projection_dim=16, seed=s, **kwargs)
            for s in range(40)]
    assert runs[0].src_intermediate_quantities.shape == (N_TRAIN, 3 * 3 * 4)
    same = ai.TracInCPFastRandProj(model, model[-1], train, folder, projection_dim=16, seed=0, **kwargs)
    assert torch.equal(same.influence(test, k=None), runs[0].influence(test, k=None))
    mean = torch.stack([r.influence(test, k=None) for r in runs]).mean(0)
    single = torch.corrcoef(torch.stack([runs[0].influence(test, k=None).flatten(), exact.flatten()]))[0, 1]
    corr = torch.corrcoef(torch.stack([mean.flatten(), exact.flatten()]))[0, 1]
    assert corr > 0.9 and corr > single          # 40 projections of 3 x 4 numbers: the mean approaches TracIn


# ========================================================================= Influence function
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_naive_influence_function_equals_captum(setup, reduction):
    model, train, folder, test = setup
    ckpt = sorted(__import__("glob").glob(folder + "/*"))[-1]
    layer = [str(len(model) - 1)]
    kwargs = dict(checkpoints_load_func=load_with_lr, layers=layer, loss_fn=nn.CrossEntropyLoss(reduction=reduction),
                  batch_size=6, sample_wise_grads_per_batch=reduction != "none", projection_dim=10)
    if reduction == "mean" and isinstance(model[0], nn.Conv2d):
        pytest.skip("sample-wise mode checked on the Linear model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ci.NaiveInfluenceFunction(model, train, ckpt, **kwargs)
    ours = ai.NaiveInfluenceFunction(model, train, ckpt, **kwargs)
    _close(ours.influence(test), theirs.influence(test), rtol=1e-4)
    mine, ref = ours.influence(test, k=3), theirs.influence(test, k=3)
    assert torch.equal(mine.indices, ref.indices)
    _close(ours.self_influence(), theirs.self_influence(), rtol=1e-4)


# ======================================================================= SimilarityInfluence
@pytest.mark.parametrize("metric,direction", [("cosine", "max"), ("euclidean", "min")])
def test_similarity_influence_equals_captum(setup, tmp_path, metric, direction):
    model, train, _, test = setup
    layers = ["0", str(len(model) - 1)]
    kw = {} if metric == "cosine" else dict(similarity_metric=ai.euclidean_distance)
    kw_c = {} if metric == "cosine" else dict(similarity_metric=ci._core.similarity_influence.euclidean_distance)
    ours = ai.SimilarityInfluence(model, layers, train, str(tmp_path / "a"), similarity_direction=direction,
                                  batch_size=5, **kw)
    theirs = ci.SimilarityInfluence(model, layers, train, str(tmp_path / "c"), similarity_direction=direction,
                                    batch_size=5, **kw_c)
    mine, ref = ours.influence(test[0], top_k=3), theirs.influence(test[0], top_k=3)
    for layer in layers:
        assert torch.equal(mine[layer][0], ref[layer][0])
        _close(mine[layer][1], ref[layer][1])
    again = ours.influence(test[0], top_k=4)     # from the cached activations; Captum fails here: its last
    assert torch.equal(again[layers[0]][0][:, :3], mine[layers[0]][0])  # batch (3 examples) is below top_k


def test_cosine_flags_zero_activations():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[0].bias.zero_()
    train = TensorDataset(torch.tensor([[1.0, 0.0], [-1.0, -1.0], [0.0, 2.0]]))
    import tempfile
    out = ai.SimilarityInfluence(net, "1", train, tempfile.mkdtemp(), batch_size=2).influence(
        torch.tensor([[3.0, 0.0]]), top_k=3)
    assert out["1"][0].tolist() == [[0, 2, 1]] and out["1"][1][0, -1] == -2
    assert out["zero_acts-1"].tolist() == [[0, 1]]


# ============================================================================== bad input
def test_bad_input_raises_clear_errors(setup, tmp_path):
    model, train, folder, test = setup
    loss = nn.CrossEntropyLoss(reduction="none")
    tracin = ai.TracInCP(model, train, folder, load_with_lr, loss_fn=loss)
    with pytest.raises(TypeError, match="inputs"):
        tracin.influence(test[0])
    with pytest.raises(ValueError, match="k must"):
        tracin.influence(test, k=0)
    with pytest.raises(ValueError, match="self_influence"):
        tracin.influence(None)
    with pytest.raises(ValueError, match="loss_fn.reduction"):
        ai.TracInCP(model, train, folder, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="loss_fn.reduction"):
        ai.TracInCP(model, train, folder, loss_fn=loss, sample_wise_grads_per_batch=True)
    with pytest.raises(ValueError, match="checkpoints"):
        ai.TracInCP(model, train, str(tmp_path / "empty"), loss_fn=loss)
    with pytest.raises(TypeError, match="batch_size"):
        ai.TracInCP(model, train, folder, loss_fn=loss, batch_size=None)
    with pytest.raises(ValueError, match="layers"):
        ai.TracInCP(model, train, folder, loss_fn=loss, layers=["nope"])
    with pytest.raises(ValueError, match="loss_fn is required"):
        ai.TracInCPFast(model, model[-1], train, folder)
    with pytest.raises(ValueError, match="final_fc_layer"):
        ai.TracInCPFast(model, "fc", train, folder, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
    with pytest.raises(ValueError, match="projection_dim"):
        ai.TracInCPFastRandProj(model, model[-1], train, folder, loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                                projection_dim=0)
    with pytest.raises(ValueError, match="similarity_direction"):
        ai.SimilarityInfluence(model, "0", train, str(tmp_path), similarity_direction="up")


# ==================================================================== Arnoldi influence function
def _arnoldi_pair(model, train, ckpt, **kwargs):
    from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction as CaptumArnoldi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = CaptumArnoldi(model, train, ckpt, **kwargs)
    return ai.ArnoldiInfluenceFunction(model, train, ckpt, **kwargs), theirs


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_arnoldi_influence_function_equals_captum_with_the_same_seed(setup, reduction):
    """Both draw the Arnoldi start vector from ``seed`` the same way, so the Krylov subspaces are the same and the
    scores agree; unlike Captum, the caller's global random state is left alone."""
    model, train, folder, test = setup
    if reduction == "mean" and isinstance(model[0], nn.Conv2d):
        pytest.skip("sample-wise mode checked on the Linear model")
    ckpt = sorted(__import__("glob").glob(folder + "/*"))[-1]
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction=reduction), batch_size=12,
                  sample_wise_grads_per_batch=reduction != "none", projection_dim=6, arnoldi_dim=12,
                  arnoldi_tol=1e-8, seed=3)
    own = DataLoader(train, batch_size=12, generator=torch.Generator())   # its iterators draw nothing global
    state = torch.random.get_rng_state()
    ai.ArnoldiInfluenceFunction(model, own, ckpt, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    ours, theirs = _arnoldi_pair(model, train, ckpt, **kwargs)
    assert ours.R.shape == (sum(p.numel() for p in model.parameters()), 6)
    _close(ours.influence(test), theirs.influence(test))
    for proponents in (True, False):
        mine, ref = ours.influence(test, k=3, proponents=proponents), theirs.influence(test, k=3, proponents=proponents)
        assert torch.equal(mine.indices, ref.indices)
        _close(mine.influence_scores, ref.influence_scores)
    _close(ours.self_influence(), theirs.self_influence())
    _close(ours.self_influence(test), theirs.self_influence(test))
    _close(ours.compute_intermediate_quantities(test), theirs.compute_intermediate_quantities(test))


def test_arnoldi_at_full_dimension_is_the_exact_influence_function(setup):
    """With a Krylov subspace as large as the parameter space the approximation is exact: the scores equal
    NaiveInfluenceFunction's (same ``hessian_reg`` and tolerance). Departure pinned: Captum drops the last basis
    vector when the iteration closes, so it misses one direction of the Hessian there."""
    model, train, folder, test = setup
    ckpt = sorted(__import__("glob").glob(folder + "/*"))[-1]
    layer = [str(len(model) - 1)]
    size = sum(p.numel() for p in model[-1].parameters())
    kwargs = dict(checkpoints_load_func=load_with_lr, layers=layer, loss_fn=nn.CrossEntropyLoss(reduction="none"),
                  batch_size=8, projection_dim=None, hessian_reg=1e-6, hessian_inverse_tol=1e-5)
    exact = ai.NaiveInfluenceFunction(model, train, ckpt, **kwargs).influence(test)
    ours = ai.ArnoldiInfluenceFunction(model, train, ckpt, arnoldi_dim=size + 10, arnoldi_tol=1e-7, **kwargs)
    _close(ours.influence(test), exact, rtol=1e-6)
    if isinstance(model[0], nn.Linear):                    # Captum's Arnoldi is slow at full dimension on the conv
        _, theirs = _arnoldi_pair(model, train, ckpt, arnoldi_dim=size + 10, arnoldi_tol=1e-7, **kwargs)
        gap = (theirs.influence(test) - exact).abs().max() / exact.abs().max()
        assert gap > 1e-3


def test_arnoldi_bad_input_and_model_left_as_it_was(setup):
    model, train, folder, test = setup
    if isinstance(model[0], nn.Conv2d):
        pytest.skip("argument checks need one model")
    ckpt = sorted(__import__("glob").glob(folder + "/*"))[-1]
    loss = nn.CrossEntropyLoss(reduction="none")
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=loss, batch_size=8)
    for argument, value in [("arnoldi_dim", 1), ("projection_dim", 0), ("arnoldi_tol", -1.0)]:
        with pytest.raises(ValueError, match=argument):
            ai.ArnoldiInfluenceFunction(model, train, ckpt, **kwargs, **{argument: value})
    with pytest.raises(TypeError, match="seed"):
        ai.ArnoldiInfluenceFunction(model, train, ckpt, seed="0", **kwargs)
    with pytest.raises(ValueError, match="hessian_inverse_tol"):
        ai.ArnoldiInfluenceFunction(model, train, ckpt, arnoldi_dim=5, hessian_inverse_tol=1e9, **kwargs)
    with pytest.raises(ValueError, match="loss_fn.reduction"):
        ai.ArnoldiInfluenceFunction(model, train, ckpt, checkpoints_load_func=load_with_lr,
                                    loss_fn=nn.CrossEntropyLoss())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    fn = ai.ArnoldiInfluenceFunction(model, train, ckpt, arnoldi_dim=8, projection_dim=4, **kwargs)
    with pytest.raises(ValueError, match="self_influence"):
        fn.influence(None)
    with pytest.raises(TypeError, match="inputs"):
        fn.influence(test[0])
    assert fn.influence(test).shape == (N_TEST, N_TRAIN)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and flags == [p.requires_grad for p in model.parameters()]
    model.eval()


def test_rand_proj_draws_captums_projection_for_the_same_seed(setup):
    """The seeded projection is Captum's, so scores and neighbours agree; the global random state is left alone."""
    model, train, folder, test = setup
    kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=6,
                  projection_dim=4, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ci.TracInCPFastRandProj(model, model[-1], train, folder,
                                         nearest_neighbors=ai.TopKNearestNeighbors(), **kwargs)
    own = DataLoader(train, batch_size=6, generator=torch.Generator())    # its iterators draw nothing global
    state = torch.random.get_rng_state()
    ours = ai.TracInCPFastRandProj(model, model[-1], own, folder, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)
    ours = ai.TracInCPFastRandProj(model, model[-1], train, folder, **kwargs)
    for mine, ref in zip(ours.projection_quantities, theirs.projection_quantities):
        assert mine.shape == (ref.shape[0], 2) and torch.equal(mine, ref)
    _close(ours.influence(test, k=None), theirs.influence(test, k=None))
    mine, ref = ours.influence(test, k=3, proponents=False), theirs.influence(test, k=3, proponents=False)
    assert torch.equal(mine.indices, ref.indices)


def test_tracincp_fast_reuses_the_training_factors_and_only_when_it_may(setup):
    """The second call on one object runs no forward pass on the training set (counted by a hook), with the same
    numbers; a shuffling loader, an exceeded cache budget and new checkpoints each recompute."""
    model, train, folder, test = setup
    calls = []
    handle = model[-1].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        kwargs = dict(checkpoints_load_func=load_with_lr, loss_fn=nn.CrossEntropyLoss(reduction="sum"))
        fast = ai.TracInCPFast(model, model[-1], train, folder, batch_size=6, **kwargs)
        first = fast.influence(test, k=3)
        train_rows = sum(calls) - 3 * N_TEST
        assert train_rows == 3 * N_TRAIN
        calls.clear()
        again, opponents, self_scores = fast.influence(test, k=3), fast.influence(test, k=3, proponents=False), \
            fast.self_influence()
        assert sum(calls) == 2 * 3 * N_TEST                          # the test batch only, twice
        assert torch.equal(again.indices, first.indices) and torch.equal(again.influence_scores, first.influence_scores)
        fresh = ai.TracInCPFast(model, model[-1], train, folder, batch_size=6, **kwargs)
        _close(self_scores, fresh.self_influence(), rtol=1e-12)
        assert torch.equal(opponents.indices, fresh.influence(test, k=3, proponents=False).indices)
        for other in (ai.TracInCPFast(model, model[-1], DataLoader(train, 6, shuffle=True), folder, **kwargs), fresh):
            if other is fresh:
                other.checkpoints = folder                           # new checkpoints: recompute
            else:
                other.influence(test)
            calls.clear()
            other.influence(test)
            assert sum(calls) == 3 * (N_TRAIN + N_TEST)
        small = ai.TracInCPFast(model, model[-1], train, folder, batch_size=6, **kwargs)
        small.cache_bytes = 100
        small.self_influence()
        calls.clear()
        small.self_influence()
        assert sum(calls) == 3 * N_TRAIN
    finally:
        handle.remove()
