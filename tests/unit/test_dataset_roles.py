"""What each element of a batch is for (input, forward-only argument, label, ignored): the one splitter shared by
DataLoaderAttribution and attribute_dataset, role names, and clear errors for batches it cannot split."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import attrkit as ak
from attrkit.dataset import InputRole


def problem(n=9):
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return model, x, y


def run(attribution, data, store, **kw):
    return ak.attribute_dataset(attribution, data, store, show_progress=False, chunk_size=4, **kw)


def test_an_example_with_an_index_needs_named_roles_and_the_error_says_how(tmp_path):
    model, x, y = problem()
    data = TensorDataset(x, y, torch.arange(100, 109))
    with pytest.raises(ValueError, match=r"input_roles=\('input', 'label', 'ignore'\)"):
        run(ak.Saliency(model), data, tmp_path / "a.zarr")
    res = run(ak.Saliency(model), data, tmp_path / "b.zarr", input_roles=("input", "label", "ignore"))
    assert np.array_equal(res.targets[:], y.numpy())
    np.testing.assert_allclose(res.attributions[:], ak.Saliency(model).attribute(x, target=y).numpy(), rtol=1e-6)


def test_two_integer_no_forward_roles_ask_which_is_the_label(tmp_path):
    model, x, y = problem()
    data = TensorDataset(x, y, torch.arange(9))
    with pytest.raises(ValueError, match="'label'.*'ignore'"):
        run(ak.Saliency(model), data, tmp_path / "a.zarr", input_roles=(0, 2, 2))


def test_role_names_equal_captum_integers_in_both_entry_points(tmp_path):
    model, x, y = problem()
    data = TensorDataset(x, y)
    by_int = run(ak.Saliency(model), data, tmp_path / "a.zarr", input_roles=(0, 2))
    by_name = run(ak.Saliency(model), data, tmp_path / "b.zarr", input_roles=("input", "label"))
    assert np.array_equal(by_int.attributions[:], by_name.attributions[:])
    loader = DataLoader(data, batch_size=4)
    dla = ak.DataLoaderAttribution(ak.FeatureAblation(model))
    (a,) = dla.attribute(loader, input_roles=(InputRole.need_attr, InputRole.no_forward))
    (b,) = dla.attribute(loader, input_roles=("input", "ignore"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="input_roles"):
        dla.attribute(loader, input_roles=("input", "labels"))


class Dicts(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"features": self.x[i], "label": self.y[i]}


def test_a_dataset_of_dicts_is_a_clear_error(tmp_path):
    model, x, y = problem()
    with pytest.raises(TypeError, match=r"dict.*features.*label"):
        run(ak.Saliency(model), Dicts(x, y), tmp_path / "a.zarr")
    with pytest.raises(TypeError, match=r"dict.*features"):
        ak.DataLoaderAttribution(ak.FeatureAblation(model)).attribute(DataLoader(Dicts(x, y), batch_size=4))
