"""Explain every photo of a folder with an ImageNet classifier, streaming the attributions to a zarr store.

Each image is classified by the offline ImageNet classifier (``attrkit.models.imagenet_classifier``: ResNet-18 when
its weights are cached, else EfficientNet-Lite0, whose weights ship with a pip package) and explained for its
predicted class with Integrated Gradients (or Saliency / Occlusion). ``attrkit.attribute_dataset`` writes the
per-image attributions, predictions and file index to the store, keeps running summaries (the mean |attribution|
map overall and per predicted class), and resumes an interrupted run where it stopped.

Single process (CPU or one GPU)::

    python examples/explain_image_folder.py --limit 8 --store /tmp/pets.zarr

Several processes on one machine with ``torchrun`` (gloo on CPU; nccl with one GPU per process, each rank on
``cuda:LOCAL_RANK``); each rank explains its share of the images and writes its own chunks of the same store::

    torchrun --nproc_per_node=2 examples/explain_image_folder.py --limit 8 --store /tmp/pets.zarr

The folder defaults to the Oxford-IIIT Pet sample under ``$ATTRKIT_MIRROR`` (``oxford-iiit-pet-sample/images``),
else ``$ATTRKIT_MIRROR/images``; pass any folder of .jpg/.png files instead. Read the store back with
``attrkit.dataset.open_store(path)`` (``.attributions[i]``, ``.predictions``, ``.index``, ``.summary``).
Run the same command again after a crash (or Ctrl-C): finished chunks are kept. ``--overwrite`` starts afresh.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from attrkit import IntegratedGradients, Occlusion, Saliency
from attrkit.dataset import attribute_dataset, init_distributed
from attrkit.models import imagenet_classifier

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ImageFolder(Dataset):
    """The image files of ``folder`` in sorted order, preprocessed by ``transform`` (no labels)."""

    def __init__(self, folder: Path, transform, limit: int | None = None):
        self.files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)[:limit]
        if not self.files:
            raise SystemExit(f"no images ({', '.join(sorted(SUFFIXES))}) in {folder}")
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB"))


def default_folder() -> Path:
    mirror = Path(os.environ.get("ATTRKIT_MIRROR", "data"))
    pets = mirror / "oxford-iiit-pet-sample" / "images"
    return pets if pets.is_dir() else mirror / "images"


def method(name: str, model, n_steps: int):
    if name == "ig":
        return IntegratedGradients(model), {"n_steps": n_steps, "internal_batch_size": 16}
    if name == "saliency":
        return Saliency(model), {"abs": True}
    if name == "occlusion":
        return Occlusion(model), {"sliding_window_shapes": (3, 32, 32), "strides": (3, 16, 16)}
    raise SystemExit(f"unknown method {name!r}")


def channel_abs_sum(attr: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W): the |attribution| map the running summaries keep."""
    return attr.abs().sum(1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", type=Path, default=None, help="folder of images (default: the mirrored pets)")
    p.add_argument("--store", default="image_attributions.zarr", help="zarr store to write (resumed if it exists)")
    p.add_argument("--method", choices=["ig", "saliency", "occlusion"], default="ig")
    p.add_argument("--model", default="auto", help="auto, resnet18, resnet50 or efficientnet_lite0")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--chunk-size", type=int, default=4, help="images per chunk (one attribute() call each)")
    p.add_argument("--n-steps", type=int, default=32, help="integration steps for --method ig")
    p.add_argument("--overwrite", action="store_true", help="replace a store holding another run")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    rank, world, device = init_distributed()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    clf = imagenet_classifier(args.model)
    model = clf.model.to(device).eval()
    folder = args.folder or default_folder()
    images = ImageFolder(folder, clf.transform, args.limit)
    attribution, kwargs = method(args.method, model, args.n_steps)
    if rank == 0:
        print(f"{clf.name} on {device}, {world} process(es): explaining {len(images)} images of {folder} "
              f"with {type(attribution).__name__} -> {args.store}", flush=True)
    start = time.perf_counter()
    result = attribute_dataset(attribution, images, args.store, target="predicted", chunk_size=args.chunk_size,
                               attribute_kwargs=kwargs, summarize=channel_abs_sum, overwrite=args.overwrite,
                               show_progress=not args.no_progress)
    if rank == 0:
        seconds = time.perf_counter() - start
        print(f"done in {seconds:.1f} s: {result}")
        predictions, index = result.predictions[:], result.index[:]
        for row in range(len(result)):
            heat = result.attributions[row]  # lazily reads one chunk
            print(f"  {images.files[index[row]].name:32s} {clf.categories[int(predictions[row])]:28s} "
                  f"total |attribution| {abs(heat).sum():.3g}")
        mean_map = result.summary["mean"]
        print(f"mean |attribution| map over all images: shape {tuple(mean_map.shape)}, "
              f"peak at {divmod(int(mean_map.argmax()), mean_map.shape[-1])}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
