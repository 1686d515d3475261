"""The on-disk layout of :func:`attrkit.attribute_dataset` results, and its reader.

A store is a zarr (v3) group on a local or shared file system::

    store/
      zarr.json                 group metadata; attrs["attrkit"] = the run's settings and what it was computed from
                                (method, its settings, model and data fingerprints: attrkit.dataset.fingerprint)
      attributions/0, 1, ...    one array per attributed input, shape (N, *attribution shape), chunked by chunk_size
      targets, predictions, index, (convergence_delta)   (N,) arrays, same chunking
      _summaries/chunk_XXXXXX.pt   the summary of each chunk (tensors only; deleted once merged)
      _done/chunk_XXXXXX.json      completion markers, written atomically after a chunk's data and summary; each
                                   holds the hash of the chunk's first example (checked on later calls)
      _summary.pt                  the merged summary, written once every chunk is done

zarr is used because each chunk is a file of its own (ranks write theirs independently, no locking) and reading
is lazy and NumPy-like (``store.attributions[100:200]`` reads two chunks). zarr writes chunk files in place, so a
killed run can leave a half-written chunk: the marker written after it (write to a temporary name, then
``os.replace``) is what makes it valid, and the reader refuses to hand out data while any marker is missing.
``_done/`` itself is created last when the store is created, so a store interrupted before its arrays exist is
recognised and re-created on the next call.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from .stat import Stat, stats_from_specs
from .summarizer import ClassSummarizer


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def chunk_name(chunk: int) -> str:
    return f"chunk_{chunk:06d}"


# -- writing ----------------------------------------------------------------------------------------------------
class ChunkResult(NamedTuple):
    """What one chunk's ``attribute`` call gave: attributions (a tuple), delta, targets and predictions."""

    attributions: Tuple[torch.Tensor, ...]
    delta: Optional[torch.Tensor]
    targets: Optional[torch.Tensor]
    predictions: torch.Tensor


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def _columns(result: ChunkResult) -> Dict[str, torch.Tensor]:
    cols = {f"attributions/{i}": a for i, a in enumerate(result.attributions)}
    cols["predictions"] = result.predictions
    if result.targets is not None:
        cols["targets"] = result.targets
    if result.delta is not None:
        cols["convergence_delta"] = result.delta
    return cols


def check_path(path: str) -> None:
    """A store is a folder: a regular file there is a ``ValueError`` (before anything is written)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`store` must be a folder (a zarr store), but {path!r} is a file; choose another path.")


def read_settings(path: str) -> Optional[Dict[str, Any]]:
    """The settings recorded in the store at ``path``, or None when there is no store."""
    meta = os.path.join(path, "zarr.json")
    if not os.path.isfile(meta):
        return None
    with open(meta) as f:
        return json.load(f).get("attributes", {}).get("attrkit")


def is_created(path: str) -> bool:
    """Whether the store's creation finished (its arrays exist): ``_done/`` is created last."""
    return os.path.isdir(os.path.join(path, "_done"))


def create(path: str, settings: Dict[str, Any], first: ChunkResult, n: int, chunk_size: int) -> None:
    """Create (or re-create) an empty store shaped like ``first`` for ``n`` examples."""
    import zarr
    if os.path.exists(path):
        shutil.rmtree(path)
    group = zarr.open_group(path, mode="w")
    group.attrs["attrkit"] = settings
    cols = dict(_columns(first), index=torch.zeros(1, dtype=torch.int64))
    for name, example in cols.items():
        arr = _numpy(example)
        group.create_array(name, shape=(n, *arr.shape[1:]), chunks=(chunk_size, *arr.shape[1:]), dtype=arr.dtype,
                           fill_value=0)
    os.makedirs(os.path.join(path, "_summaries"), exist_ok=True)
    os.makedirs(os.path.join(path, "_done"), exist_ok=True)  # last: the store is created


def write_chunk(group, path: str, chunk: int, start: int, result: ChunkResult, positions, summary) -> None:
    """Write a chunk's rows and its summary (not yet valid: :func:`write_marker` makes it so)."""
    stop = start + result.attributions[0].shape[0]
    for name, values in _columns(result).items():
        group[name][start:stop] = _numpy(values)
    group["index"][start:stop] = np.asarray(positions, dtype=np.int64)
    atomic_torch_save(summary.state_dict(), os.path.join(path, "_summaries", chunk_name(chunk) + ".pt"))


def write_marker(path: str, chunk: int, start: int, stop: int, example: str) -> None:
    """The last write of a chunk: from now on it is valid. ``example``: the hash of its first example."""
    atomic_write_bytes(os.path.join(path, "_done", chunk_name(chunk) + ".json"),
                       json.dumps({"chunk": chunk, "start": start, "stop": stop, "example": example}).encode())


def markers(path: str) -> Dict[int, Dict[str, Any]]:
    """The completion markers of the done chunks, by chunk."""
    folder = os.path.join(path, "_done")
    out = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.startswith("chunk_") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                out[int(name[6:12])] = json.load(f)
    return out


def merge_summaries(path: str, n_chunks: int, stats: List[Stat]) -> None:
    """Merge the chunks' summaries in chunk order into ``_summary.pt`` (once), then drop the parts."""
    target = os.path.join(path, "_summary.pt")
    if os.path.exists(target):
        return
    total: Optional[ClassSummarizer] = None
    for c in range(n_chunks):
        state = torch.load(os.path.join(path, "_summaries", chunk_name(c) + ".pt"), weights_only=True)
        part = ClassSummarizer(stats).load_state_dict(state)
        total = part if total is None else total.merge(part)
    atomic_torch_save(total.state_dict(), target)
    shutil.rmtree(os.path.join(path, "_summaries"), ignore_errors=True)  # merged: the per-chunk parts are spent


def _unwrap(summary):
    return summary[0] if isinstance(summary, list) and len(summary) == 1 else summary


class DatasetAttribution:
    """A store written by :func:`attrkit.attribute_dataset`, read lazily.

    Attributes:
        path: the store's folder.
        settings: the run's settings (method, arguments, number of examples, chunk size, ...).

    Arrays are zarr arrays (index them like NumPy: ``res.attributions[:10]``); they are only handed out once every
    chunk is complete (``res.complete``), so a half-written run is never read as valid.
    """

    def __init__(self, path: str, stats: Optional[List[Stat]] = None):
        import zarr
        self.path = os.fspath(path)
        if not os.path.exists(os.path.join(self.path, "zarr.json")):
            raise FileNotFoundError(f"no attribute_dataset store at {self.path!r}")
        self.group = zarr.open_group(self.path, mode="r")
        self.settings: Dict[str, Any] = dict(self.group.attrs.get("attrkit", {}))
        if not self.settings:
            raise ValueError(f"{self.path!r} is a zarr group but not an attribute_dataset store (no 'attrkit' attrs).")
        self._stats = stats
        self._merged: Optional[ClassSummarizer] = None

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        return int(self.settings["n_examples"])

    @property
    def chunk_size(self) -> int:
        return int(self.settings["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return -(-self.n_examples // self.chunk_size)

    def __len__(self) -> int:
        return self.n_examples

    @property
    def completed_chunks(self) -> List[int]:
        """The chunks whose completion marker exists."""
        folder = os.path.join(self.path, "_done")
        if not os.path.isdir(folder):
            return []
        return sorted(int(f[6:12]) for f in os.listdir(folder) if f.startswith("chunk_") and f.endswith(".json"))

    @property
    def complete(self) -> bool:
        """Whether every chunk has been written and marked done."""
        return len(self.completed_chunks) == self.n_chunks

    def _require_complete(self) -> None:
        if not self.complete:
            missing = sorted(set(range(self.n_chunks)) - set(self.completed_chunks))
            raise RuntimeError(f"the store at {self.path!r} is incomplete: {len(missing)} of {self.n_chunks} chunks are "
                               f"not done (first: {missing[:5]}); call attribute_dataset again with the same "
                               "arguments to resume.")

    def _array(self, name: str):
        self._require_complete()
        return self.group[name] if name in self.group else None

    # -- arrays --------------------------------------------------------------------------------------------------
    @property
    def attributions(self):
        """The attributions: one zarr array ``(N, ...)``, or a tuple of them for several inputs."""
        self._require_complete()
        arrays = tuple(self.group[f"attributions/{i}"] for i in range(int(self.settings["n_inputs"])))
        return arrays if self.settings["inputs_tuple"] else arrays[0]

    @property
    def targets(self):
        """The target explained for each example (None when ``target=None``)."""
        return self._array("targets")

    @property
    def predictions(self):
        """The model's prediction for each example (arg-max class, or the output when it is one number)."""
        return self._array("predictions")

    @property
    def index(self):
        """The dataset index of each row."""
        return self._array("index")

    @property
    def convergence_delta(self):
        """The convergence delta of each example, when the method was asked for it."""
        return self._array("convergence_delta")

    # -- summaries -----------------------------------------------------------------------------------------------
    def _summarizer(self) -> ClassSummarizer:
        if self._merged is None:
            self._require_complete()
            stats = self._stats or stats_from_specs(self.settings["stats"])
            state = torch.load(os.path.join(self.path, "_summary.pt"), weights_only=True)
            self._merged = ClassSummarizer(stats).load_state_dict(state)
        return self._merged

    @property
    def summary(self):
        """Statistics of ``summarize(attribution)`` over all examples: ``{name: tensor}`` (a list of those for
        tuple inputs)."""
        return _unwrap(self._summarizer().summary)

    @property
    def class_summaries(self) -> Dict[Any, Any]:
        """The same per target class (empty when there were no targets or ``by_class=False``)."""
        return {k: _unwrap(v) for k, v in sorted(self._summarizer().class_summaries.items(), key=lambda kv: str(kv[0]))}

    def __repr__(self) -> str:
        s = self.settings
        return (f"DatasetAttribution({self.path!r}, method={s.get('method')}, examples={self.n_examples}, "
                f"chunks={len(self.completed_chunks)}/{self.n_chunks} done)")


def open_store(path: str) -> DatasetAttribution:
    """Open a store written by :func:`attrkit.attribute_dataset` for reading."""
    return DatasetAttribution(path)

