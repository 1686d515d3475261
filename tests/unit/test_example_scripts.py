"""examples/explain_image_folder.py runs end to end on a few mirrored photos (offline classifier, Saliency)."""
import importlib.util
import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_explain_image_folder_smoke(tmp_path, monkeypatch, capsys):
    script = _load("explain_image_folder")
    folder = script.default_folder()
    if not folder.is_dir():
        pytest.skip(f"no mirrored photos at {folder} (set ATTRKIT_MIRROR)")
    monkeypatch.setenv("ATTRKIT_OFFLINE", "1")
    store = tmp_path / "photos.zarr"
    args = [str(folder), "--store", str(store), "--limit", "2", "--chunk-size", "1", "--method", "saliency",
            "--model", "efficientnet_lite0", "--no-progress"]
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert "done in" in out and "mean |attribution| map" in out
    from attrkit.dataset import open_store
    res = open_store(store)
    assert res.complete and res.attributions.shape == (2, 3, 224, 224)
    assert np.array_equal(res.index[:], [0, 1]) and res.summary["mean"].shape == (224, 224)
    assert script.main(args) == 0  # run again: resumes a complete store, recomputes nothing
