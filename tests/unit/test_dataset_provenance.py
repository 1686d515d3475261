"""attribute_dataset's store knows what it was computed from: the data (a hash of examples per chunk), the model
(its parameters, buffers and train/eval mode, also behind a lambda), the method and its settings, and which
examples the loader yields (its sampler). A store computed from anything else is never returned nor resumed
into: the error names what changed. Also: resuming a store whose creation was interrupted, and bad store paths."""
import os
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import (DataLoader, Dataset, SubsetRandomSampler, TensorDataset, WeightedRandomSampler)

import attrkit as ak

sys.path.insert(0, os.path.dirname(__file__))
import _torchrun_worker as worker  # noqa: E402


def problem(n=12):
    return worker.problem(n)  # a small MLP and (x, y) examples


def run(attribution, data, store, **kw):
    kw.setdefault("chunk_size", 4)
    return ak.attribute_dataset(attribution, data, store, show_progress=False, **kw)


class Crash(RuntimeError):
    pass


class Transformed(Dataset):
    """A dataset with a transform, which can crash at a given position (an interrupted run)."""

    def __init__(self, base, scale=1.0, crash_at=None):
        self.base, self.scale, self.crash_at = base, scale, crash_at

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.crash_at is not None and i >= self.crash_at:
            raise Crash("killed")
        x, y = self.base[i]
        return x * self.scale, y


# =============================================================== the data
def test_new_data_of_the_same_length_is_refused_not_answered_with_old_results(tmp_path):
    model, data = problem()
    run(ak.Saliency(model), data, tmp_path / "s.zarr")
    x, y = data.tensors
    other = TensorDataset(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), y)
    with pytest.raises(ValueError, match=r"data.*changed"):
        run(ak.Saliency(model), other, tmp_path / "s.zarr")
    again = run(ak.Saliency(model), data, tmp_path / "s.zarr")  # the same data: the store is returned
    assert again.complete


def test_resume_after_the_transform_changed_is_refused(tmp_path):
    model, data = problem()
    with pytest.raises(Crash):
        run(ak.Saliency(model), Transformed(data, crash_at=6), tmp_path / "s.zarr")
    with pytest.raises(ValueError, match=r"data.*changed"):
        run(ak.Saliency(model), Transformed(data, scale=2.0), tmp_path / "s.zarr")
    resumed = run(ak.Saliency(model), Transformed(data), tmp_path / "s.zarr")
    whole = run(ak.Saliency(model), Transformed(data), tmp_path / "whole.zarr")
    assert np.array_equal(resumed.attributions[:], whole.attributions[:])


def test_a_later_example_that_changed_is_found_in_the_done_chunks(tmp_path):
    model, data = problem()
    run(ak.Saliency(model), data, tmp_path / "s.zarr")
    x, y = data.tensors
    changed = x.clone()
    changed[8] += 1.0  # the first example of chunk 2 only
    with pytest.raises(ValueError, match=r"data.*changed.*example 8.*chunk 2"):
        run(ak.Saliency(model), TensorDataset(changed, y), tmp_path / "s.zarr")


class Padded(Dataset):
    """Examples of different lengths, padded to the longest of a batch by the collate function."""

    def __init__(self, n=10):
        self.lengths = [2 + i % 3 for i in range(n)]

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return torch.arange(1.0, self.lengths[i] + 1.0) / (i + 1), i % 2


def pad(examples):
    width = max(len(x) for x, _ in examples)
    xs = torch.stack([torch.nn.functional.pad(x, (0, width - len(x))) for x, _ in examples])
    return xs, torch.tensor([y for _, y in examples])


def test_a_padding_collate_function_does_not_look_like_changed_data(tmp_path):
    model = lambda x: torch.stack([x.sum(1), -x.sum(1)], 1)  # noqa: E731
    loader = DataLoader(Padded(), batch_size=4, collate_fn=pad)
    first = run(ak.Saliency(model), loader, tmp_path / "s.zarr", chunk_size=None)
    again = run(ak.Saliency(model), loader, tmp_path / "s.zarr", chunk_size=None)
    assert first.complete and again.complete


# =============================================================== the model
def test_changed_weights_behind_a_lambda_are_refused(tmp_path):
    model, data = problem()
    run(ak.Saliency(lambda x: model(x)), data, tmp_path / "s.zarr")
    assert run(ak.Saliency(lambda x: model(x)), data, tmp_path / "s.zarr").complete  # same weights: fine
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(ValueError, match="model"):
        run(ak.Saliency(lambda x: model(x)), data, tmp_path / "s.zarr")


def test_changed_weights_of_a_bound_forward_are_refused(tmp_path):
    model, data = problem()
    run(ak.Saliency(model.forward), data, tmp_path / "s.zarr")
    with torch.no_grad():
        model[2].bias.add_(1.0)
    with pytest.raises(ValueError, match="model"):
        run(ak.Saliency(model.forward), data, tmp_path / "s.zarr")


def test_a_model_switched_to_train_mode_is_refused(tmp_path):
    model, data = problem()
    run(ak.Saliency(model.eval()), data, tmp_path / "s.zarr")
    with pytest.raises(ValueError, match=r"model_mode.*train"):
        run(ak.Saliency(model.train()), data, tmp_path / "s.zarr")


class Opaque:
    """A callable the store cannot see into (no nn.Module, no code to hash)."""

    def __init__(self, model):
        self._m = {"m": model}

    def __call__(self, x):
        return self._m["m"](x)


def test_a_model_that_cannot_be_fingerprinted_is_not_resumed(tmp_path):
    model, data = problem()
    first = run(ak.Saliency(Opaque(model)), data, tmp_path / "s.zarr")
    assert first.complete
    with pytest.raises(ValueError, match="fingerprint"):
        run(ak.Saliency(Opaque(model)), data, tmp_path / "s.zarr")
    assert run(ak.Saliency(Opaque(model)), data, tmp_path / "s.zarr", overwrite=True).complete


# =============================================================== the method and its settings
def test_another_summarize_function_is_refused(tmp_path):
    model, data = problem()
    run(ak.Saliency(model), data, tmp_path / "s.zarr", summarize=lambda a: a.abs())
    with pytest.raises(ValueError, match="summarize"):
        run(ak.Saliency(model), data, tmp_path / "s.zarr", summarize=lambda a: a ** 2)


def test_another_constructor_setting_of_the_method_is_refused(tmp_path):
    model, data = problem()
    run(ak.IntegratedGradients(model), data, tmp_path / "s.zarr", attribute_kwargs={"n_steps": 4})
    with pytest.raises(ValueError, match="method_config"):
        run(ak.IntegratedGradients(model, multiply_by_inputs=False), data, tmp_path / "s.zarr",
            attribute_kwargs={"n_steps": 4})


# =============================================================== the loader's sampler
def test_a_subset_sampler_attributes_exactly_what_the_loader_yields(tmp_path):
    model, data = problem(30)
    chosen = [25, 3, 17, 8, 11, 0, 29]
    loader = DataLoader(data, batch_size=3, sampler=SubsetRandomSampler(chosen))
    res = run(ak.Saliency(model), loader, tmp_path / "s.zarr", chunk_size=None)
    assert len(res) == len(chosen) and sorted(res.index[:].tolist()) == sorted(chosen)
    x, y = data.tensors
    idx = torch.as_tensor(res.index[:])
    direct = ak.Saliency(model).attribute(x[idx], target=y[idx])
    np.testing.assert_allclose(res.attributions[:], direct.numpy(), rtol=1e-6)


def test_a_shuffling_loader_attributes_every_example_once(tmp_path):
    model, data = problem(10)
    res = run(ak.Saliency(model), DataLoader(data, batch_size=4, shuffle=True), tmp_path / "s.zarr", chunk_size=None)
    assert res.index[:].tolist() == list(range(10))


def test_drop_last_drops_the_last_short_batch(tmp_path):
    model, data = problem(10)
    res = run(ak.Saliency(model), DataLoader(data, batch_size=4, drop_last=True), tmp_path / "s.zarr", chunk_size=None)
    assert res.index[:].tolist() == list(range(8))


def test_a_sampler_that_draws_with_replacement_is_refused(tmp_path):
    model, data = problem(10)
    loader = DataLoader(data, batch_size=4, sampler=WeightedRandomSampler(torch.ones(10), 10, replacement=True))
    with pytest.raises(ValueError, match="sampler"):
        run(ak.Saliency(model), loader, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


# =============================================================== interrupted creation and bad store paths
def test_a_store_interrupted_before_its_arrays_exist_can_be_resumed(tmp_path, monkeypatch):
    import zarr
    model, data = problem()
    real = zarr.Group.create_array

    def crash(self, *a, **k):
        raise Crash("killed while creating the arrays")

    monkeypatch.setattr(zarr.Group, "create_array", crash)
    with pytest.raises(Crash):
        run(ak.Saliency(model), data, tmp_path / "s.zarr")
    monkeypatch.setattr(zarr.Group, "create_array", real)
    resumed = run(ak.Saliency(model), data, tmp_path / "s.zarr")
    whole = run(ak.Saliency(model), data, tmp_path / "whole.zarr")
    assert resumed.complete and np.array_equal(resumed.attributions[:], whole.attributions[:])


def test_a_regular_file_as_store_is_a_value_error(tmp_path):
    model, data = problem()
    path = tmp_path / "results.txt"
    path.write_text("mine")
    with pytest.raises(ValueError, match="store.*file"):
        run(ak.Saliency(model), data, path)
    assert path.read_text() == "mine"
