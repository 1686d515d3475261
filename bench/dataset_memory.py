"""Peak memory of attrkit.attribute_dataset against the number of examples: it should stay flat.

    python bench/dataset_memory.py                      # 1,000 / 5,000 / 10,000 examples, table on stdout
    python bench/dataset_memory.py --sizes 10000 --method ig

Each size runs in a fresh child process (peak RSS, ``ru_maxrss``, is a high-water mark per process). Examples are
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


def child(n: int, method: str, chunk_size: int) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    import attrkit
    from attrkit import attribute_dataset

    torch.set_num_threads(1)

    class Generated(Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.randn(SHAPE, generator=g), int(torch.randint(0, 10, (1,), generator=g))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()
    attribution = attrkit.IntegratedGradients(model) if method == "ig" else attrkit.Saliency(model)
    kwargs = {"n_steps": 8} if method == "ig" else {}
    # Warm up everything the run touches (zarr, codecs, autograd) on a tiny store, then take the baseline.
    with tempfile.TemporaryDirectory() as d:
        attribute_dataset(attribution, Generated(), os.path.join(d, "warm.zarr"), indices=range(chunk_size),
                          chunk_size=chunk_size, attribute_kwargs=kwargs, show_progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = attribute_dataset(attribution, Generated(), os.path.join(d, "run.zarr"), chunk_size=chunk_size,
                                attribute_kwargs=kwargs, show_progress=False)
        assert res.complete and res.attributions.shape == (n, *SHAPE)
        disk = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs) / 2**20
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "baseline_mib": before, "peak_mib": peak, "growth_mib": peak - before, "seconds": seconds,
            "disk_mib": disk, "in_ram_mib": n * 4 * 3 * 32 * 32 / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    p.add_argument("--method", choices=["saliency", "ig"], default="saliency")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.method, args.chunk_size)))
        return
    print(f"attribute_dataset, {args.method}, 3x32x32 examples, chunks of {args.chunk_size}")
    print(f"{'examples':>9} {'peak RSS':>10} {'growth':>9} {'in RAM would be':>16} {'store on disk':>14} {'time':>8}")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--method", args.method,
                              "--chunk-size", str(args.chunk_size)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n']:>9,} {r['peak_mib']:>8.0f} MiB {r['growth_mib']:>+7.1f} MiB {r['in_ram_mib']:>12.0f} MiB "
              f"{r['disk_mib']:>10.0f} MiB {r['seconds']:>6.1f} s", flush=True)


if __name__ == "__main__":
    main()
