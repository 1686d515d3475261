"""``torch.distributed`` for :func:`attrkit.attribute_dataset`: joining the process group, and the few collectives
it needs (rank and world size, a barrier, an error raised on every rank)."""
from __future__ import annotations

import os
from typing import Any, List, Optional

import torch


def init_distributed(backend: Optional[str] = None):
    """Join the process group ``torchrun`` describes (if any) and return ``(rank, world_size, device)``.

    ``nccl`` and ``cuda:LOCAL_RANK`` when CUDA is available (and ``backend`` is not ``"gloo"``), else ``gloo`` and
    the CPU. Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) this returns ``(0, 1, device)`` and starts
    nothing. If you create the process group yourself, set each rank's CUDA device before calling
    :func:`attribute_dataset` (it moves inputs to the device of the model's parameters).
    """
    import torch.distributed as dist
    cuda = torch.cuda.is_available() and backend != "gloo"
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if cuda else "gloo"))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def rank_world():
    """``(rank, world_size)``; ``(0, 1)`` outside ``torch.distributed``."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_ok(error: Optional[BaseException]) -> None:
    """Raise on every rank if a check failed on any (so no rank waits forever in a barrier)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flags: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(flags, None if error is None else (type(error).__name__, str(error)))
        bad = [f for f in flags if f is not None]
        if error is not None:
            raise error
        if bad:
            raise (TypeError if bad[0][0] == "TypeError" else ValueError)(bad[0][1])
    elif error is not None:
        raise error
