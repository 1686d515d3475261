"""A ready explorer: the ImageNet classifier of :mod:`attrkit.zoo.models` on the bundled penguin and swan photos.

Run ``python -m attrkit.insights.example`` (``--port N``, ``--no-browser``, ``--model NAME``); Ctrl-C stops it.
Offline it uses EfficientNet-Lite0 and the photos from ``$ATTRKIT_MIRROR``.
"""
from __future__ import annotations

import argparse

import torch

from .api import AttributionVisualizer, Batch, ImageFeature


def zero_baseline(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def build(model: str = "auto") -> AttributionVisualizer:
    """The example visualizer: photos as [0, 1] tensors, the model's normalisation as the input transform."""
    from PIL import Image
    from torchvision import transforms as T

    from ..zoo import assets, models

    clf = models.imagenet_classifier(model)
    to_picture = T.Compose([t for t in clf.transform.transforms if not isinstance(t, T.Normalize)])
    photo = lambda name: to_picture(Image.open(assets.path(name)).convert("RGB"))[None]  # noqa: E731
    dataset = [Batch(photo("penguin"), torch.tensor([clf.categories.index("king penguin")])),
               Batch(photo("swan"), None)]  # ImageNet has no white swan: its true class stays unknown
    return AttributionVisualizer(
        models=[clf.model], classes=clf.categories, score_func=lambda out: out.softmax(-1),
        features=[ImageFeature("Photo", baseline_transforms=[zero_baseline],
                               input_transforms=[T.Normalize(clf.mean, clf.std)])],
        dataset=dataset)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--model", default="auto", help="auto, resnet18, resnet50 or efficientnet_lite0")
    args = parser.parse_args(argv)
    print("Loading the model and the photos…")
    build(args.model).serve(port=args.port, open_browser=not args.no_browser, blocking=True)


if __name__ == "__main__":
    main()
