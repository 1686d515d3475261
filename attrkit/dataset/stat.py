"""The running statistics a :class:`~attrkit.dataset.summarizer.Summarizer` keeps: :class:`Count`, :class:`Mean`,
:class:`MSE`, :class:`Var`, :class:`StdDev`, :class:`Min`, :class:`Max`, :class:`Sum` (Captum 0.9's ``Stat`` family:
same names, summary keys and numbers).

Mean and variance are Welford's running updates (Welford 1962, *Note on a method for calculating corrected sums of
squares and products*); ``merge`` folds in the same statistic over a later, disjoint stream with the pairwise
formulae of Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise algorithm for computing sample
variances*. One deliberate departure: ``StdDev(order=k)`` for k >= 2 is named ``"std_dev(k)"`` (Captum's
``"std_dev" + str(k) + ")"`` is a typo).
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, List, Optional, Union

import torch
from torch import Tensor

StatValue = Union[Tensor, int, float]

__all__ = ["Stat", "Count", "Mean", "MSE", "Var", "StdDev", "GeneralAccumFn", "Min", "Max", "Sum", "CommonStats",
           "StatValue"]


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
    """The number of updates (samples).

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

    Welford (1962), *Note on a method for calculating corrected sums of squares and products*,
    https://doi.org/10.1080/00401706.1962.10490022.

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
    Welford (1962), *Note on a method for calculating corrected sums of squares and products*,
    https://doi.org/10.1080/00401706.1962.10490022; zero after one sample).

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

    Welford (1962), *Note on a method for calculating corrected sums of squares and products*,
    https://doi.org/10.1080/00401706.1962.10490022.

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
    (keys ``"std_dev"``, ``"sample_std_dev"``, then ``"std_dev(k)"``).

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
    """The element-wise minimum (``min_fn`` replaces ``torch.min``).

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
    """The element-wise maximum (``max_fn`` replaces ``torch.max``).

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Max
        >>> s = Summarizer([Max()])
        >>> s.update(torch.tensor([1.0, 5.0])); s.update(torch.tensor([3.0, 2.0]))
        >>> s.summary
        {'max': tensor([3., 5.])}
    """

    def __init__(self, name: Optional[str] = None, max_fn: Callable[[Tensor, Tensor], Tensor] = torch.max) -> None:
        super().__init__(name=name, fn=max_fn)


class Sum(GeneralAccumFn):
    """The element-wise sum (``add_fn`` replaces ``torch.add``).

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, Sum
        >>> s = Summarizer([Sum()])
        >>> s.update(torch.tensor([1.0, 5.0])); s.update(torch.tensor([3.0, 2.0]))
        >>> s.summary
        {'sum': tensor([4., 7.])}
    """

    def __init__(self, name: Optional[str] = None, add_fn: Callable[[Tensor, Tensor], Tensor] = torch.add) -> None:
        super().__init__(name=name, fn=add_fn)


def CommonStats() -> List[Stat]:
    """The usual summary: mean, sample variance, sample standard deviation, min and max.

    Mean and variance are running (Welford 1962) and mergeable (Chan, Golub & LeVeque 1979).

    Example:
        >>> import torch
        >>> from attrkit import Summarizer, CommonStats
        >>> s = Summarizer(CommonStats()); s.update(torch.zeros(2)); s.update(torch.ones(2))
        >>> list(s.summary)
        ['mean', 'sample_variance', 'sample_std_dev', 'min', 'max']
    """
    return [Mean(), Var(order=1), StdDev(order=1), Min(), Max()]


# -- a statistic as JSON (how a store records which statistics it keeps) --------------------------------------
def stat_spec(stat: Stat) -> dict:
    """``{"class", "params", "name"}`` of a built-in statistic, plain enough for JSON."""
    params = {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v) for k, v in stat.params.items()}
    return {"class": type(stat).__name__, "params": params, "name": stat.name}


def stats_from_specs(specs: List[dict]) -> List[Stat]:
    """The statistics :func:`stat_spec` described; a custom statistic cannot be rebuilt (say so)."""
    classes = {c.__name__: c for c in (Count, Mean, MSE, Var, StdDev, Min, Max, Sum)}
    stats = []
    for spec in specs:
        cls = classes.get(spec["class"])
        if cls is None:
            raise ValueError(f"the store was summarized with a custom statistic {spec['class']}; "
                             "pass the same `stats` to DatasetAttribution(path, stats=...) to read its summary.")
        stats.append(cls(name=spec["name"], **spec["params"]))
    return stats
