"""The on-disk layout of :func:`attrkit.attribute_dataset` results, and its reader.

A store is a zarr (v3) group on a local or shared file system::

    store/
      zarr.json                 group metadata; attrs["attrkit"] = the run's settings (method, arguments, ...)
      attributions/0, 1, ...    one array per attributed input, shape (N, *attribution shape), chunked by chunk_size
      targets, predictions, index, (convergence_delta)   (N,) arrays, same chunking
      _summaries/chunk_XXXXXX.pt   the summary of each chunk (tensors only; deleted once merged)
      _done/chunk_XXXXXX.json      completion markers, written atomically after a chunk's data and summary
      _summary.pt                  the merged summary, written once every chunk is done

zarr is used because each chunk is a file of its own (ranks write theirs independently, no locking) and reading
is lazy and NumPy-like (``store.attributions[100:200]`` reads two chunks). zarr writes chunk files in place, so a
killed run can leave a half-written chunk: the marker written after it (write to a temporary name, then
``os.replace``) is what makes it valid, and the reader refuses to hand out data while any marker is missing.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Optional

import torch

from .summarizer import ClassSummarizer, Stat, Summarizer, SummarizerSingleTensor

_STAT_FIELDS = ("n", "rolling_mean", "prev_mean", "mse", "result")


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


# -- summaries as plain tensors (safe to load with weights_only=True) ------------------------------------------
def _single_state(s: SummarizerSingleTensor) -> List[Dict[str, Any]]:
    out = []
    for stat in s._stats:
        fields = {}
        for f in _STAT_FIELDS:
            if hasattr(stat, f) and not isinstance(getattr(stat, f), Stat):
                v = getattr(stat, f)
                fields[f] = v.detach().cpu() if isinstance(v, torch.Tensor) else v
        out.append(fields)
    return out


def _summarizer_state(s: Summarizer) -> Dict[str, Any]:
    return {"is_tuple": s._is_inputs_tuple, "inputs": [_single_state(x) for x in s._summarizers]}


def _load_summarizer(state: Dict[str, Any], stats: List[Stat], cls=Summarizer) -> Summarizer:
    summ = cls(stats)
    summ._is_inputs_tuple = state["is_tuple"]
    for inp in state["inputs"]:
        single = SummarizerSingleTensor(summ._copy_stats(), summ._summary_stats_indicies)
        for stat, fields in zip(single._stats, inp):
            for f, v in fields.items():
                setattr(stat, f, v)
        summ._summarizers.append(single)
    return summ


def class_summarizer_state(s: ClassSummarizer) -> Dict[str, Any]:
    """A :class:`ClassSummarizer` as nested dicts of tensors and numbers."""
    return {"overall": _summarizer_state(s), "classes": [(k, _summarizer_state(v)) for k, v in s.summaries.items()]}


def load_class_summarizer(state: Dict[str, Any], stats: List[Stat]) -> ClassSummarizer:
    """Rebuild a :class:`ClassSummarizer` from :func:`class_summarizer_state`."""
    summ = _load_summarizer(state["overall"], stats, ClassSummarizer)
    for key, sub in state["classes"]:
        summ.summaries[key] = _load_summarizer(sub, stats)
    return summ


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
            from .stream import _stats_from_settings
            stats = self._stats or _stats_from_settings(self.settings)
            state = torch.load(os.path.join(self.path, "_summary.pt"), weights_only=True)
            self._merged = load_class_summarizer(state, stats)
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


def write_settings_json(settings: Dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)
