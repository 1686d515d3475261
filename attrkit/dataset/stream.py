"""``attribute_dataset``: run any attribution method over a dataset, streaming per-example results to disk.

Examples are split into chunks of ``chunk_size`` consecutive dataset positions. Each chunk is attributed in one
``attribute`` call (seeded with ``seed + chunk``, so stochastic methods give the same numbers whoever computes the
chunk), written to the store (:mod:`attrkit.dataset.store`) together with its summary (vectorised over the
chunk, overall and per target class), and then marked
done. A second call with the same arguments skips the chunks that are done: that is resume. Under
``torch.distributed`` (``torchrun``) rank ``r`` of ``W`` takes chunks ``r, r + W, r + 2W, ...`` (a
``DistributedSampler``-style split at chunk granularity, without padding, so any ``W`` works); once every rank is
done, rank 0 merges the chunks' summaries in chunk order. Because chunk boundaries, seeds and the merge order do
not depend on ``W`` or on interruptions, the store and the summaries are identical for 1 or ``W`` processes, and for
an interrupted and resumed run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset
from torch.utils.data.dataloader import default_collate

from .dataloader_attr import InputRole
from .store import (DatasetAttribution, atomic_torch_save, atomic_write_bytes, chunk_name, class_summarizer_state,
                    load_class_summarizer)
from .summarizer import ClassSummarizer, CommonStats, class_summarizer_of_batch, Count, Max, Mean, Min, MSE, Stat, StdDev, Sum, Var

_STAT_CLASSES = {c.__name__: c for c in (Count, Mean, MSE, Var, StdDev, Min, Max, Sum)}
FORMAT_VERSION = 1


# -- torch.distributed -------------------------------------------------------------------------------------------
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


def _rank_world():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _all_ok(ok: bool, message: str) -> None:
    """Raise on every rank if the check failed on any (so no rank waits forever in a barrier)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flags: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(flags, (ok, message))
        bad = [m for good, m in flags if not good]
        if bad:
            raise ValueError(bad[0])
    elif not ok:
        raise ValueError(message)


# -- settings: what makes two runs the same run ---------------------------------------------------------------------
def _describe(value) -> Any:
    """A JSON description of an argument; tensors by shape, dtype and content hash."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous().reshape(-1)
        digest = hashlib.sha256(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"").hexdigest()
        return {"tensor": list(value.shape), "dtype": str(value.dtype), "sha256": digest[:16]}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if callable(value):
        return f"callable:{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value)


def _model_digest(forward_func) -> Optional[str]:
    if not isinstance(forward_func, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, t in forward_func.state_dict().items():
        h.update(name.encode())
        h.update(_describe(t)["sha256"].encode())
    return h.hexdigest()[:16]


def _stat_spec(stat: Stat) -> Dict[str, Any]:
    return {"class": type(stat).__name__, "params": _describe(stat.params), "name": stat.name}


def _stats_from_settings(settings: Dict[str, Any]) -> List[Stat]:
    stats = []
    for spec in settings["stats"]:
        cls = _STAT_CLASSES.get(spec["class"])
        if cls is None:
            raise ValueError(f"the store was summarized with a custom statistic {spec['class']}; "
                             "pass the same `stats` to DatasetAttribution(path, stats=...) to read its summary.")
        stats.append(cls(name=spec["name"], **spec["params"]))
    return stats


# -- batches -------------------------------------------------------------------------------------------------------
def _split_batch(batch, input_roles):
    """(attributed inputs, additional forward args, labels or None, inputs were a tuple) for one batch."""
    elems = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if input_roles is None:
        input_roles = (0,) if len(elems) == 1 else (0,) * (len(elems) - 1) + (InputRole.no_forward,)
    if len(input_roles) != len(elems):
        raise ValueError(f"`input_roles` has {len(input_roles)} entries but each example has {len(elems)} elements.")
    attr = tuple(x for x, r in zip(elems, input_roles) if r == InputRole.need_attr)
    extra = tuple(x for x, r in zip(elems, input_roles) if r == InputRole.need_forward)
    labels = [x for x, r in zip(elems, input_roles) if r == InputRole.no_forward]
    if not attr:
        raise ValueError(f"`input_roles` {tuple(input_roles)} marks no element with role 0 (need_attr).")
    if len(labels) > 1:
        raise ValueError(f"`input_roles` {tuple(input_roles)} marks {len(labels)} elements as labels (2); at most one.")
    return attr, extra, (labels[0] if labels else None), len(attr) > 1


def _move(x, device):
    return x.to(device) if device is not None and isinstance(x, torch.Tensor) else x


def _model_device(forward_func) -> Optional[torch.device]:
    if isinstance(forward_func, torch.nn.Module):
        p = next(iter(forward_func.parameters()), None)
        return p.device if p is not None else None
    return None


def _resolve_target(target, labels, preds, n):
    if target == "label":
        if labels is None:
            raise ValueError("target='label' needs labelled examples, but the data yields unlabeled batches (no element "
                             "with role 2 in `input_roles`); pass target='predicted', an int, or None.")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
            raise ValueError("target='label' needs one integer class label per example (a tensor of shape (batch,)), "
                             f"got {type(labels).__name__} {tuple(getattr(labels, 'shape', ()))}.")
        return labels
    if target == "predicted":
        if preds.dim() != 1 or preds.is_floating_point():
            raise ValueError("target='predicted' needs a model with a (batch, classes) output.")
        return preds
    if target is None:
        return None
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=preds.device)
    raise ValueError(f"`target` must be 'label', 'predicted', an int or None, got {target!r}.")


# -- the run ---------------------------------------------------------------------------------------------------------
def attribute_dataset(
    attribution,
    data: Union[Dataset, DataLoader],
    store: Union[str, os.PathLike],
    *,
    target: Union[str, int, None] = "label",
    input_roles: Optional[Sequence[int]] = None,
    chunk_size: Optional[int] = None,
    indices: Optional[Sequence[int]] = None,
    attribute_kwargs: Optional[Dict[str, Any]] = None,
    stats: Optional[List[Stat]] = None,
    summarize: Optional[Callable[[torch.Tensor], torch.Tensor]] = torch.abs,
    by_class: bool = True,
    seed: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    overwrite: bool = False,
    show_progress: bool = True,
    num_workers: Optional[int] = None,
) -> DatasetAttribution:
    """Attribute every example of ``data`` with ``attribution`` and stream the results to the zarr store ``store``.

    Args:
        attribution: any attrkit (or Captum-compatible) attribution object, e.g. ``IntegratedGradients(model)``.
        data: a map-style ``Dataset`` or a ``DataLoader`` over one (its dataset, ``collate_fn``, ``batch_size`` and
            ``num_workers`` are used; examples are taken in dataset order, a shuffling sampler is ignored).
        store: the folder of the zarr store; created, or resumed when it holds an unfinished run with the same
            settings. A store holding a run with other settings is an error (unless ``overwrite=True``).
        target: ``"label"`` (default: the example's label, the element with role 2), ``"predicted"`` (the model's
            arg-max class), an int (the same class for all), or None (a model with one output per example).
        input_roles: one role per element of an example, as in :class:`DataLoaderAttribution`: 0 attributed input,
            1 extra model argument, 2 label. Default: a lone tensor is the input; for tuples the last element is
            the label and the others are inputs.
        chunk_size: examples per chunk (= per ``attribute`` call and per stored chunk); default the loader's
            ``batch_size``, else 64.
        indices: the dataset positions to explain (default all), stored as ``index``.
        attribute_kwargs: more keyword arguments for ``attribution.attribute`` (``baselines``, ``n_steps``,
            ``feature_mask``, ``return_convergence_delta``, ...), the same for every chunk.
        stats: the running statistics (default :func:`CommonStats`) of ``summarize(attribution)``; ``summarize``
            defaults to ``torch.abs`` (so ``summary["mean"]`` is the mean absolute attribution, the usual
            global importance); None summarizes the signed attributions.
        by_class: also keep the statistics per target class.
        seed: chunk ``c`` runs under ``torch.manual_seed(seed + c)`` (CPU and CUDA generators are restored after).
        device: where inputs go (default: the device of the model's parameters).
        overwrite: delete an existing store first.
        show_progress: a progress bar (examples/s and time left) on rank 0.
        num_workers: data-loading workers (default: the loader's, else 0).

    The running summaries are computed per chunk in a few vectorised reductions (equal, to rounding, to Welford (1962)
    updates one example at a time, as Captum's summarizers do) and merged in chunk order with Chan, Golub & LeVeque
    (1979)'s pairwise formulae, so they do not depend on the number of processes or on interruptions.

    Returns:
        A :class:`~attrkit.dataset.store.DatasetAttribution` reading the store (``.attributions``, ``.targets``,
        ``.predictions``, ``.index``, ``.summary``, ``.class_summaries``) on every rank.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from attrkit import IntegratedGradients, attribute_dataset
        >>> model = torch.nn.Linear(4, 3)
        >>> data = TensorDataset(torch.rand(10, 4), torch.randint(0, 3, (10,)))
        >>> res = attribute_dataset(IntegratedGradients(model), data, tempfile.mkdtemp() + "/ig.zarr",
        ...                         chunk_size=4, show_progress=False)
        >>> res.attributions.shape, res.summary["mean"].shape
        ((10, 4), torch.Size([4]))
    """
    try:
        import zarr
    except ModuleNotFoundError:  # pragma: no cover - zarr is in the `dataset` and `book` extras
        raise ModuleNotFoundError("attribute_dataset writes a zarr store: pip install 'attrkit[dataset]' "
                                  "(or zarr==3.1.6).") from None

    store = os.fspath(store)
    rank, world = _rank_world()
    dataset, collate, chunk_default, workers = _unpack_data(data)
    chunk_size = int(chunk_size or chunk_default)
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size}.")
    positions = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not positions:
        raise ValueError("`data` (or `indices`) holds no example.")
    n, n_chunks = len(positions), -(-len(positions) // chunk_size)
    workers = workers if num_workers is None else num_workers
    kwargs = dict(attribute_kwargs or {})
    for k in ("target", "additional_forward_args"):
        if k in kwargs:
            raise ValueError(f"`attribute_kwargs` must not contain {k!r}: targets come from `target`, extra "
                             "model arguments from `input_roles`.")
    stats = list(stats) if stats is not None else CommonStats()
    fwd = attribution.forward_func
    device = torch.device(device) if device is not None else _model_device(fwd)

    # One example tells the structure (labels present? input shapes?) before anything is written.
    probe = collate([dataset[positions[0]]])
    attr_in, _, labels, inputs_tuple = _split_batch(probe, input_roles)
    ok, msg = True, ""
    if target == "label" and labels is None:
        ok, msg = False, ("target='label' needs labelled examples, but the data yields unlabeled batches (no element "
                          "with role 2 in `input_roles`); pass target='predicted', an int, or None.")
    _all_ok(ok, msg)

    settings = {
        "format": FORMAT_VERSION, "method": type(attribution).__name__, "method_args": _describe(kwargs),
        "model": type(fwd).__name__, "model_digest": _model_digest(fwd), "n_examples": n, "chunk_size": chunk_size,
        "indices_digest": hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:16],
        "target": target if target is None or isinstance(target, (int, str)) else repr(target),
        "input_roles": list(input_roles) if input_roles is not None else None, "seed": seed,
        "stats": [_stat_spec(s) for s in stats], "summarize": _describe(summarize), "by_class": bool(by_class),
        "n_inputs": len(attr_in), "inputs_tuple": inputs_tuple,
        "input_shapes": [list(x.shape[1:]) for x in attr_in],
    }

    # Everyone checks an existing store before anyone writes; then rank 0 creates it.
    existing = _read_settings(store)
    if existing is not None and not overwrite:
        diff = sorted(k for k in set(settings) | set(existing) if settings.get(k) != existing.get(k))
        ok, msg = not diff, (f"the store {store!r} holds a run with other settings (differing: {', '.join(diff)}); "
                             "use another path, or overwrite=True to replace it.")
    else:
        ok, msg = True, ""
    _all_ok(ok, msg)
    _barrier()
    if rank == 0 and (existing is None or overwrite):
        if os.path.exists(store):
            if existing is None and os.listdir(store):
                raise ValueError(f"{store!r} exists and is not an attribute_dataset store; choose an empty path.")
            shutil.rmtree(store)
        _create_store(store, settings, attribution, kwargs, probe, input_roles, target, device, seed, chunk_size, n)
    _barrier()

    group = zarr.open_group(store, mode="r+")
    done = set(DatasetAttribution(store).completed_chunks)
    mine = [c for c in range(n_chunks) if c % world == rank and c not in done]
    todo_examples = sum(min(chunk_size, n - c * chunk_size) for c in mine)
    progress = None
    if show_progress and rank == 0 and todo_examples:
        from tqdm.auto import tqdm
        progress = tqdm(total=todo_examples, unit="ex", desc=f"{type(attribution).__name__}"
                        + (f" (rank 0 of {world})" if world > 1 else ""))
    try:
        if mine:
            subset = Subset(dataset, [positions[i] for c in mine for i in range(c * chunk_size, min(n, (c + 1) * chunk_size))])
            loader = DataLoader(subset, batch_size=chunk_size, shuffle=False, collate_fn=collate, num_workers=workers)
            for chunk, batch in zip(mine, loader):
                _run_chunk(group, store, chunk, batch, positions, attribution, kwargs, input_roles, target, device,
                           seed, chunk_size, stats, summarize, by_class)
                if progress is not None:
                    progress.update(min(chunk_size, n - chunk * chunk_size))
    finally:
        if progress is not None:
            progress.close()
    _barrier()
    if rank == 0:
        _merge_summaries(store, n_chunks, stats)
    _barrier()
    return DatasetAttribution(store, stats=stats)


def _unpack_data(data):
    if isinstance(data, DataLoader):
        dataset = data.dataset
        collate = data.collate_fn or default_collate
        return _check_dataset(dataset), collate, data.batch_size or 64, data.num_workers
    return _check_dataset(data), default_collate, 64, 0


def _check_dataset(dataset):
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError("`data` must be a map-style Dataset (with __len__ and __getitem__) or a DataLoader over one; "
                        f"got {type(dataset).__name__} (resume and sharding need examples by index).")
    return dataset


def _read_settings(store: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(store, "zarr.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        meta = json.load(f)
    return meta.get("attributes", {}).get("attrkit")


def _compute(batch, attribution, kwargs, input_roles, target, device, seed, chunk):
    attr_in, extra, labels, inputs_tuple = _split_batch(batch, input_roles)
    attr_in = tuple(_move(x, device) for x in attr_in)
    extra = tuple(_move(x, device) for x in extra)
    with torch.no_grad():
        out = attribution.forward_func(*attr_in, *extra)
    preds = out.argmax(-1) if out.dim() >= 2 else out
    targets = _resolve_target(target, _move(labels, device), preds, attr_in[0].shape[0])
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + chunk)
        result = attribution.attribute(attr_in if inputs_tuple else attr_in[0], target=targets,
                                       additional_forward_args=extra if extra else None, **kwargs)
    delta = None
    if kwargs.get("return_convergence_delta"):
        result, delta = result
    attrs = result if isinstance(result, tuple) else (result,)
    return attrs, delta, targets, preds


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def _create_store(store, settings, attribution, kwargs, probe, input_roles, target, device, seed, chunk_size, n):
    import zarr
    attrs, delta, targets, preds = _compute(probe, attribution, kwargs, input_roles, target, device, seed, 0)
    group = zarr.open_group(store, mode="w")
    group.attrs["attrkit"] = settings

    def array(name, example: torch.Tensor):
        arr = _numpy(example)
        group.create_array(name, shape=(n, *arr.shape[1:]), chunks=(chunk_size, *arr.shape[1:]), dtype=arr.dtype,
                           fill_value=0)

    for i, a in enumerate(attrs):
        array(f"attributions/{i}", a)
    array("predictions", preds)
    array("index", torch.zeros(1, dtype=torch.int64))
    if targets is not None:
        array("targets", targets)
    if delta is not None:
        array("convergence_delta", delta)
    os.makedirs(os.path.join(store, "_done"), exist_ok=True)
    os.makedirs(os.path.join(store, "_summaries"), exist_ok=True)


def _run_chunk(group, store, chunk, batch, positions, attribution, kwargs, input_roles, target, device, seed,
               chunk_size, stats, summarize, by_class):
    attrs, delta, targets, preds = _compute(batch, attribution, kwargs, input_roles, target, device, seed, chunk)
    start = chunk * chunk_size
    stop = start + attrs[0].shape[0]
    for i, a in enumerate(attrs):
        group[f"attributions/{i}"][start:stop] = _numpy(a)
    group["predictions"][start:stop] = _numpy(preds)
    group["index"][start:stop] = np.asarray(positions[start:stop], dtype=np.int64)
    if targets is not None:
        group["targets"][start:stop] = _numpy(targets)
    if delta is not None:
        group["convergence_delta"][start:stop] = _numpy(delta)
    # The chunk's summary, overall and per class: a few vectorised reductions, merged later in chunk order.
    values = tuple((summarize(a) if summarize is not None else a).detach() for a in attrs)
    summ = class_summarizer_of_batch(stats, values, targets if by_class else None)
    atomic_torch_save(class_summarizer_state(summ), os.path.join(store, "_summaries", chunk_name(chunk) + ".pt"))
    _write_marker(store, chunk, start, stop)


def _write_marker(store: str, chunk: int, start: int, stop: int) -> None:
    """The last write of a chunk: from now on it is valid."""
    atomic_write_bytes(os.path.join(store, "_done", chunk_name(chunk) + ".json"),
                       json.dumps({"chunk": chunk, "start": start, "stop": stop}).encode())


def _merge_summaries(store: str, n_chunks: int, stats: List[Stat]) -> None:
    path = os.path.join(store, "_summary.pt")
    if os.path.exists(path):
        return
    total: Optional[ClassSummarizer] = None
    for c in range(n_chunks):
        state = torch.load(os.path.join(store, "_summaries", chunk_name(c) + ".pt"), weights_only=True)
        part = load_class_summarizer(state, stats)
        total = part if total is None else total.merge(part)
    atomic_torch_save(class_summarizer_state(total), path)
    shutil.rmtree(os.path.join(store, "_summaries"), ignore_errors=True)  # merged: the per-chunk parts are spent
