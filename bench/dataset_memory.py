"""Peak memory of attrkit.attribute_dataset against the number of examples: it should stay flat.

    python bench/dataset_memory.py                      # 1,000 / 5,000 / 10,000 examples, table on stdout
    python bench/dataset_memory.py --sizes 10000 --method ig

Each size runs in a fresh child process, after a warm-up run on one chunk; "growth" is the largest resident memory
sampled during the run minus the resident memory before it ("peak RSS" is the process's high-water mark,
imports included). Examples are
3x32x32 images generated on the fly from their index (the data set itself holds nothing), explained by a tiny CNN
with Saliency (or Integrated Gradients, ``--method ig``) in chunks of ``--chunk-size``; each example's attribution
is 12 KiB of float32, so keeping them all in RAM would cost ``N x 12 KiB`` (shown as "in RAM"). Figures are
measured, never asserted here (tests/unit/test_dataset.py has a bounded-memory check on smaller sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

SHAPE = (3, 32, 32)


def child(n: int, method: str, chunk_size: int, side: int = 32) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    import attrkit
    from attrkit import attribute_dataset

    torch.set_num_threads(1)
    shape = (3, side, side)

    class Generated(Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(shape, generator=g), int(torch.randint(0, 10, (1,), generator=g))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()
    attribution = attrkit.IntegratedGradients(model) if method == "ig" else attrkit.Saliency(model)
    kwargs = {"n_steps": 8} if method == "ig" else {}
    # Warm up everything the run touches (zarr, codecs, autograd) on a tiny store, then take the baseline.
    with tempfile.TemporaryDirectory() as d:
        attribute_dataset(attribution, Generated(), os.path.join(d, "warm.zarr"), indices=range(chunk_size),
                          chunk_size=chunk_size, attribute_kwargs=kwargs, show_progress=False)
    before = current_rss()
    sampler = Sampler()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = attribute_dataset(attribution, Generated(), os.path.join(d, "run.zarr"), chunk_size=chunk_size,
                                attribute_kwargs=kwargs, show_progress=False)
        assert res.complete and res.attributions.shape == (n, *shape)
        disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs) / 2**20
    seconds = time.perf_counter() - start
    during = sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "baseline_mib": before, "peak_mib": peak, "growth_mib": during - before, "seconds": seconds,
            "disk_mib": disk, "in_ram_mib": n * 4 * 3 * side * side / 2**20}


def current_rss() -> float:
    """Resident memory now, in MiB (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sampler:
    """The largest resident memory seen, sampled every 5 ms on a thread while the run goes."""

    def __init__(self):
        import threading
        self.peak, self._stop = current_rss(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, current_rss())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, current_rss())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    p.add_argument("--method", choices=["saliency", "ig"], default="saliency")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--side", type=int, default=32, help="examples are 3 x side x side")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.method, args.chunk_size, args.side)))
        return
    print(f"attribute_dataset, {args.method}, 3x{args.side}x{args.side} examples, chunks of {args.chunk_size}")
    print(f"{'examples':>9} {'peak RSS':>10} {'growth':>9} {'in RAM would be':>16} {'store on disk':>14} {'time':>8}")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--method", args.method,
                              "--chunk-size", str(args.chunk_size), "--side", str(args.side)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n']:>9,} {r['peak_mib']:>8.0f} MiB {r['growth_mib']:>+7.1f} MiB {r['in_ram_mib']:>12.0f} MiB "
              f"{r['disk_mib']:>10.0f} MiB {r['seconds']:>6.1f} s", flush=True)


if __name__ == "__main__":
    main()
