"""attrkit.zoo.annotations: the pet outlines and head boxes as masks, offline through the mirror."""
import os
from pathlib import Path

import pytest
import torch

from attrkit import assets
from attrkit.zoo import annotations

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MIRROR = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTRKIT_MIRROR", os.environ.get("ATTRKIT_MIRROR") or str(DEFAULT_MIRROR))
    monkeypatch.setenv("ATTRKIT_OFFLINE", "1")
    m = assets.mirror_dir()
    if m is None or not (m / "oxford-iiit-pet-sample" / "annotations" / "polygons.json").is_file():
        pytest.skip(f"no pet annotations in the mirror {m} (set ATTRKIT_MIRROR)")
    annotations._outlines.cache_clear()
    annotations._boxes.cache_clear()


def test_assets_are_named_and_cover_the_sample():
    for name in ("oxford-pets-outlines", "oxford-pets-head-boxes"):
        a = assets.get(name)
        assert a.licence and a.source and len(a.files) == 1
        assert a.files[0].urls[0].startswith("https://raw.githubusercontent.com/LTSACH/AILearningHub/38c4dfa4")
    sample = {Path(f.path).stem for f in assets.get("oxford-pets-sample").files}
    assert len(annotations.names()) == 370 and sample <= set(annotations.names())


def test_trimap_codes_and_native_size():
    t = annotations.trimap("Abyssinian_12.jpg")
    assert t.shape == (500, 335) and t.dtype == torch.uint8       # (height, width) of the 335x500 photo
    assert set(t.unique().tolist()) == {annotations.PET, annotations.BACKGROUND, annotations.BORDER}
    m = annotations.pet_mask("Abyssinian_12")
    assert m.dtype == torch.bool and torch.equal(m, t != annotations.BACKGROUND)
    assert 0.1 < m.float().mean() < 0.6


def test_head_box_mask_counts_inclusive_pixels_and_scales():
    assert annotations.head_box("Abyssinian_12") == (94, 83, 211, 190)
    h = annotations.head_mask("Abyssinian_12")
    assert int(h.sum()) == (211 - 94 + 1) * (190 - 83 + 1)
    ys, xs = torch.nonzero(h, as_tuple=True)
    assert (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) == (94, 83, 211, 190)
    small = annotations.head_mask("Abyssinian_12", size=(100, 67))   # a fifth of the size
    assert small.shape == (100, 67)
    assert abs(small.float().mean() - h.float().mean()) < 0.01


def test_resized_masks_line_up_with_the_full_size_ones():
    for name in ("Abyssinian_12", "beagle_10", "german_shorthaired_124", "Abyssinian_101"):
        full = annotations.pet_mask(name).float()[None, None]
        small = annotations.pet_mask(name, size=(64, 64)).float()
        down = torch.nn.functional.interpolate(full, size=(64, 64), mode="area")[0, 0]
        assert ((down > 0.5).float() != small).float().mean() < 0.05, name


def test_heads_lie_on_the_animal():
    inside = []
    for name in annotations.names()[::10]:
        h, m = annotations.head_mask(name, size=(64, 64)), annotations.pet_mask(name, size=(64, 64))
        inside.append(float((h & m).sum() / h.sum().clamp(min=1)))
    assert torch.tensor(inside).median() > 0.7


def test_bad_names_and_sizes():
    with pytest.raises(KeyError, match="no-such-pet"):
        annotations.pet_mask("no-such-pet")
    with pytest.raises(KeyError, match="no-such-pet"):
        annotations.head_mask("no-such-pet")
    with pytest.raises(ValueError, match="size"):
        annotations.pet_mask("Abyssinian_12", size=(0, 10))
    with pytest.raises(TypeError, match="name"):
        annotations.pet_mask(12)
