"""Intra-op threads on a shared machine: fewer of them while other processes keep the cores busy.

A descheduled thread stalls every parallel region, which made small batched passes many times slower than
Captum's one-at-a-time loop on a loaded machine (measured by ``bench/run.py --busy``). Every outermost
``attribute()`` call runs inside :func:`threads_beside_others` (:mod:`attrkit.base`).
"""
from __future__ import annotations

import contextlib
import glob
import os

import torch


def busy_cores() -> int:
    """Cores other processes keep busy right now: runnable tasks in ``/proc/loadavg`` less this process's own
    running threads (Linux); 0 where that cannot be read."""
    try:
        with open("/proc/loadavg") as f:
            loadavg = f.read()
        own = 0
        for stat in glob.glob("/proc/self/task/*/stat"):
            with open(stat) as f:
                own += f.read().rsplit(")", 1)[1].split()[0] == "R"
        return busy_from(loadavg, own)
    except (OSError, ValueError, IndexError):
        return 0


def busy_from(loadavg: str, own_running: int) -> int:
    """Runnable tasks of other processes from the text of ``/proc/loadavg`` (its fourth field,
    ``running/total``) and the number of this process's own running threads."""
    running = int(loadavg.split()[3].split("/")[0])
    return max(0, running - own_running)


def cores_available() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def threads_beside_others():
    """Run the block with at most as many intra-op threads as there are cores nobody else keeps busy (at
    least one); restores torch's setting on exit, also after an error."""
    n = torch.get_num_threads()
    want = max(1, min(n, cores_available() - busy_cores()))
    if want < n:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if want < n:
            torch.set_num_threads(n)
