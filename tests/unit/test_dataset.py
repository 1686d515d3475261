"""The dataset path: DataLoaderAttribution against Captum 0.9, attribute_dataset (store contents, summaries
against Captum's ClassSummarizer, resume after a crash, sharding over ranks — simulated in-process and for real
under torchrun with gloo), and bad input."""
import json
import os
import socket
import subprocess
import sys

import captum.attr as ca
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import attrkit as ak
from attrkit.dataset import DatasetAttribution, InputRole, stream
from attrkit.dataset import store as disk

sys.path.insert(0, os.path.dirname(__file__))
import _torchrun_worker as worker  # noqa: E402


# =============================================================== DataLoaderAttribution vs Captum
def _problem():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(11, 4, generator=g), torch.randint(0, 3, (11,), generator=g)
    net = torch.nn.Linear(4, 3)
    with torch.no_grad():
        net.weight.copy_(torch.randn(3, 4, generator=g))
        net.bias.copy_(torch.randn(3, generator=g))
    return net, x, y


def accuracy_reduce(acc, out, batch):
    hits = (out.argmax(1) == batch[-1]).sum()
    return hits if acc is None else acc + hits


def score_sum(acc, out, batch):
    s = out.sum(0)
    return s if acc is None else acc + s


class TwoIn(torch.nn.Module):
    def forward(self, a, b, scale):
        return (a * torch.arange(1.0, 5.0)).sum(1, keepdim=True) + b.sum((1, 2)).unsqueeze(1) * scale


CASES = {
    "concat-default": dict(input_roles=(0, 2)),
    "accuracy": dict(input_roles=(0, 2), reduce=accuracy_reduce, to_metric=lambda c: c.double() / 11),
    "int-metric": dict(input_roles=(0, 2), reduce=accuracy_reduce),
    "vector-ppp2": dict(input_roles=(0, 2), reduce=score_sum, perturbations_per_pass=2),
    "grouped-gap-ppp3": dict(input_roles=(0, 2), reduce=score_sum, feature_mask=torch.tensor([[0, 3, 3, 0]]),
                             perturbations_per_pass=3),
    "baseline-tensor": dict(input_roles=(0, 2), reduce=score_sum, baselines=torch.tensor([[0.5, -1.0, 2.0, 0.0]])),
    "baseline-number": dict(input_roles=(0, 2), reduce=score_sum, baselines=1.5, perturbations_per_pass=4),
}


@pytest.mark.parametrize("return_input_shape", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_dataloader_attribution_equals_captum(case, return_input_shape):
    net, x, y = _problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    theirs = ca.DataLoaderAttribution(ca.FeatureAblation(net)).attribute(
        loader, return_input_shape=return_input_shape, **CASES[case])
    ours = ak.DataLoaderAttribution(ak.FeatureAblation(net)).attribute(
        loader, return_input_shape=return_input_shape, **CASES[case])
    theirs, ours = (theirs, ours) if isinstance(theirs, tuple) else ((theirs,), (ours,))
    assert type(theirs) is type(ours) and len(theirs) == len(ours)
    for a, b in zip(theirs, ours):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("return_input_shape", [True, False])
def test_dataloader_attribution_two_inputs_and_forward_only_role_equal_captum(return_input_shape):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 4, generator=g), torch.randn(7, 2, 3, generator=g)
    scale, y = torch.full((7,), 0.5), torch.zeros(7, dtype=torch.long)
    loader = DataLoader(TensorDataset(a, b, scale, y), batch_size=3)
    kw = dict(input_roles=(0, 0, 1, 2), reduce=score_sum, return_input_shape=return_input_shape,
              feature_mask=(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[[2], [3]]])), baselines=(0.0, torch.ones(1, 2, 3)))
    theirs = ca.DataLoaderAttribution(ca.FeatureAblation(TwoIn())).attribute(loader, **kw)
    ours = ak.DataLoaderAttribution(ak.FeatureAblation(TwoIn())).attribute(loader, **kw)
    theirs, ours = (theirs, ours) if isinstance(theirs, tuple) else ((theirs,), (ours,))
    for t, o in zip(theirs, ours):
        torch.testing.assert_close(o, t, rtol=0, atol=0)


def test_dataloader_attribution_single_tensor_loader_and_default_mask_3d_equal_captum():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, 3, generator=g)
    model = lambda t: (t * torch.arange(6.0).reshape(2, 3)).sum((1, 2)).unsqueeze(1)  # noqa: E731
    # Departure: Captum zips a plain-tensor batch with the roles (its rows become the inputs); we treat the
    # batch as the one input, so we compare with Captum on the same data yielded as 1-tuples.
    (theirs,) = ca.DataLoaderAttribution(ca.FeatureAblation(model)).attribute(
        DataLoader(TensorDataset(x), batch_size=4), reduce=score_sum)
    ours = ak.DataLoaderAttribution(ak.FeatureAblation(model)).attribute(DataLoader(x, batch_size=4), reduce=score_sum)
    assert torch.is_tensor(ours) and ours.shape == (1, 2, 3)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_dataloader_attribution_closed_form_and_progress(capsys):
    net, x, y = _problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    (attr,) = ak.DataLoaderAttribution(ak.FeatureAblation(net)).attribute(
        loader, input_roles=(0, InputRole.no_forward), reduce=score_sum, show_progress=True)
    # A linear model: removing feature j lowers the summed score of class c by w[c, j] * sum_i x[i, j].
    torch.testing.assert_close(attr, net.weight.detach() * x.sum(0), rtol=1e-5, atol=1e-5)
    assert "passes" in capsys.readouterr().err


def test_dataloader_attribution_bad_input():
    net, x, y = _problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    dla = ak.DataLoaderAttribution(ak.FeatureAblation(net))
    with pytest.raises(TypeError, match="attr_method"):
        ak.DataLoaderAttribution(ak.IntegratedGradients(net))
    with pytest.raises(ValueError, match="input_roles"):
        dla.attribute(loader, input_roles=(0,))
    with pytest.raises(ValueError, match="need_attr"):
        dla.attribute(loader, input_roles=(2, 2))
    with pytest.raises(ValueError, match=r"baselines\[0\].*first dimension 1"):
        dla.attribute(loader, input_roles=(0, 2), baselines=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"feature_mask\[0\].*first dimension 1"):
        dla.attribute(loader, input_roles=(0, 2), feature_mask=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        dla.attribute(loader, input_roles=(0, 2), feature_mask=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="broadcast"):
        dla.attribute(loader, input_roles=(0, 2), feature_mask=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="no batch"):
        dla.attribute(DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4))
    with pytest.raises(TypeError, match="must be a Tensor"):
        dla.attribute(loader, input_roles=(0, 2), reduce=lambda acc, out, b: 1.0)
    with pytest.raises(ValueError, match="perturbations_per_pass"):
        dla.attribute(loader, input_roles=(0, 2), perturbations_per_pass=0)
    with pytest.raises(NotImplementedError):
        dla.attribute_future()


# =============================================================== attribute_dataset
def read(res):
    arrays = {k: np.asarray(getattr(res, k)[:]) for k in ("targets", "predictions", "index")}
    arrays["attributions"] = np.asarray(res.attributions[:])
    return arrays


def assert_same_store(a, b):
    ra, rb = read(a), read(b)
    for k in ra:
        assert ra[k].dtype == rb[k].dtype and np.array_equal(ra[k], rb[k]), k
    assert a.settings == b.settings
    assert_same_summary(a.summary, b.summary)
    assert a.class_summaries.keys() == b.class_summaries.keys()
    for k in a.class_summaries:
        assert_same_summary(a.class_summaries[k], b.class_summaries[k])


def assert_same_summary(s, t):
    assert s.keys() == t.keys()
    for k in s:
        assert torch.equal(s[k], t[k]) if torch.is_tensor(s[k]) else s[k] == t[k], k


def test_store_holds_what_a_direct_call_gives(tmp_path):
    model, data = worker.problem(10)
    res = worker.run(tmp_path / "s.zarr", 10, 4, "ig")
    x, y = data.tensors
    direct = ak.IntegratedGradients(model).attribute(x, target=y, n_steps=8)
    assert res.complete and len(res) == 10 and res.n_chunks == 3
    np.testing.assert_allclose(res.attributions[:], direct.numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(res.targets[:], y.numpy())
    assert np.array_equal(res.predictions[:], model(x).argmax(1).numpy())
    assert np.array_equal(res.index[:], np.arange(10))
    assert res.settings["method"] == "IntegratedGradients" and res.settings["method_args"] == {"n_steps": 8}
    reopened = ak.dataset.open_store(tmp_path / "s.zarr")
    assert reopened.attributions.chunks == (4, 5)
    assert_same_summary(reopened.summary, res.summary)


def test_running_summaries_match_captum_class_summarizer(tmp_path):
    res = worker.run(tmp_path / "s.zarr", 13, 5, "ig")
    attrs, targets = torch.from_numpy(res.attributions[:]), torch.from_numpy(res.targets[:])
    captum = ca.ClassSummarizer(ca.CommonStats())
    captum.update(attrs.abs(), targets.tolist())
    for k, v in captum.summary[0].items():
        torch.testing.assert_close(res.summary[k], v, rtol=1e-5, atol=1e-7)
    assert sorted(res.class_summaries) == sorted(captum.class_summaries)
    for c, summ in captum.class_summaries.items():
        for k, v in summ[0].items():
            torch.testing.assert_close(res.class_summaries[c][k], v, rtol=1e-5, atol=1e-7)


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("method", ["ig", "kernelshap"])
def test_resume_after_a_crash_gives_an_identical_store(tmp_path, monkeypatch, method):
    whole = worker.run(tmp_path / "whole.zarr", 11, 3, method)
    real, calls = disk.write_marker, []

    def crash_on_third(store, chunk, *rest):
        calls.append(chunk)
        if len(calls) == 3:  # the chunk's data and summary are written, its marker is not
            raise Crash("killed")
        real(store, chunk, *rest)

    monkeypatch.setattr(disk, "write_marker", crash_on_third)
    with pytest.raises(Crash):
        worker.run(tmp_path / "resumed.zarr", 11, 3, method)
    half = DatasetAttribution(tmp_path / "resumed.zarr")
    assert half.completed_chunks == [0, 1] and not half.complete
    with pytest.raises(RuntimeError, match="incomplete"):
        half.attributions
    monkeypatch.setattr(disk, "write_marker", real)
    computed = []
    monkeypatch.setattr(stream._Run, "run_chunk", lambda self, c, b: (computed.append(c), _run(self, c, b)))
    resumed = worker.run(tmp_path / "resumed.zarr", 11, 3, method)
    assert computed == [2, 3]  # only what was not done
    assert_same_store(whole, resumed)


_run = stream._Run.run_chunk


@pytest.mark.slow
def test_resume_after_sigkill_gives_an_identical_store(tmp_path):
    """A real crash: the process is killed (SIGKILL) after a few chunks, then the same call resumes."""
    import time
    whole = worker.run(tmp_path / "whole.zarr", 40, 4, "kernelshap")
    store = tmp_path / "killed.zarr"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))]
                                          + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "_torchrun_worker.py"),
                             str(store), "40", "4", "kernelshap", "0.4"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = store / "_done"
            if done.is_dir() and len([f for f in os.listdir(done) if f.endswith(".json")]) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished (or failed) before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.kill()
    finally:
        proc.wait(timeout=60)
    half = DatasetAttribution(store)
    assert 3 <= len(half.completed_chunks) < 10 and not half.complete
    assert_same_store(whole, worker.run(store, 40, 4, "kernelshap"))


@pytest.mark.parametrize("world", [2, 3, 5])
def test_any_number_of_ranks_gives_the_single_process_store(tmp_path, monkeypatch, world):
    """Ranks simulated one after another in this process; the summaries are merged once all are done."""
    single = worker.run(tmp_path / "single.zarr", 11, 3, "kernelshap")
    merge, computed = stream._Run.merge_summaries, {}
    monkeypatch.setattr(stream._Run, "merge_summaries", lambda self: None)
    for rank in range(world):
        monkeypatch.setattr(stream, "rank_world", lambda r=rank: (r, world))
        monkeypatch.setattr(stream._Run, "run_chunk",
                            lambda self, c, b, r=rank: (computed.setdefault(c, r), _run(self, c, b)))
        worker.run(tmp_path / "sharded.zarr", 11, 3, "kernelshap")
    assert computed == {c: c % world for c in range(4)}
    monkeypatch.setattr(stream._Run, "merge_summaries", merge)
    monkeypatch.setattr(stream, "rank_world", lambda: (0, world))
    sharded = worker.run(tmp_path / "sharded.zarr", 11, 3, "kernelshap")  # rank 0: all done, merges
    assert_same_store(single, sharded)


def test_a_store_with_other_settings_is_an_error_and_overwrite_replaces_it(tmp_path):
    worker.run(tmp_path / "s.zarr", 10, 4, "ig")
    model, data = worker.problem(10)
    with pytest.raises(ValueError, match="other settings.*method"):
        ak.attribute_dataset(ak.Saliency(model), data, tmp_path / "s.zarr", chunk_size=4, show_progress=False)
    with pytest.raises(ValueError, match="other settings.*method_args"):
        ak.attribute_dataset(ak.IntegratedGradients(model), data, tmp_path / "s.zarr", chunk_size=4,
                             attribute_kwargs={"n_steps": 9}, show_progress=False)
    res = ak.attribute_dataset(ak.Saliency(model), data, tmp_path / "s.zarr", chunk_size=4, overwrite=True,
                               show_progress=False)
    assert res.settings["method"] == "Saliency" and res.complete
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an attribute_dataset store"):
        ak.attribute_dataset(ak.Saliency(model), data, tmp_path / "other", show_progress=False)


def test_unlabeled_data_needs_another_target(tmp_path):
    model, data = worker.problem(6)
    unlabeled = TensorDataset(data.tensors[0])
    with pytest.raises(ValueError, match="unlabeled"):
        ak.attribute_dataset(ak.Saliency(model), unlabeled, tmp_path / "a.zarr", show_progress=False)
    assert not (tmp_path / "a.zarr").exists()  # nothing written
    res = ak.attribute_dataset(ak.Saliency(model), DataLoader(unlabeled, batch_size=4), tmp_path / "b.zarr",
                               target="predicted", show_progress=False)
    assert np.array_equal(res.targets[:], res.predictions[:]) and res.chunk_size == 4


def test_roles_extra_args_indices_and_convergence_delta(tmp_path):
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(9, 4, generator=g), torch.randn(9, 2, 3, generator=g)
    data = TensorDataset(a, b, torch.full((9,), 0.5), torch.zeros(9, dtype=torch.long))
    res = ak.attribute_dataset(ak.IntegratedGradients(TwoIn()), data, tmp_path / "s.zarr", chunk_size=2,
                               input_roles=(0, 0, 1, 2), indices=[8, 1, 3, 5, 0], show_progress=False,
                               attribute_kwargs={"return_convergence_delta": True, "n_steps": 5})
    attrs = res.attributions
    assert isinstance(attrs, tuple) and attrs[0].shape == (5, 4) and attrs[1].shape == (5, 2, 3)
    idx = torch.tensor([8, 1, 3, 5, 0])
    direct, delta = ak.IntegratedGradients(TwoIn()).attribute(
        (a[idx], b[idx]), target=0, additional_forward_args=(torch.full((5,), 0.5),), n_steps=5,
        return_convergence_delta=True)
    np.testing.assert_allclose(attrs[1][:], direct[1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.convergence_delta[:], delta.numpy(), atol=1e-5)
    assert np.array_equal(res.index[:], idx.numpy())
    assert isinstance(res.summary, list) and len(res.summary) == 2


def test_attribute_dataset_bad_input(tmp_path):
    model, data = worker.problem(6)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(*data.tensors))

    with pytest.raises(TypeError, match="map-style"):
        ak.attribute_dataset(ak.Saliency(model), Stream(), tmp_path / "a.zarr", show_progress=False)
    with pytest.raises(ValueError, match="target"):
        ak.attribute_dataset(ak.Saliency(model), data, tmp_path / "a.zarr", attribute_kwargs={"target": 1},
                             show_progress=False)
    with pytest.raises(ValueError, match="input_roles"):
        ak.attribute_dataset(ak.Saliency(model), data, tmp_path / "a.zarr", input_roles=(0,), show_progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        ak.attribute_dataset(ak.Saliency(model), data, tmp_path / "a.zarr", chunk_size=-1, show_progress=False)
    with pytest.raises(FileNotFoundError):
        DatasetAttribution(tmp_path / "nothing")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_write_the_single_process_store(tmp_path):
    """A real 2-process torchrun (gloo, CPU, 127.0.0.1) over 11 examples in chunks of 3: 4 chunks, 2 per rank,
    the last one short."""
    single = worker.run(tmp_path / "single.zarr", 11, 3, "kernelshap")
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1",
               PYTHONPATH=os.pathsep.join([os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))]
                                          + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           os.path.join(os.path.dirname(__file__), "_torchrun_worker.py"), str(tmp_path / "dist.zarr"), "11", "3",
           "kernelshap"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0/2: complete=True" in proc.stdout and "rank 1/2: complete=True" in proc.stdout
    assert_same_store(single, DatasetAttribution(tmp_path / "dist.zarr"))


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_examples():
    """bench/dataset_memory.py in fresh processes: 1,000 vs 4,000 examples of 3x64x64 (47 vs 188 MiB of
    attributions). Resident memory wobbles with the allocator, but must not grow with what is written."""
    bench = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "dataset_memory.py")
    runs = {}
    for n in (1000, 4000):
        out = subprocess.run([sys.executable, bench, "--child", str(n), "--side", "64", "--chunk-size", "64"],
                             capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert out.returncode == 0, out.stderr[-2000:]
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
    growth = {n: round(r["growth_mib"], 1) for n, r in runs.items()}
    extra = runs[4000]["in_ram_mib"] - runs[1000]["in_ram_mib"]
    print(f"resident memory growth during the run: {growth} MiB; 3,000 more attributions are {extra:.0f} MiB")
    assert growth[4000] - growth[1000] < 0.3 * extra


def test_layer_methods_store_the_layer_shaped_attributions(tmp_path):
    from attrkit.testing import SmallCNN
    model = SmallCNN()
    data = TensorDataset(torch.randn(7, 1, 8, 8), torch.randint(0, 3, (7,)))
    res = ak.attribute_dataset(ak.LayerGradCam(model, model.conv2), data, tmp_path / "g.zarr", chunk_size=3,
                               show_progress=False)
    direct = ak.LayerGradCam(model, model.conv2).attribute(data.tensors[0], target=data.tensors[1])
    assert res.attributions.shape == (7, 1, 3, 3) and res.summary["mean"].shape == (1, 3, 3)
    np.testing.assert_allclose(res.attributions[:], direct.detach().numpy(), atol=1e-6)
