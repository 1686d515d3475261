"""Running statistics over a stream of attributions: the summarizers (the statistics are in :mod:`attrkit.dataset.stat`).

A :class:`Summarizer` keeps statistics (:class:`Mean`, :class:`Var`, :class:`StdDev`, :class:`Min`, :class:`Max`,
:class:`Sum`, :class:`MSE`, :class:`Count`) of every tensor passed to ``update`` without keeping the tensors:
one update = one sample (the whole tensor, element-wise statistics). :class:`ClassSummarizer` splits a batch into
examples and keeps one summary per label as well as the overall one. Names, keys and numbers follow Captum 0.9
(``captum.attr.Summarizer`` and friends); the mean and variance are Welford's running updates
(Welford 1962, *Note on a method for calculating corrected sums of squares and products*).

attrkit additions: :meth:`Summarizer.merge` combines two summaries of disjoint streams (Chan, Golub & LeVeque 1979,
*Updating formulae and a pairwise algorithm for computing sample variances*), which is how
:func:`attrkit.attribute_dataset` joins the summaries of its chunks and ranks. Departures from Captum, on purpose:
``StdDev(order=k)`` for k >= 2 is named ``"std_dev(k)"`` (Captum: ``"std_dev" + str(k) + ")"``, a typo);
``ClassSummarizer`` keys a label given as a tensor by its Python value (Captum keys by the tensor object, so every
example of a tensor of labels becomes a class of its own); the summary order is deterministic (Captum's order of
ties such as ``min``/``max`` follows set iteration); a statistic refers to its summarizer weakly, so a dropped
summarizer frees its tensors at once (Captum's back-reference makes a reference cycle).
"""
from __future__ import annotations

import copy
import functools
import weakref
from collections import defaultdict
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .stat import (MSE, CommonStats, Count, GeneralAccumFn, Max, Mean, Min, Stat, StatValue, StdDev, Sum,  # noqa: F401
                   Var)

# The running values a statistic keeps (what a summary's state is made of).
_STATE_FIELDS = ("n", "rolling_mean", "prev_mean", "mse", "result")


def _plain(v):
    return v.detach().cpu() if isinstance(v, Tensor) else v


# Update order: a statistic comes after those it reads (StdDev -> Var -> MSE -> Mean -> Count).
_RANK = {Count: 0, Mean: 1, MSE: 2, Var: 3, StdDev: 4}


def _rank(stat: Stat) -> int:
    return _RANK.get(type(stat), 5)  # Min, Max, Sum and custom stats last


def _complete_and_order(stats: List[Stat]) -> Tuple[List[Stat], List[int]]:
    """Add the statistics the requested ones depend on, order them for updating, and return the positions
    of the requested ones (the summary's keys, in update order)."""
    if not isinstance(stats, (list, tuple)) or not all(isinstance(s, Stat) for s in stats):
        raise TypeError("`stats` must be a list of Stat objects, e.g. [Mean(), StdDev()] or CommonStats().")
    chosen: List[Stat] = []
    for s in stats:  # de-duplicate, keeping the first of equal stats
        if s not in chosen:
            chosen.append(s)
    everything = list(chosen)

    def need(s: Stat) -> None:
        if s not in everything:
            everything.append(s)

    for s in chosen:
        if type(s) is StdDev:
            need(Var(order=s.order))
    deepest = max((_RANK[type(s)] for s in everything if type(s) in (Var, MSE, Mean, Count)), default=None)
    if deepest is not None:  # Var -> MSE -> Mean -> Count (and, as in Captum, a Var(order=0) not shown)
        for cls in (Var, MSE, Mean, Count):
            if _RANK[cls] <= deepest:
                need(cls())
    ordered = sorted(everything, key=_rank)  # stable: ties keep the order given
    shown = [i for i, s in enumerate(ordered) if any(s is c for c in chosen)]
    return ordered, shown


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float)


class SummarizerSingleTensor:
    """Summarizes one stream of tensors (use :class:`Summarizer` unless you need this directly).

    Running statistics after Welford (1962), *Note on a method for calculating corrected sums of squares and products*, https://doi.org/10.1080/00401706.1962.10490022.

    Example:
        >>> import torch
        >>> from attrkit import SummarizerSingleTensor, Count, Mean
        >>> s = SummarizerSingleTensor([Count(), Mean()], summary_stats_indices=[1])
        >>> s.update(torch.tensor([2.0])); s.update(torch.tensor([4.0]))
        >>> s.summary
        {'mean': tensor([3.])}

    Args:
        stats: every statistic to update, in update order (dependencies first).
        summary_stats_indices: positions in ``stats`` of those shown by :attr:`summary`.
    """

    def __init__(self, stats: List[Stat], summary_stats_indices: List[int]) -> None:
        self._stats = stats
        self._stat_to_stat = {s: s for s in stats}
        self._summary_stats = [stats[i] for i in summary_stats_indices]
        for s in stats:
            s._other_stats = weakref.ref(self)
            s.init()

    def update(self, x: Tensor) -> None:
        """Add one sample."""
        for s in self._stats:
            s.update(x)

    def get(self, stat: Stat) -> Optional[Stat]:
        """The statistic of this summarizer equal to ``stat`` (same class and parameters), or None."""
        return self._stat_to_stat.get(stat)

    def merge(self, other: "SummarizerSingleTensor") -> None:
        """Fold in the summary of a later, disjoint stream (an attrkit addition)."""
        count = self.get(Count())
        n_self = (count.get() or 0) if count is not None else 0
        n_other = (other.get(Count()).get() or 0) if count is not None else 0
        for mine, theirs in zip(self._stats, other._stats):
            mine.merge(theirs, n_self, n_other)  # Count is merged first but n_self/n_other were read before

    @property
    def summary(self) -> Dict[str, Optional[StatValue]]:
        """``{stat.name: stat.get()}`` for the requested statistics."""
        return {s.name: s.get() for s in self._summary_stats}

    def state_dict(self) -> List[Dict[str, Any]]:
        """The running values of each statistic, as tensors and numbers (an attrkit addition)."""
        return [{f: _plain(getattr(stat, f)) for f in _STATE_FIELDS
                 if hasattr(stat, f) and not isinstance(getattr(stat, f), Stat)} for stat in self._stats]

    def load_state_dict(self, state: List[Dict[str, Any]]) -> None:
        """Restore what :meth:`state_dict` returned (for the same statistics)."""
        for stat, fields in zip(self._stats, state):
            for f, v in fields.items():
                setattr(stat, f, v)


class Summarizer:
    """Running statistics of a tensor, or of each tensor of a tuple, over many ``update`` calls.

    Each ``update(x)`` is one sample; the statistics are element-wise over samples (``x`` keeps its shape).
    Mean and variance are Welford's running updates; :meth:`merge` joins summaries of disjoint streams
    (Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise algorithm for computing sample variances*).

    Args:
        stats: the statistics to keep, e.g. ``[Mean(), StdDev()]`` or :func:`CommonStats`.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Mean, StdDev
        >>> summ = Summarizer([Mean(), StdDev()])
        >>> for x in (torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])):
        ...     summ.update(x)
        >>> summ.summary["mean"], summ.summary["std_dev"]
        (tensor([2., 4.]), tensor([1., 2.], dtype=torch.float64))
    """

    def __init__(self, stats: List[Stat]) -> None:
        self._summarizers: List[SummarizerSingleTensor] = []
        self._is_inputs_tuple: Optional[bool] = None
        self._stats, self._summary_stats_indicies = _complete_and_order(stats)

    def _copy_stats(self) -> List[Stat]:
        return copy.deepcopy(self._stats)

    def _new_single(self) -> SummarizerSingleTensor:
        return SummarizerSingleTensor(self._copy_stats(), self._summary_stats_indicies)

    def state_dict(self) -> Dict[str, Any]:
        """The summary as nested dicts of tensors and numbers, safe for ``torch.load(weights_only=True)``
        (an attrkit addition; :func:`attrkit.attribute_dataset` stores its summaries this way)."""
        return {"is_tuple": self._is_inputs_tuple, "inputs": [s.state_dict() for s in self._summarizers]}

    def load_state_dict(self, state: Dict[str, Any]) -> "Summarizer":
        """Restore what :meth:`state_dict` returned, into a summarizer of the same statistics; returns ``self``."""
        self._is_inputs_tuple = state["is_tuple"]
        self._summarizers = []
        for inp in state["inputs"]:
            single = self._new_single()
            single.load_state_dict(inp)
            self._summarizers.append(single)
        return self

    def update(self, x: Union[float, Tensor, Tuple[Union[float, Tensor], ...]]) -> None:
        """Add one sample: a tensor (or number), or a tuple of them (one summary each)."""
        is_tuple = isinstance(x, tuple)
        if self._is_inputs_tuple is None:
            self._is_inputs_tuple = is_tuple
        elif self._is_inputs_tuple != is_tuple:
            raise TypeError("`x` must be consistently a tensor or consistently a tuple of tensors across updates; "
                            f"this summarizer was first updated with a {'tuple' if self._is_inputs_tuple else 'tensor'}.")
        for i, inp in enumerate(x if is_tuple else (x,)):
            if i >= len(self._summarizers):
                self._summarizers.append(self._new_single())
            self._summarizers[i].update(_as_tensor(inp))

    def merge(self, other: "Summarizer") -> "Summarizer":
        """Fold in a summarizer of the same statistics over a later, disjoint stream; returns ``self``.

        Mean and variance use Chan et al.'s pairwise update, so the result equals (to rounding) one summarizer
        updated with both streams. An attrkit addition (Captum has no merge).
        """
        if not isinstance(other, Summarizer) or [s.name for s in other._stats] != [s.name for s in self._stats]:
            raise TypeError("`other` must be a Summarizer of the same statistics.")
        if other._is_inputs_tuple is None:
            return self
        if self._is_inputs_tuple is None:
            self._is_inputs_tuple = other._is_inputs_tuple
        elif self._is_inputs_tuple != other._is_inputs_tuple:
            raise TypeError("cannot merge a summary of tuples with a summary of tensors.")
        for i, theirs in enumerate(other._summarizers):
            if i >= len(self._summarizers):
                self._summarizers.append(SummarizerSingleTensor(copy.deepcopy(theirs._stats),
                                                                [i for i, s in enumerate(theirs._stats)
                                                                 if any(s is t for t in theirs._summary_stats)]))
            else:
                self._summarizers[i].merge(theirs)
        return self

    @property
    def summary(self) -> Optional[Union[Dict[str, Optional[StatValue]], List[Dict[str, Optional[StatValue]]]]]:
        """``{name: value}`` of each statistic (a list of those for tuple input); None before any update."""
        if not self._summarizers:
            return None
        out = [s.summary for s in self._summarizers]
        return out if self._is_inputs_tuple else out[0]


def _label_key(label):
    return label.item() if isinstance(label, Tensor) and label.dim() == 0 else label


class ClassSummarizer(Summarizer):
    """A :class:`Summarizer` over the examples of a batch, overall and per label.

    ``update(x, labels)`` splits ``x`` (a tensor or tuple of tensors, batch first) into examples and adds each
    to the overall summary and to its label's. Without labels the whole ``x`` is one sample, as in
    :class:`Summarizer`. With labels, :attr:`summary` and each of :attr:`class_summaries` are lists (one
    dict per input tensor), as in Captum. Statistics as in :class:`Summarizer` (Welford (1962), running mean and variance).

    Example:
        >>> import torch
        >>> from attrkit import ClassSummarizer, Mean
        >>> summ = ClassSummarizer([Mean()])
        >>> summ.update(torch.tensor([[1.0], [2.0], [4.0]]), labels=[0, 1, 0])
        >>> summ.class_summaries[0][0]["mean"], summ.summary[0]["mean"]
        (tensor([2.5000]), tensor([2.3333]))
    """

    def __init__(self, stats: List[Stat]) -> None:
        super().__init__(stats)
        self._requested = list(stats)
        self.summaries: Dict[Any, Summarizer] = defaultdict(functools.partial(Summarizer, stats=self._requested))

    def update(self, x, labels=None) -> None:  # type: ignore[override]
        """Add the examples of ``x``; ``labels``: one per example (list or tensor), or one for all."""
        if labels is None:
            super().update(x)
            return
        xs = x if isinstance(x, tuple) else (x,)
        if not all(isinstance(t, Tensor) for t in xs):
            raise TypeError("`x` must be a tensor or a tuple of tensors (batch first) when `labels` are given.")
        labels = labels if isinstance(labels, (list, Tensor)) else [labels]
        if len(labels) > 1:
            for t in xs:
                if t.size(0) != len(labels):
                    raise ValueError(f"`labels` has {len(labels)} entries but `x` has batch size {t.size(0)}; "
                                     "give one label per example, or one label for all.")
        for i in range(xs[0].size(0)):
            label = _label_key(labels[0] if len(labels) == 1 else labels[i])
            self.summaries[label].update(tuple(t[i] for t in xs))
            super().update(tuple(t[i].clone() for t in xs))

    def merge(self, other: "ClassSummarizer") -> "ClassSummarizer":
        """Fold in a class summarizer over a later, disjoint stream (overall and per label)."""
        super().merge(other)
        for key, summ in other.summaries.items():
            self.summaries[key].merge(summ)
        return self

    @property
    def class_summaries(self) -> Dict[Any, Any]:
        """``{label: summary}`` for every label seen."""
        return {key: value.summary for key, value in self.summaries.items()}

    def state_dict(self) -> Dict[str, Any]:  # type: ignore[override]
        """The overall summary and each label's, as nested dicts of tensors and numbers."""
        return {"overall": super().state_dict(), "classes": [(k, v.state_dict()) for k, v in self.summaries.items()]}

    def load_state_dict(self, state: Dict[str, Any]) -> "ClassSummarizer":  # type: ignore[override]
        """Restore what :meth:`state_dict` returned; returns ``self``."""
        super().load_state_dict(state["overall"])
        self.summaries.clear()
        for key, sub in state["classes"]:
            self.summaries[key].load_state_dict(sub)
        return self


# -- vectorised summaries of a whole batch (used by attribute_dataset for each chunk) -------------------------------
def _batch_state(stat: Stat, x: Tensor) -> bool:
    """Set ``stat`` to its value over the examples of ``x`` (batch first); False if it cannot be vectorised."""
    n = x.shape[0]
    if type(stat) is Count:
        stat.n = n
    elif type(stat) in (Mean, MSE):
        mean = (x if x.is_floating_point() else x.double()).mean(0)
        if type(stat) is Mean:
            stat.rolling_mean = mean
        else:
            stat.prev_mean = mean
            stat.mse = ((x - mean) ** 2).sum(0) if n > 1 else None
    elif type(stat) in (Var, StdDev):
        pass  # computed from Count and MSE
    elif isinstance(stat, GeneralAccumFn):
        if stat.fn is torch.min:
            stat.result = x.amin(0)
        elif stat.fn is torch.max:
            stat.result = x.amax(0)
        elif stat.fn is torch.add:
            stat.result = x.sum(0, dtype=x.dtype)
        else:
            result = x[0]
            for row in x[1:]:
                result = stat.fn(result, row)
            stat.result = result
    else:
        return False
    return True


def _summarizer_of_batch(stats: List[Stat], xs: Tuple[Tensor, ...]) -> Summarizer:
    """A :class:`Summarizer` holding the statistics of every example of ``xs`` (a tuple of batch-first tensors),
    equal (to rounding) to one ``update`` per example, in a few vectorised reductions."""
    summ = Summarizer(stats)
    summ._is_inputs_tuple = True
    for x in xs:
        single = summ._new_single()
        if not all(_batch_state(s, x) for s in single._stats):  # a custom statistic: one update per example
            single = summ._new_single()
            for row in x:
                single.update(row)
        summ._summarizers.append(single)
    return summ


def class_summarizer_of_batch(stats: List[Stat], xs: Tuple[Tensor, ...], labels=None) -> ClassSummarizer:
    """A :class:`ClassSummarizer` of every example of ``xs``, overall and per label (None: overall only)."""
    out = ClassSummarizer(stats)
    overall = _summarizer_of_batch(stats, xs)
    out._summarizers, out._is_inputs_tuple = overall._summarizers, True
    if labels is not None:
        keys = [_label_key(k) for k in (labels.tolist() if isinstance(labels, Tensor) else list(labels))]
        for key in dict.fromkeys(keys):  # first-appearance order, as per-example updates would give
            rows = torch.tensor([i for i, k in enumerate(keys) if k == key], device=xs[0].device)
            out.summaries[key] = _summarizer_of_batch(stats, tuple(x.index_select(0, rows) for x in xs))
    return out
