"""Run by tests/unit/test_dataset.py under ``torchrun``: one attribute_dataset run over a fixed toy problem.

Usage: python -m torch.distributed.run --nproc_per_node=N _torchrun_worker.py STORE N_EXAMPLES CHUNK METHOD
       [SECONDS_PER_CHUNK]   (or plain python: one process)
"""
import sys

import torch
from torch.utils.data import TensorDataset

import attrkit
from attrkit.dataset import attribute_dataset, init_distributed


def problem(n):
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    data = TensorDataset(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))
    return model, data


def method(name, model):
    if name == "ig":
        return attrkit.IntegratedGradients(model), {"n_steps": 8}
    return attrkit.KernelShap(model), {"n_samples": 20}


def _slow_chunks(seconds):
    """For the kill test: make every chunk take a while, so the process can be killed halfway."""
    import time

    from attrkit.dataset import stream
    run_chunk = stream._Run.run_chunk

    def slow(self, chunk, batch):
        time.sleep(seconds)
        return run_chunk(self, chunk, batch)

    stream._Run.run_chunk = slow


def run(store, n, chunk, name, show_progress=False):
    model, data = problem(n)
    attribution, kwargs = method(name, model)
    return attribute_dataset(attribution, data, store, chunk_size=chunk, attribute_kwargs=kwargs,
                             show_progress=show_progress)


if __name__ == "__main__":
    torch.set_num_threads(1)
    rank, world, _ = init_distributed()
    store, n, chunk, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if len(sys.argv) > 5:
        _slow_chunks(float(sys.argv[5]))
    res = run(store, n, chunk, name)
    print(f"rank {rank}/{world}: complete={res.complete}", flush=True)
    torch.distributed.destroy_process_group() if world > 1 else None
