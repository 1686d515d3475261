"""``attribute_dataset``: run any attribution method over a dataset, streaming per-example results to disk.

The explained examples (:mod:`attrkit.dataset.source`) are split into chunks of ``chunk_size`` consecutive ones.
Each chunk is attributed in one ``attribute`` call (seeded with ``seed + chunk``, so stochastic methods give the
same numbers whoever computes the chunk), written to the store (:mod:`attrkit.dataset.store`) together with its
summary (vectorised over the chunk, overall and per target class), and then marked
done. A second call with the same arguments skips the chunks that are done: that is resume. Under
``torch.distributed`` (``torchrun``) rank ``r`` of ``W`` takes chunks ``r, r + W, r + 2W, ...`` (a
``DistributedSampler``-style split at chunk granularity, without padding, so any ``W`` works); once every rank is
done, rank 0 merges the chunks' summaries in chunk order. Because chunk boundaries, seeds and the merge order do
not depend on ``W`` or on interruptions, the store and the summaries are identical for 1 or ``W`` processes, and for
an interrupted and resumed run.

The run is one small object, :class:`_Run`: its settings (:class:`RunSettings`), the store it writes
(:mod:`attrkit.dataset.store`) and the per-chunk step. Before any stored result is returned or resumed into, the
store's record of what it was computed from (:mod:`attrkit.dataset.fingerprint`: data, model and its mode, method
and its settings) must equal this call's, or the call fails naming what changed.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset

from . import store as disk
from .distributed import all_ok, barrier, init_distributed, rank_world  # noqa: F401  (init_distributed: public)
from .fingerprint import describe, example_digest, method_config, model_fingerprint, unfingerprintable_parts
from .roles import elements, input_then_label, parse_roles, split_batch
from .stat import CommonStats, Stat, stat_spec
from .store import ChunkResult, DatasetAttribution
from .source import DataSource
from .summarizer import class_summarizer_of_batch

FORMAT_VERSION = 2
_CHECKED_CHUNKS = 8  # done chunks whose first example is re-hashed on a later call
_WHY = {
    "data": "the examples changed (other data, another transform or order)",
    "model_fingerprint": "the model's parameters or buffers changed",
    "model_mode": "the model's train/eval mode changed",
    "method_config": "the attribution object's own settings changed",
    "summarize": "another `summarize` function",
}


@dataclasses.dataclass
class RunSettings:
    """What an ``attribute_dataset`` call asks for, checked (see its docstring for each field)."""

    target: Union[str, int, None]
    input_roles: Optional[Sequence[Any]]
    chunk_size: int
    attribute_kwargs: Dict[str, Any]
    stats: List[Stat]
    summarize: Optional[Callable[[torch.Tensor], torch.Tensor]]
    by_class: bool
    seed: int
    device: Optional[torch.device]
    overwrite: bool
    show_progress: bool

    def __post_init__(self):
        if self.chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {self.chunk_size}.")
        for k in ("target", "additional_forward_args"):
            if k in self.attribute_kwargs:
                raise ValueError(f"`attribute_kwargs` must not contain {k!r}: targets come from `target`, extra "
                                 "model arguments from `input_roles`.")
        self.stats = list(self.stats) if self.stats is not None else CommonStats()
        self.device = torch.device(self.device) if self.device is not None else None


def attribute_dataset(
    attribution,
    data: Union[Dataset, DataLoader],
    store: Union[str, os.PathLike],
    *,
    target: Union[str, int, None] = "label",
    input_roles: Optional[Sequence[Any]] = None,
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
        data: a map-style ``Dataset`` or a ``DataLoader`` over one (its dataset, ``collate_fn``, ``batch_size``,
            ``num_workers``, ``drop_last`` and sampler are used: the examples it yields are explained, in a fixed
            order; a shuffling sampler gives dataset order, a sampler drawing differently on every pass is refused;
            see :mod:`attrkit.dataset.source`).
        store: the folder of the zarr store; created, or resumed when it holds an unfinished run with the same
            settings. A store holding a run with other settings, or computed from other data, another model (its
            parameters, buffers or train/eval mode) or another method, is an error naming what changed (unless
            ``overwrite=True``); see :mod:`attrkit.dataset.fingerprint`. A model behind a callable that cannot be
            fingerprinted (not an ``nn.Module``, nor a method, partial, function or lambda over one) is computed
            but never resumed nor returned from the store again.
        target: ``"label"`` (default: the example's label, the element with role 2), ``"predicted"`` (the model's
            arg-max class), an int (the same class for all), or None (a model with one output per example).
        input_roles: one role per element of an example, as in :class:`DataLoaderAttribution`: 0 attributed input,
            1 extra model argument, 2 label; or names: ``"input"``, ``"forward"``, ``"label"``, ``"ignore"`` (e.g.
            ``("input", "label", "ignore")`` for ``(x, y, index)`` examples). Default: a lone tensor is the input, a
            pair is ``(input, label)``; examples of more elements need ``input_roles``.
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
        device: where inputs go (default: the device of the parameters of the model, also behind a lambda).
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
    _require_zarr()
    source = DataSource(data, indices, num_workers)
    settings = RunSettings(target=target, input_roles=input_roles,
                           chunk_size=int(chunk_size or source.default_chunk_size),
                           attribute_kwargs=dict(attribute_kwargs or {}), stats=stats, summarize=summarize,
                           by_class=bool(by_class), seed=seed, device=device, overwrite=overwrite,
                           show_progress=show_progress)
    run = _Run(attribution, source, os.fspath(store), settings)
    run.open_store()
    run.attribute_pending()
    return run.finish()


def _require_zarr() -> None:
    try:
        import zarr  # noqa: F401
    except ModuleNotFoundError:  # pragma: no cover - zarr is in the `dataset` and `book` extras
        raise ModuleNotFoundError("attribute_dataset writes a zarr store: pip install 'attrkit[dataset]' "
                                  "(or zarr==3.1.6).") from None


class _Run:
    """One ``attribute_dataset`` call: what it computes from, its store, and the step that fills one chunk."""

    def __init__(self, attribution, source: DataSource, path: str, settings: RunSettings):
        self.attribution, self.source, self.path, self.s = attribution, source, path, settings
        self.rank, self.world = rank_world()
        self.n = len(source.positions)
        self.n_chunks = -(-self.n // settings.chunk_size)
        self.probe = source.example(0)
        self.roles = parse_roles(settings.input_roles, len(elements(self.probe)[0]), input_then_label,
                                 find_label=True)
        split = split_batch(self.probe, self.roles)
        if settings.target == "label" and split.label is None:
            raise ValueError("target='label' needs labelled examples, but the data yields unlabeled batches (no "
                             "element with role 'label' (2) in `input_roles`); pass target='predicted', an int, "
                             "or None.")
        fingerprint, mode, modules = model_fingerprint(attribution.forward_func)
        self.device = settings.device or _device_of(modules)
        self.record = self._record(split, fingerprint, mode, modules)

    def _record(self, split, fingerprint, mode, modules) -> Dict[str, Any]:
        """What this run is computed from, as the store records it."""
        s, fwd = self.s, self.attribution.forward_func
        return {
            "format": FORMAT_VERSION, "method": type(self.attribution).__name__,
            "method_config": method_config(self.attribution, modules), "method_args": describe(s.attribute_kwargs),
            "model": type(fwd).__name__, "model_fingerprint": fingerprint, "model_mode": mode,
            "data": example_digest(self.probe, 0), "n_examples": self.n, "chunk_size": s.chunk_size,
            "indices_digest": describe(torch.as_tensor(self.source.positions, dtype=torch.int64))["sha256"],
            "target": s.target if s.target is None or isinstance(s.target, (int, str)) else repr(s.target),
            "input_roles": list(s.input_roles) if s.input_roles is not None else None, "seed": s.seed,
            "stats": [stat_spec(x) for x in s.stats], "summarize": describe(s.summarize), "by_class": s.by_class,
            "n_inputs": len(split.inputs), "inputs_tuple": split.inputs_tuple,
            "input_shapes": [list(x.shape[1:]) for x in split.inputs],
        }

    # -- the store ---------------------------------------------------------------------------------------------
    def open_store(self) -> None:
        """Check an existing store is this run's (every rank, before anyone writes), then rank 0 creates it."""
        import zarr
        disk.check_path(self.path)
        existing = disk.read_settings(self.path)
        error = None
        try:
            if existing is None and os.path.isdir(self.path) and os.listdir(self.path):
                raise ValueError(f"{self.path!r} exists and is not an attribute_dataset store; choose an empty path.")
            if existing is not None and not self.s.overwrite and disk.is_created(self.path):
                self._check_same_run(existing)  # (a store whose creation was interrupted holds nothing: re-created)
        except ValueError as e:
            error = e
        all_ok(error)
        barrier()
        if self.rank == 0 and (existing is None or self.s.overwrite or not disk.is_created(self.path)):
            disk.create(self.path, self.record, self.compute(self.probe, 0), self.n, self.s.chunk_size)
        barrier()
        self.group = zarr.open_group(self.path, mode="r+")

    def _check_same_run(self, existing: Dict[str, Any]) -> None:
        diff = [k for k in sorted(set(self.record) | set(existing)) if self.record.get(k) != existing.get(k)]
        if diff:
            raise ValueError(f"the store {self.path!r} holds a run with other settings (differing: "
                             f"{'; '.join(_difference(k, existing.get(k), self.record.get(k)) for k in diff)}); "
                             "use another path, or overwrite=True to replace it.")
        if self.record["model_fingerprint"] is None:
            raise ValueError(f"the store {self.path!r} cannot be resumed or returned: the model cannot be "
                             "fingerprinted (its forward function reaches "
                             f"{', '.join(unfingerprintable_parts(self.attribution.forward_func))}, which is not an "
                             "nn.Module), so whether the stored results come from this model is unknown. Pass the "
                             "nn.Module (or a bound method or lambda over it), or overwrite=True to recompute.")
        self._check_data()

    def _check_data(self) -> None:
        """Re-hash the first example of a sample of the done chunks: the data must be what they were computed from."""
        done = disk.markers(self.path)
        chunks = sorted(done)
        if len(chunks) > _CHECKED_CHUNKS:
            chunks = [chunks[round(i * (len(chunks) - 1) / (_CHECKED_CHUNKS - 1))] for i in range(_CHECKED_CHUNKS)]
        for c in chunks:
            start = done[c]["start"]
            if example_digest(self.source.example(start), 0) != done[c].get("example"):
                raise ValueError(f"the store {self.path!r} holds a run with other settings (differing: data: "
                                 f"{_WHY['data']}: example {start} (dataset position {self.source.positions[start]}) "
                                 f"is not the one chunk {c} was computed from); use another path, or overwrite=True "
                                 "to replace it.")

    # -- the work ----------------------------------------------------------------------------------------------
    def pending(self) -> List[int]:
        """This rank's chunks (``rank, rank + world, ...``) that are not done."""
        done = disk.markers(self.path)
        return [c for c in range(self.n_chunks) if c % self.world == self.rank and c not in done]

    def _rows(self, chunk: int) -> range:
        return range(chunk * self.s.chunk_size, min(self.n, (chunk + 1) * self.s.chunk_size))

    def attribute_pending(self) -> None:
        """Compute and write every pending chunk of this rank, with a progress bar on rank 0."""
        mine = self.pending()
        rows = [i for c in mine for i in self._rows(c)]
        progress = None
        if self.s.show_progress and self.rank == 0 and rows:
            from tqdm.auto import tqdm
            progress = tqdm(total=len(rows), unit="ex", desc=type(self.attribution).__name__
                            + (f" (rank 0 of {self.world})" if self.world > 1 else ""))
        try:
            if mine:
                for chunk, batch in zip(mine, self.source.loader(rows, self.s.chunk_size)):
                    self.run_chunk(chunk, batch)
                    if progress is not None:
                        progress.update(len(self._rows(chunk)))
        finally:
            if progress is not None:
                progress.close()
        barrier()

    def run_chunk(self, chunk: int, batch) -> None:
        """The per-chunk step: attribute, write the rows and the chunk's summary, then mark the chunk done."""
        result = self.compute(batch, chunk)
        rows = self._rows(chunk)
        values = tuple((self.s.summarize(a) if self.s.summarize is not None else a).detach()
                       for a in result.attributions)
        summary = class_summarizer_of_batch(self.s.stats, values, result.targets if self.s.by_class else None)
        disk.write_chunk(self.group, self.path, chunk, rows.start, result,
                         self.source.positions[rows.start:rows.stop], summary)
        # The hash of the chunk's first example, loaded alone as a later call will (a collate_fn may pad a batch).
        disk.write_marker(self.path, chunk, rows.start, rows.stop, example_digest(self.source.example(rows.start), 0))

    def compute(self, batch, chunk: int) -> ChunkResult:
        """Attribute one batch under the chunk's seed."""
        split = split_batch(batch, self.roles)
        inputs = tuple(_move(x, self.device) for x in split.inputs)
        extra = tuple(_move(x, self.device) for x in split.forward_args)
        with torch.no_grad():
            out = self.attribution.forward_func(*inputs, *extra)
        preds = out.argmax(-1) if out.dim() >= 2 else out
        targets = _resolve_target(self.s.target, _move(split.label, self.device), preds, inputs[0].shape[0])
        devices = []
        if self.device is not None and self.device.type == "cuda":
            devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.s.seed + chunk)
            result = self.attribution.attribute(inputs if split.inputs_tuple else inputs[0], target=targets,
                                                additional_forward_args=extra if extra else None,
                                                **self.s.attribute_kwargs)
        delta = None
        if self.s.attribute_kwargs.get("return_convergence_delta"):
            result, delta = result
        return ChunkResult(result if isinstance(result, tuple) else (result,), delta, targets, preds)

    def merge_summaries(self) -> None:
        disk.merge_summaries(self.path, self.n_chunks, self.s.stats)

    def finish(self) -> DatasetAttribution:
        """Once every rank is done, rank 0 merges the chunks' summaries in chunk order; a reader for everyone."""
        if self.rank == 0:
            self.merge_summaries()
        barrier()
        return DatasetAttribution(self.path, stats=self.s.stats)


def _difference(key: str, stored, now) -> str:
    def short(v):
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    why = f"{_WHY[key]}: " if key in _WHY else ""
    return f"{key}: {why}stored {short(stored)}, now {short(now)}"


def _move(x, device):
    return x.to(device) if device is not None and isinstance(x, torch.Tensor) else x


def _device_of(modules) -> Optional[torch.device]:
    for m in modules:
        p = next(iter(m.parameters()), None)
        if p is not None:
            return p.device
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
