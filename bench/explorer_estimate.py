"""The live explorer's time estimates against the real time, on chapter 02's model and photo (issue 24 item 7).

    python bench/explorer_estimate.py

Opens :func:`attrkit.insights.explore` on the penguin photo with chapter 02's classifier (offline: EfficientNet-Lite0),
starts with Saliency as the chapter does, then switches through every method and a few heavier settings, in the
order a learner would. Before each map it reads the estimate the status line would show
(:meth:`~attrkit.insights.widget.Explorer.estimate`), then times the map (computing and drawing). Prints both and
their ratio; the explorer shows estimates of a second or more, and aims at being within 2x. Measured, never asserted
(timings belong to no unit test).
"""
from __future__ import annotations

import time

import torch
from PIL import Image

from attrkit import assets, models
from attrkit.insights import explore

HEAVIER = [("IntegratedGradients", {"n_steps": 50}), ("Occlusion", {"window": 48, "stride": 24}),
           ("NoiseTunnel(IntegratedGradients)", {"n_steps": 10, "nt_samples": 3}), ("FeatureAblation", {"window": 16})]


def main() -> None:
    torch.manual_seed(0)
    clf = models.imagenet_classifier("auto")
    photo = Image.open(assets.path("penguin")).convert("RGB")
    w = explore(clf.model, photo, transform=clf.transform, classes=clf.categories, method="Saliency", debounce=10)
    w.cancel()
    w.debounce = 0  # from here on each change computes at once, in this thread
    print(f"{clf.name}, baseline: {w.baseline_name}")
    rows = []

    def step(method, settings=None):
        for name, value in (settings or {}).items():
            w.controls[name].value = value  # computes the current method at most (cached or cheap)
        estimate, start = w.estimate(method), time.perf_counter()
        if w.controls["method"].value == method:
            w.refresh()
        else:
            w.controls["method"].value = method
        real = time.perf_counter() - start
        label = method + "".join(f" {k}={v}" for k, v in (settings or {}).items())
        if estimate is None:
            print(f"{label:56s} no estimate (the first map)   real {real:7.2f} s")
            return
        rows.append(estimate / real)
        print(f"{label:56s} estimate {estimate:7.2f} s   real {real:7.2f} s   ratio {estimate / real:5.2f}")

    step("Saliency")
    for method in w.controls["method"].options:
        if method != "Saliency" and method != "NoiseTunnel(IntegratedGradients)":
            step(method)
    w.controls["method"].value = "Saliency"
    for method, settings in HEAVIER:
        step(method, settings)
    inside = sum(0.5 <= r <= 2 for r in rows)
    print(f"estimate/real: min {min(rows):.2f}, max {max(rows):.2f}; within 2x: {inside}/{len(rows)}")


if __name__ == "__main__":
    main()
