"""attrkit.robust against captum.robust, in one process, on the same model, inputs and attacks.

    python bench/robust.py                 # table on stdout
    python bench/robust.py --repeats 5 --threads 2

Cases: ``AttackComparator`` over everyday perturbations (noise with several attempts, blur, brightness,
flip) and ``MinParamPerturbation``'s linear search for the smallest noise level that flips a prediction.
Both libraries run at their defaults (Captum: one perturbed batch per forward pass; attrkit: batched). The
attacks themselves are the same callables and cost the same in both; the difference is the forward passes and
the bookkeeping. Random attacks are seeded identically, and each case checks that both give the same result.
Timings are medians of interleaved repeats; they are measured, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys


def _threads(argv) -> int:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 2


os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads(sys.argv[1:]))

import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import captum.robust as C  # noqa: E402

import attrkit.robust as A  # noqa: E402
from attrkit.testing import MLP, TinyImageCNN  # noqa: E402


def _noise(x, std=0.1):
    return x + std * torch.randn_like(x)


def _blur(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _brightness(x, factor=1.3):
    return (x * factor).clamp(0, 1)


def _accuracy(out, target):
    return (out.argmax(dim=1) == target).float()


def comparator_case(lib, model, images, labels):
    comparator = lib.AttackComparator(model, _accuracy)
    comparator.add_attack(_noise, "noise", num_attempts=10, attack_kwargs={"std": 0.2})
    comparator.add_attack(_blur, "blur")
    comparator.add_attack(_brightness, "brightness")
    comparator.add_attack(lambda x: torch.flip(x, dims=[-1]), "flip")

    def run():
        torch.manual_seed(0)
        comparator.reset()
        for chunk in range(0, images.shape[0], 8):  # a data loader of 8-image batches
            comparator.evaluate(images[chunk:chunk + 8], target=labels[chunk:chunk + 8])
        return comparator.summary()
    return run


def tabular_case(lib, model, rows, labels):
    comparator = lib.AttackComparator(model, _accuracy)
    comparator.add_attack(_noise, "noise", num_attempts=20, attack_kwargs={"std": 0.5})
    comparator.add_attack(lambda x: x.round(), "rounded")
    comparator.add_attack(lambda x: x.clamp(-1, 1), "clipped")

    def run():
        torch.manual_seed(0)
        comparator.reset()
        for chunk in range(0, rows.shape[0], 64):
            comparator.evaluate(rows[chunk:chunk + 64], target=labels[chunk:chunk + 64])
        return comparator.summary()
    return run


def min_param_case(lib, model, image, label):
    search = lib.MinParamPerturbation(model, _noise, "std", arg_min=0.0, arg_max=3.0, arg_step=0.01)

    def run():
        torch.manual_seed(0)
        return search.evaluate(image, target=label)
    return run


def _median_times(runs: dict, repeats: int) -> dict:
    times = {name: [] for name in runs}
    results = {name: fn() for name, fn in runs.items()}  # warm-up, and the results to compare
    names = list(runs)
    for r in range(repeats):
        for name in names[r % 2:] + names[:r % 2]:  # alternate the order
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = TinyImageCNN(n_classes=10, seed=0).eval()
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = model(images).argmax(dim=1)
    rows = []

    times, results = _median_times({"attrkit": comparator_case(A, model, images, labels),
                                    "captum": comparator_case(C, model, images, labels)}, args.repeats)
    for key, value in results["captum"].items():
        torch.testing.assert_close(results["attrkit"][key]["mean"], value["mean"])
    rows.append(("AttackComparator: 4 batches of 8 CIFAR-sized images, 13 perturbations each", times))

    tabular = MLP(n_features=40, hidden=64, n_out=3, seed=0).eval()
    rows_in = torch.randn(256, 40, generator=torch.Generator().manual_seed(2))
    rows_out = tabular(rows_in).argmax(dim=1)
    times, results = _median_times({"attrkit": tabular_case(A, tabular, rows_in, rows_out),
                                    "captum": tabular_case(C, tabular, rows_in, rows_out)}, args.repeats)
    for key, value in results["captum"].items():
        torch.testing.assert_close(results["attrkit"][key]["mean"], value["mean"])
    rows.append(("AttackComparator: tabular MLP, 4 batches of 64 rows, 22 perturbations each", times))

    image, label = images[:1], int(labels[0])
    times, results = _median_times({"attrkit": min_param_case(A, model, image, label),
                                    "captum": min_param_case(C, model, image, label)}, args.repeats)
    assert results["attrkit"][1] == results["captum"][1], (results["attrkit"][1], results["captum"][1])
    rows.append((f"MinParamPerturbation: linear noise search, flips at std={results['captum'][1]:.2f}", times))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| case | attrkit | Captum | attrkit/Captum (goal <= 0.5) |")
    print("|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t['attrkit'] * 1e3:.1f} ms | {t['captum'] * 1e3:.1f} ms | "
              f"{t['attrkit'] / t['captum']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
