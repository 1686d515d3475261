"""attrkit against Captum and against the floor, in one process, on the same models and inputs.

    python bench/run.py                                   # every case, table on stdout
    python bench/run.py --markdown book/performance_table.md   # what `make bench` runs
    python bench/run.py --quick                           # a fast smoke run (small cases, one repeat)
    python bench/run.py --only Occlusion --threads 2
    python bench/run.py --busy                            # beside CPU-bound competitor processes (one per core)

For each case: one warm-up call of each contender, then ``--repeats`` timed calls, interleaved (attrkit,
Captum, floor, then Captum, floor, attrkit, ...: the order rotates), and the median. Captum runs at its
defaults (one perturbation per forward pass); attrkit at its defaults too (batched from its memory
budget). The *floor* is the work a method cannot avoid: one batched forward over every perturbed input,
timed on a ready-made tensor (the image models in chunks of ``FLOOR_CHUNK`` images: one pass over
ResNet-18's 784 occluded images would need ~10 GB, and on a CPU moderate batches run faster than one giant
one). Targets are printed beside the ratios; they are measured, never asserted. Timings on a shared machine
are noisy: run it when the machine is otherwise idle (``--clock cpu`` helps a little).

Occlusion cases also report the arithmetic of attrkit's exact incremental path against re-running the model
on every occluded copy (``FLOPs incr./naive``, from :mod:`attrkit._incremental`'s plan: multiply-adds, a
deterministic number), or "batched" where attrkit decides the incremental path does not pay off. ``--busy``
starts one CPU-bound process per core before the cases and stops it after them: the ratios on a machine that
something else keeps busy (Captum's one-perturbation-at-a-time loop never starts torch's intra-op threads;
attrkit's batches do, and those stall when the cores are taken).

To add a case, append a :class:`Case` to ``CASES``: a model and inputs, the shared ``attribute()`` keywords,
and a floor (``forward_floor(rows)`` or ``forward_backward_floor(rows)`` for gradient methods, where
``rows(inputs)`` builds the stacked perturbed inputs / integration points).
"""
from __future__ import annotations

import argparse
import os
import sys


def _threads_from_argv(argv) -> int:
    """Thread count, fixed before torch is imported (OpenMP reads OMP_NUM_THREADS at start-up)."""
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


THREADS = _threads_from_argv(sys.argv[1:])
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)

import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import attrkit  # noqa: E402
import attrkit.models  # noqa: E402
from attrkit import _incremental  # noqa: E402

torch.set_num_threads(THREADS)
FLOOR_CHUNK = 64


# --------------------------------------------------------------------------- models and floors
def tabular_mlp() -> nn.Module:
    """40 features -> 256 -> 256 -> 2 classes, ReLU."""
    return nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))


def cifar_cnn() -> nn.Module:
    """A CIFAR-sized CNN: two conv blocks (32, 64 channels) and a linear head, on 3x32x32 images."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18()  # random weights: the timing does not depend on them


def efficientnet_lite0() -> nn.Module:
    """The book's EfficientNet-Lite0 (real ImageNet weights when the package is installed, else random ones)."""
    try:
        return attrkit.models.efficientnet_lite0()
    except ImportError:
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def repeat_rows(n_units: int) -> Callable:
    """All perturbed inputs of a method that makes ``n_units`` perturbed copies of the batch."""
    return lambda x: x.repeat(n_units, *([1] * (x.dim() - 1)))


def forward_floor(rows: Callable, chunk: int | None = None) -> Callable:
    """The floor of a perturbation method: forward passes over all perturbed rows, nothing else."""
    def make(model, inputs):
        stacked = rows(inputs)
        step = chunk or len(stacked)

        def run():
            with torch.inference_mode():
                for start in range(0, len(stacked), step):
                    model(stacked[start:start + step])
        return run
    return make


def forward_backward_floor(rows: Callable, target: int = 0, chunk: int | None = None) -> Callable:
    """The floor of a gradient method: forward and backward passes over all integration points / samples."""
    def make(model, inputs):
        stacked = rows(inputs)
        step = chunk or len(stacked)

        def run():
            for start in range(0, len(stacked), step):
                points = stacked[start:start + step].detach().requires_grad_()
                torch.autograd.grad(model(points)[:, target].sum(), points)
        return run
    return make


def layer_backward_floor(layer: str, target: int = 0) -> Callable:
    """The floor of a layer-gradient method (Grad-CAM): one forward, and the backward pass down to ``layer`` only."""
    def make(model, inputs):
        module = model.get_submodule(layer)

        def run():
            seen = []
            handle = module.register_forward_hook(lambda m, i, out: seen.append(out))
            try:
                output = model(inputs)
            finally:
                handle.remove()
            torch.autograd.grad(output[:, target].sum(), seen[0])
        return run
    return make


def occlusion_windows(size: int, window: int, stride: int) -> int:
    return (-(-(size - window) // stride) + 1) ** 2


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str                        # what is explained
    method: str                      # the class name, the same in attrkit and captum.attr
    model: Callable[[], nn.Module]
    inputs: Callable[[], Any]
    kwargs: dict
    floor: Callable                  # (model, inputs) -> a no-argument callable doing the unavoidable work
    targets: dict = field(default_factory=dict)  # {"captum": max attrkit/Captum, "floor": max attrkit/floor}
    repeats: int | None = None       # None: --repeats
    warmup: bool = True              # a full warm-up call of each contender (else one forward of the model)
    quick: bool = True               # part of --quick
    deterministic: bool = True       # compare the attributions with Captum's (max |difference|)
    note: str = ""                   # printed under the table
    layer: str | None = None         # for layer methods: the submodule's name
    uncompared: str = "sampled"      # what the difference column says when results are not compared


MLP_INPUTS = (lambda: torch.randn(16, 40))
SURROGATE_NOTE = ("The floor of `Lime` and `KernelShap` counts the forward passes only; fitting one weighted linear "
                  "surrogate per example (a few milliseconds here) is work these methods cannot avoid either.")
CASES = [
    Case("tabular MLP, 40 features, batch 16", "FeatureAblation", tabular_mlp, MLP_INPUTS, {"target": 1},
         forward_floor(repeat_rows(40)), {"captum": 0.2, "floor": 1.5}),
    Case("tabular MLP, 40 features, batch 16", "ShapleyValueSampling", tabular_mlp, MLP_INPUTS, {"target": 1},
         forward_floor(repeat_rows(25 * 40)), {"captum": 0.25, "floor": 1.5}),
    Case("tabular MLP, 40 features, batch 16", "KernelShap", tabular_mlp, MLP_INPUTS, {"target": 1},
         forward_floor(repeat_rows(25)), {"captum": 1.0, "floor": 1.5}, deterministic=False, note=SURROGATE_NOTE),
    Case("tabular MLP, 40 features, batch 16", "Lime", tabular_mlp, MLP_INPUTS, {"target": 1},
         forward_floor(repeat_rows(25)), {"captum": 1.0, "floor": 1.5}, deterministic=False, note=SURROGATE_NOTE),
    Case("CIFAR-sized CNN, one 3x32x32 image, 4x4 window, stride 2", "Occlusion", cifar_cnn,
         lambda: torch.randn(1, 3, 32, 32), {"target": 3, "sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2)},
         forward_floor(repeat_rows(occlusion_windows(32, 4, 2)), FLOOR_CHUNK), {"captum": 0.5, "floor": 1.5}),
    Case("resnet18, one 224x224 image, 15x15 window, stride 8", "Occlusion", lambda: resnet18().eval(),
         lambda: torch.randn(1, 3, 224, 224), {"target": 0, "sliding_window_shapes": (3, 15, 15), "strides": (3, 8, 8)},
         forward_floor(repeat_rows(occlusion_windows(224, 15, 8)), FLOOR_CHUNK), {"captum": 0.5, "floor": 0.67},
         repeats=1, warmup=False, quick=False,
         note="`Occlusion` on resnet18: one run of each contender without a warm-up call (each takes seconds)."),
    *[Case(f"EfficientNet-Lite0 (the book's), one 224x224 image, {w}x{w} window, stride {w // 2}", "Occlusion",
           lambda: efficientnet_lite0().eval(), lambda: torch.randn(1, 3, 224, 224),
           {"target": 145, "sliding_window_shapes": (3, w, w), "strides": (3, w // 2, w // 2), "baselines": -1.0},
           forward_floor(repeat_rows(occlusion_windows(224, w, w // 2)), FLOOR_CHUNK),
           {"captum": 0.5, "floor": 0.67}, repeats=1 if w < 64 else None, warmup=w >= 64, quick=False,
           note="EfficientNet-Lite0: the notebook's two windows (64 and 24 px, stride half the window) and its "
                "black baseline (-1 after the model's normalisation).")
      for w in (64, 24)],
    # gradient methods: the floor is the forward and backward passes over every point the estimator evaluates;
    # Captum sits at that floor too, so attrkit / Captum is ~1 and only the floor has a target
    Case("CIFAR-sized CNN, 16 images, 50 steps", "IntegratedGradients", cifar_cnn, lambda: torch.randn(16, 3, 32, 32),
         {"target": 3}, forward_backward_floor(repeat_rows(50), target=3), {"floor": 1.5}),
    Case("resnet18, one 224x224 image, 50 steps", "IntegratedGradients", lambda: resnet18().eval(),
         lambda: torch.randn(1, 3, 224, 224), {"target": 0}, forward_backward_floor(repeat_rows(50)),
         {"floor": 1.5}, repeats=3, quick=False),
    Case("CIFAR-sized CNN, 16 images", "DeepLift", cifar_cnn, lambda: torch.randn(16, 3, 32, 32), {"target": 3},
         forward_backward_floor(repeat_rows(2), target=3), {"floor": 1.5}, deterministic=False,
         uncompared="not compared",
         note="`DeepLift`: Captum's multipliers are wrong where a ReLU feeds a max pool directly, as in this CNN "
              "(attrkit's convergence delta is ~1e-7 there), so the results are not compared."),
    Case("resnet18, one 224x224 image, layer4", "LayerGradCam", lambda: resnet18().eval(),
         lambda: torch.randn(1, 3, 224, 224), {"target": 0}, layer_backward_floor("layer4"),
         {"floor": 1.5}, layer="layer4", quick=False),
]


# --------------------------------------------------------------------------- timing
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process's CPU time, all threads
clock = CLOCKS["wall"]


def timed(fn: Callable) -> tuple[float, Any]:
    start = clock()
    out = fn()
    return clock() - start, out


def run_case(case: Case, repeats: int) -> dict:
    import captum.attr

    torch.manual_seed(0)
    model = case.model().eval()
    inputs = case.inputs()
    args = (model,) if case.layer is None else (model, model.get_submodule(case.layer))
    ours = getattr(attrkit, case.method)(*args)
    theirs = getattr(captum.attr, case.method)(*args)

    contenders = {"attrkit": lambda: ours.attribute(inputs, **case.kwargs),
                  "captum": lambda: theirs.attribute(inputs, **case.kwargs), "floor": case.floor(model, inputs)}
    times: dict[str, list] = {k: [] for k in contenders}
    outputs = {}
    if not case.warmup:
        with torch.inference_mode():
            model(inputs)
    names = list(contenders)
    for repeat in range(int(case.warmup) + (case.repeats or repeats)):  # a warm-up round is not timed
        for name in names[repeat % 3:] + names[:repeat % 3]:  # rotate the order: no one always goes first
            fn = contenders[name]
            torch.manual_seed(0)  # the same random draws for both libraries (and equal ShapleyValueSampling)
            seconds, outputs[name] = timed(fn)
            if repeat or not case.warmup:
                times[name].append(seconds)
    result = {k: statistics.median(v) for k, v in times.items()}
    if case.method == "Occlusion":
        result["flops"] = occlusion_flops(model, inputs, case.kwargs)
    if case.deterministic:
        result["max_diff"] = float((outputs["attrkit"] - outputs["captum"].to(outputs["attrkit"].dtype)).abs().max())
    return result


def occlusion_flops(model, inputs, kwargs) -> str:
    """Multiply-adds of attrkit's incremental path / of the naive one, or why it is not used."""
    plan = _incremental.prepare(model, inputs, kwargs["sliding_window_shapes"], kwargs.get("strides") or 1)
    if plan is None:
        return "n/a (batched)"
    used = _incremental.mode() == "always" or (_incremental.mode() == "auto" and
                                               plan.cost_ratio <= _incremental.WORTH_IT and
                                               len(plan.windows[0]) * inputs.numel() >=
                                               _incremental.MIN_OCCLUDED_ELEMENTS)
    return f"{plan.flops_ratio:.3f}" + ("" if used else " (batched)")


def fmt_seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def ratio_cell(value: float, target: float | None) -> str:
    if target is None:
        return f"{value:.3f}"
    return f"{value:.3f} {'✓' if value <= target else '✗'} (≤ {target})"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def table(rows: list[tuple[Case, dict]], repeats: int, clock_name: str = "wall", busy: int = 0) -> str:
    import captum

    lines = [
        f"Measured {datetime.date.today().isoformat()} on {machine()} (CPU), torch {torch.__version__}, "
        f"Captum {captum.__version__}, attrkit {attrkit.__version__}; {torch.get_num_threads()} torch threads "
        f"(`OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}`); {'wall-clock' if clock_name == 'wall' else 'CPU'} "
        f"time, median of {repeats} runs after one warm-up unless noted below. ✓ / ✗: the target for that ratio "
        f"is met / missed."
        + (f" **Busy machine:** {busy} CPU-bound competitor process(es) ran beside every case." if busy else ""),
        "",
        "| method | case | attrkit | Captum (defaults) | floor | attrkit / Captum | attrkit / floor "
        "| FLOPs incr. / naive | max abs. difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, r in rows:
        diff = f"{r['max_diff']:.1e}" if "max_diff" in r else case.uncompared
        lines.append(
            f"| `{case.method}` | {case.name} | {fmt_seconds(r['attrkit'])} | {fmt_seconds(r['captum'])} "
            f"| {fmt_seconds(r['floor'])} | {ratio_cell(r['attrkit'] / r['captum'], case.targets.get('captum'))} "
            f"| {ratio_cell(r['attrkit'] / r['floor'], case.targets.get('floor'))} | {r.get('flops', '')} | {diff} |"
        )
    notes = list(dict.fromkeys(case.note for case, _ in rows if case.note))
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _spin():
    """A CPU-bound competitor: pure Python, no threads of its own."""
    while True:
        pass


class Competitors:
    """``n`` CPU-bound processes, started on entry and stopped (terminated, joined) on exit."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.procs = [ctx.Process(target=_spin, daemon=True) for _ in range(self.n)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    parser.add_argument("--quick", action="store_true", help="small cases only, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender (default 5)")
    parser.add_argument("--only", nargs="*", help="run only the cases whose method is listed")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch / OpenMP threads (default: all cores)")
    parser.add_argument("--busy", nargs="?", const=-1, type=int, default=0, metavar="N",
                        help="run beside N CPU-bound competitor processes (default: one per core)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time (default), or this process's CPU time: steadier on a shared machine")
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    repeats = 1 if args.quick else args.repeats
    warnings.filterwarnings("ignore")  # Captum warns about batch size and feature counts; not what we measure
    rows = []
    busy = (os.cpu_count() or 1) if args.busy == -1 else args.busy
    with Competitors(busy):
        for case in CASES:
            if (args.quick and not case.quick) or (args.only and case.method not in args.only):
                continue
            print(f"{case.method} — {case.name} ...", file=sys.stderr, flush=True)
            rows.append((case, run_case(case, repeats)))
    text = table(rows, repeats, args.clock, busy)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
