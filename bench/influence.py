"""Training-data influence on the chapter's review CNN: attrkit.influence against captum.influence, time and memory.

    python bench/influence.py                          # 1,000 / 4,000 / 8,530 training reviews
    python bench/influence.py --sizes 2000 --ops fast_self fast_topk

Each (size, library) runs in a fresh child process, one after the other in the same run, on the same model,
checkpoints and data: the GloVe CNN of chapters 04 and 09 (embedding 50-d over the training vocabulary, filters of
3/4/5 words, a linear layer to 2 logits; random weights -- timing does not depend on them), three checkpoints, the
Sentence Polarity training reviews padded to 64 words, batches of 256, 10 test reviews. Operations:

* ``fast_self`` / ``fast_topk`` -- ``TracInCPFast`` (last layer, closed form): self influence of every training
  review; the 10 strongest proponents of each test review.
* ``fast_tutorial`` -- Captum's tutorial on one ``TracInCPFast`` object: proponents, opponents, self influence
  (attrkit keeps the training set's factors after its first pass; Captum runs the training set three times).
* ``cp_self`` / ``cp_topk`` -- ``TracInCP`` on the convolution and final layers (19,394 parameters): the same two.
* ``proj`` -- ``TracInCPFastRandProj`` with ``projection_dim=64``: building the index, then one top-10 query.
  Captum's default index needs the ``annoy`` package; both libraries get attrkit's exact ``TopKNearestNeighbors``.

"growth" is the largest resident memory sampled during the child's operations minus the resident memory before
them (as ``bench/dataset_memory.py`` measures it), after a warm-up on 256 reviews. Times are the child's CPU
seconds on one intra-op thread (``BENCH_THREADS``), so a shared machine does not blur the ratio; wall seconds are
printed beside them. Captum's ``TracInCP`` takes one
backward pass per example, so its column is the slowest; figures are measured, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from dataset_memory import Sampler, current_rss  # noqa: E402

OPS = ["fast_self", "fast_topk", "fast_tutorial", "cp_self", "cp_topk", "proj"]
WIDTH, BATCH, K, N_TEST = 64, 256, 10, 10


def build(n: int, folder: str):
    """The model, n training and N_TEST test reviews as (ids, labels), three checkpoints in ``folder``."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import TensorDataset

    from attrkit import text_models

    data = text_models.sentence_polarity(seed=0)
    vocab = {w: i + 2 for i, w in enumerate(sorted({w for t, _ in data.train for w in t.split()}))}

    def encode(examples):
        ids = torch.zeros(len(examples), WIDTH, dtype=torch.long)
        for r, (text, _) in enumerate(examples):
            words = [vocab.get(w, 1) for w in text.split()][:WIDTH]
            ids[r, :len(words)] = torch.tensor(words)
        return ids, torch.tensor([y for _, y in examples])

    class ReviewCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(len(vocab) + 2, 50, padding_idx=0)
            self.convs = nn.ModuleList(nn.Conv1d(50, 32, k) for k in (3, 4, 5))
            self.fc = nn.Linear(96, 2)

        def forward(self, ids):
            x = self.embedding(ids).transpose(1, 2)
            return self.fc(torch.cat([F.relu(c(x)).amax(-1) for c in self.convs], 1))

    torch.manual_seed(0)
    model = ReviewCNN().eval()
    paths = []
    for c, lr in enumerate([0.01, 0.005, 0.002]):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        paths.append(os.path.join(folder, f"ckpt-{c}.pt"))
        torch.save({**model.state_dict(), "learning_rate": lr}, paths[-1])
    train = TensorDataset(*encode((data.train * (1 + n // len(data.train)))[:n]))
    return model, train, encode(data.test[:N_TEST]), paths


def load(model, path):
    import torch
    state = torch.load(path)
    lr = state.pop("learning_rate")
    model.load_state_dict(state)
    return lr


def run_op(lib, op: str, model, train, test, paths):
    import warnings

    from torch import nn
    layers = ["convs.0", "convs.1", "convs.2", "fc"]
    none, summed = nn.CrossEntropyLoss(reduction="none"), nn.CrossEntropyLoss(reduction="sum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if op.startswith("fast"):
            m = lib.TracInCPFast(model, model.fc, train, paths, load, loss_fn=summed, batch_size=BATCH)
            if op == "fast_tutorial":
                return m.influence(test, k=K), m.influence(test, k=K, proponents=False), m.self_influence()
            return m.self_influence() if op == "fast_self" else m.influence(test, k=K)
        if op.startswith("cp"):
            m = lib.TracInCP(model, train, paths, load, layers=layers, loss_fn=none, batch_size=BATCH)
            return m.self_influence() if op == "cp_self" else m.influence(test, k=K)
        from attrkit.influence import TopKNearestNeighbors
        m = lib.TracInCPFastRandProj(model, model.fc, train, paths, load, loss_fn=summed, batch_size=BATCH,
                                     nearest_neighbors=TopKNearestNeighbors(), projection_dim=64)
        return m.influence(test, k=K)


def child(n: int, library: str, ops: list[str]) -> dict:
    import torch
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    if library == "attrkit":
        import attrkit.influence as lib
    else:
        import captum.influence as lib
    with tempfile.TemporaryDirectory() as folder:
        model, train, test, paths = build(n, folder)
        small = torch.utils.data.TensorDataset(*train[:256])
        for op in ops:                                  # warm-up: imports, allocator, autograd, vmap
            run_op(lib, op, model, small, test, paths)
        before = current_rss()
        sampler = Sampler()
        seconds, wall = {}, {}
        for op in ops:
            start, cpu = time.perf_counter(), time.process_time()
            run_op(lib, op, model, train, test, paths)
            seconds[op], wall[op] = time.process_time() - cpu, time.perf_counter() - start
        growth = sampler.stop() - before
    return {"n": n, "library": library, "seconds": seconds, "wall": wall, "growth_mib": growth}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 8530])
    p.add_argument("--ops", nargs="+", choices=OPS, default=OPS)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.ops)))
        return
    print("CPU seconds of one thread (BENCH_THREADS=1: the work itself, robust to other processes); wall in ()")
    print(f"{'train':>6} {'operation':<13} {'attrkit':>9} {'Captum':>9} {'ratio':>6}   {'wall attrkit / Captum':>22}")
    rows = []
    for n in args.sizes:
        res = {}
        for library in ("attrkit", "captum"):
            out = subprocess.run([sys.executable, __file__, "--child", str(n), library, "--ops", *args.ops],
                                 capture_output=True, text=True, check=True)
            res[library] = json.loads(out.stdout.strip().splitlines()[-1])
        for op in args.ops:
            a, c = res["attrkit"]["seconds"][op], res["captum"]["seconds"][op]
            wa, wc = res["attrkit"]["wall"][op], res["captum"]["wall"][op]
            print(f"{n:>6,} {op:<13} {a:>7.2f} s {c:>7.2f} s {a / c:>6.2f}   ({wa:.1f} s / {wc:.1f} s)", flush=True)
        rows.append((n, res["attrkit"]["growth_mib"], res["captum"]["growth_mib"]))
    print(f"\n{'train':>6} {'attrkit growth':>15} {'Captum growth':>14}   (all operations above, one process each)")
    for n, a, c in rows:
        print(f"{n:>6,} {a:>11.1f} MiB {c:>10.1f} MiB")


if __name__ == "__main__":
    main()
