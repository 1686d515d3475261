"""Running statistics over a stream of attributions: the ``Stat`` family and the summarizers.

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
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

StatValue = Union[Tensor, int, float]

__all__ = ["Stat", "Count", "Mean", "MSE", "Var", "StdDev", "GeneralAccumFn", "Min", "Max", "Sum", "CommonStats",
           "StatValue", "Summarizer", "SummarizerSingleTensor", "ClassSummarizer"]


class Stat:
    """A statistic updated one sample at a time. Two stats are equal when their class and parameters are
    (the ``name`` does not count), so a summarizer keeps one of each and shares dependencies.

    Args:
        name: the key of this statistic in a summary; default: the class name in lower case, with its parameters.
    """

    def __init__(self, name: Optional[str] = None, **params: Any) -> None:
        self.params = params
        self._name = name
        # A weak back-reference to the summarizer holding this stat (a strong one would make every summarizer a
        # reference cycle, whose tensors only the cyclic garbage collector frees).
        self._other_stats: Optional[weakref.ReferenceType] = None

    def init(self) -> None:
        """Look up the statistics this one depends on (called once the summarizer holds them all)."""

    def _get_stat(self, stat: "Stat") -> Optional["Stat"]:
        owner = self._other_stats() if self._other_stats is not None else None
        return owner.get(stat) if owner is not None else None

    def update(self, x: Tensor) -> None:
        raise NotImplementedError

    def get(self) -> Optional[StatValue]:
        raise NotImplementedError

    def merge(self, other: "Stat", n_self: int, n_other: int) -> None:
        """Fold ``other`` (the same statistic over a later, disjoint stream) into this one."""

    def __hash__(self) -> int:
        return hash((self.__class__, frozenset(self.params.items())))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Stat) and self.__class__ == other.__class__
                and frozenset(self.params.items()) == frozenset(other.params.items()))

    def __ne__(self, other: object) -> bool:
        return not self == other

    @property
    def name(self) -> str:
        """The key of this statistic in a summary."""
        if self._name is not None:
            return self._name
        default = self.__class__.__name__.lower()
        return default + (f"({self.params})" if self.params else "")


class Count(Stat):
    """The number of updates (samples), the ``n`` of Welford (1962), *Note on a method for calculating corrected sums of squares and products*, https://doi.org/10.1080/00401706.1962.10490022.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Count
        >>> s = Summarizer([Count()]); s.update(torch.ones(2)); s.update(torch.ones(2))
        >>> s.summary
        {'count': 2}
    """

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.n: Optional[int] = None

    def get(self) -> Optional[int]:
        return self.n

    def update(self, x: Tensor) -> None:
        self.n = (self.n or 0) + 1

    def merge(self, other, n_self, n_other):
        self.n = None if self.n is None and other.n is None else (self.n or 0) + (other.n or 0)


class Mean(Stat):
    """The running mean, ``mean += (x - mean) / n`` (a float tensor; integer input becomes float64).

    Welford (1962), *Note on a method for calculating corrected sums of squares and products*, https://doi.org/10.1080/00401706.1962.10490022.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Mean
        >>> s = Summarizer([Mean()]); s.update(torch.tensor([1.0, 2.0])); s.update(torch.tensor([3.0, 4.0]))
        >>> s.summary["mean"]
        tensor([2., 3.])
    """

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.rolling_mean: Optional[Tensor] = None
        self.n: Optional[Count] = None

    def init(self) -> None:
        self.n = self._get_stat(Count())

    def get(self) -> Optional[Tensor]:
        return self.rolling_mean

    def update(self, x: Tensor) -> None:
        if self.rolling_mean is None:
            self.rolling_mean = x.clone() if x.is_floating_point() else x.double()
        else:
            self.rolling_mean = self.rolling_mean + (x - self.rolling_mean) / self.n.get()

    def merge(self, other, n_self, n_other):
        if other.rolling_mean is None:
            return
        if self.rolling_mean is None:
            self.rolling_mean = other.rolling_mean.clone()
            return
        self.rolling_mean = self.rolling_mean + (other.rolling_mean - self.rolling_mean) * (n_other / (n_self + n_other))


class MSE(Stat):
    """The running sum of squared deviations from the mean, ``sum((x - mean)**2)`` (the ``M2`` of
    Welford (1962), *Note on a method for calculating corrected sums of squares and products*, https://doi.org/10.1080/00401706.1962.10490022; zero after one sample).

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, MSE
        >>> s = Summarizer([MSE()])
        >>> for v in (1.0, 2.0, 3.0):
        ...     s.update(torch.tensor([v]))
        >>> s.summary["mse"]
        tensor([2.])
    """

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.prev_mean: Optional[Tensor] = None
        self.mse: Optional[Tensor] = None
        self.mean: Optional[Mean] = None

    def init(self) -> None:
        self.mean = self._get_stat(Mean())

    def get(self) -> Optional[Tensor]:
        if self.mse is None and self.prev_mean is not None:
            return torch.zeros_like(self.prev_mean)
        return self.mse

    def update(self, x: Tensor) -> None:
        mean = self.mean.get()
        if mean is None:
            return
        if self.prev_mean is not None:
            step = (x - self.prev_mean) * (x - mean)
            self.mse = step if self.mse is None else self.mse + step
        self.prev_mean = mean.clone()

    def merge(self, other, n_self, n_other):
        # Called before Mean.merge, so self.prev_mean / other.prev_mean are both sides' means.
        if other.prev_mean is None:
            return
        if self.prev_mean is None:
            self.prev_mean, self.mse = other.prev_mean.clone(), None if other.mse is None else other.mse.clone()
            return
        delta = other.prev_mean - self.prev_mean
        n = n_self + n_other
        total = self.get() + other.get() + delta * delta * (n_self * n_other / n)
        self.mse = total
        self.prev_mean = self.prev_mean + delta * (n_other / n)


class Var(Stat):
    """The variance ``mse / (n - order)``: ``order=0`` the population variance (key ``"variance"``),
    ``order=1`` the sample variance (key ``"sample_variance"``); zeros while ``n <= order``.

    Welford (1962), *Note on a method for calculating corrected sums of squares and products*, https://doi.org/10.1080/00401706.1962.10490022.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Var
        >>> s = Summarizer([Var(), Var(order=1)])
        >>> for v in (1.0, 2.0, 3.0):
        ...     s.update(torch.tensor([v]))
        >>> s.summary
        {'variance': tensor([0.6667], dtype=torch.float64), 'sample_variance': tensor([1.], dtype=torch.float64)}
    """

    def __init__(self, name: Optional[str] = None, order: int = 0) -> None:
        if name is None:
            name = {0: "variance", 1: "sample_variance"}.get(order, f"variance({order})")
        super().__init__(name=name, order=order)
        self.order = order
        self.mse_stat: Optional[MSE] = None
        self.n_stat: Optional[Count] = None

    def init(self) -> None:
        self.mse_stat = self._get_stat(MSE())
        self.n_stat = self._get_stat(Count())

    def update(self, x: Tensor) -> None:
        pass

    def get(self) -> Optional[Tensor]:
        mse, n = self.mse_stat.get(), self.n_stat.get()
        if mse is None:
            return None
        if n is None or n <= self.order:
            return torch.zeros_like(mse)
        return mse.to(torch.float64) / (n - self.order)


class StdDev(Stat):
    """The standard deviation, the square root of :class:`Var` of the same ``order``
    (keys ``"std_dev"``, ``"sample_std_dev"``, then ``"std_dev(k)"``). Welford (1962), *Note on a method for calculating corrected sums of squares and products*, https://doi.org/10.1080/00401706.1962.10490022.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, StdDev
        >>> s = Summarizer([StdDev(order=1)])
        >>> for v in (1.0, 3.0):
        ...     s.update(torch.tensor([v]))
        >>> s.summary["sample_std_dev"]
        tensor([1.4142], dtype=torch.float64)
    """

    def __init__(self, name: Optional[str] = None, order: int = 0) -> None:
        if name is None:
            name = {0: "std_dev", 1: "sample_std_dev"}.get(order, f"std_dev({order})")
        super().__init__(name=name, order=order)
        self.order = order
        self.var_stat: Optional[Var] = None

    def init(self) -> None:
        self.var_stat = self._get_stat(Var(order=self.order))

    def update(self, x: Tensor) -> None:
        pass

    def get(self) -> Optional[Tensor]:
        var = self.var_stat.get()
        return None if var is None else torch.pow(var, 0.5)


class GeneralAccumFn(Stat):
    """``result = fn(result, x)`` over the updates, for an associative ``fn``."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], name: Optional[str] = None) -> None:
        super().__init__(name=name)
        self.result: Optional[Tensor] = None
        self.fn = fn

    def get(self) -> Optional[Tensor]:
        return self.result

    def update(self, x: Tensor) -> None:
        self.result = x if self.result is None else self.fn(self.result, x)

    def merge(self, other, n_self, n_other):
        if other.result is not None:
            self.result = other.result if self.result is None else self.fn(self.result, other.result)


class Min(GeneralAccumFn):
    """The element-wise minimum (``min_fn`` replaces ``torch.min``). Merged across chunks and ranks as in Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise algorithm for computing sample variances*.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Min, Max, Sum
        >>> s = Summarizer([Min(), Max(), Sum()])
        >>> s.update(torch.tensor([1.0, 5.0])); s.update(torch.tensor([3.0, 2.0]))
        >>> s.summary
        {'min': tensor([1., 2.]), 'max': tensor([3., 5.]), 'sum': tensor([4., 7.])}
    """

    def __init__(self, name: Optional[str] = None, min_fn: Callable[[Tensor, Tensor], Tensor] = torch.min) -> None:
        super().__init__(name=name, fn=min_fn)


class Max(GeneralAccumFn):
    """The element-wise maximum (``max_fn`` replaces ``torch.max``). Merged across chunks and ranks as in Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise algorithm for computing sample variances*.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Min, Max, Sum
        >>> s = Summarizer([Min(), Max(), Sum()])
        >>> s.update(torch.tensor([1.0, 5.0])); s.update(torch.tensor([3.0, 2.0]))
        >>> s.summary
        {'min': tensor([1., 2.]), 'max': tensor([3., 5.]), 'sum': tensor([4., 7.])}
    """

    def __init__(self, name: Optional[str] = None, max_fn: Callable[[Tensor, Tensor], Tensor] = torch.max) -> None:
        super().__init__(name=name, fn=max_fn)


class Sum(GeneralAccumFn):
    """The element-wise sum (``add_fn`` replaces ``torch.add``). Merged across chunks and ranks as in Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise algorithm for computing sample variances*.

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Min, Max, Sum
        >>> s = Summarizer([Min(), Max(), Sum()])
        >>> s.update(torch.tensor([1.0, 5.0])); s.update(torch.tensor([3.0, 2.0]))
        >>> s.summary
        {'min': tensor([1., 2.]), 'max': tensor([3., 5.]), 'sum': tensor([4., 7.])}
    """

    def __init__(self, name: Optional[str] = None, add_fn: Callable[[Tensor, Tensor], Tensor] = torch.add) -> None:
        super().__init__(name=name, fn=add_fn)


def CommonStats() -> List[Stat]:
    """The usual summary: mean, sample variance, sample standard deviation, min and max.

    Mean and variance are running (Welford 1962) and mergeable (Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise algorithm for computing sample variances*).

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, CommonStats
        >>> s = Summarizer(CommonStats()); s.update(torch.zeros(2)); s.update(torch.ones(2))
        >>> list(s.summary)
        ['mean', 'sample_variance', 'sample_std_dev', 'min', 'max']
    """
    return [Mean(), Var(order=1), StdDev(order=1), Min(), Max()]


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
                self._summarizers.append(SummarizerSingleTensor(self._copy_stats(), self._summary_stats_indicies))
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
        single = SummarizerSingleTensor(summ._copy_stats(), summ._summary_stats_indicies)
        if not all(_batch_state(s, x) for s in single._stats):  # a custom statistic: one update per example
            single = SummarizerSingleTensor(summ._copy_stats(), summ._summary_stats_indicies)
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
