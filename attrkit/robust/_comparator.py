"""How a model's metric holds up under attacks and everyday perturbations: :class:`AttackComparator`."""
from __future__ import annotations

import warnings
from collections import namedtuple
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from .. import _plumbing as plumbing
from .._threads import threads_beside_others
from ..dataset import Max, Mean, Min, Summarizer
from ._batched import forward_many, per_eval

ORIGINAL_KEY = "Original"


class AttackInfo(NamedTuple):
    """One registered attack (what :meth:`AttackComparator.add_attack` stores)."""
    attack_fn: Callable
    name: str
    num_attempts: int
    apply_before_preproc: bool
    attack_kwargs: Dict[str, Any]
    additional_args: List[str]


def _batch_mean(value):
    """A metric's contribution to the running summary: tensors averaged over their first dimension."""
    if isinstance(value, tuple):
        return tuple(_batch_mean(v) for v in value)
    return value.mean(dim=0) if hasattr(value, "mean") and hasattr(value, "dim") else value


class AttackComparator:
    """Evaluates ``metric(model(x'), **kwargs)`` on the unperturbed inputs and on every registered attack.

    Same API and results as ``captum.robust.AttackComparator`` (0.9). ``evaluate`` returns, per attack name,
    ``{"mean": ...}`` (one attempt) or ``{"mean", "min", "max"}`` over the attempts (the average, best and
    worst case), plus ``"Original"``; ``summary()`` keeps the running mean over every ``evaluate`` call since
    construction or :meth:`reset` (tensor metrics averaged over their first dimension per batch). Tuple and
    named-tuple metrics are summarised element by element.

    attrkit runs the perturbed inputs through the model in batches: ``perturbations_per_eval=None`` (the
    default) stacks as many as attrkit's memory budget allows into one forward pass (Captum's default is one
    per pass); an int keeps Captum's meaning. The attacks themselves run one at a time, in Captum's order,
    so random attacks draw the same numbers.

    Args:
        forward_func: the model; called as ``forward_func(preproc_fn(x), *additional_forward_args)``.
        metric: ``metric(model_out, **kwargs) -> float | Tensor | tuple``.
        preproc_fn: optional preprocessing applied to the inputs (and attacks applied before it, by default).

    Example:
        >>> import torch
        >>> from attrkit.robust import AttackComparator
        >>> model = torch.nn.Linear(4, 3)
        >>> def accuracy(out, labels):
        ...     return (out.argmax(dim=1) == labels).float()
        >>> comparator = AttackComparator(model, accuracy)
        >>> comparator.add_attack(lambda x: x + 100 * torch.randn_like(x), "noise", num_attempts=3)
        >>> results = comparator.evaluate(torch.randn(8, 4), labels=torch.zeros(8, dtype=torch.long))
        >>> sorted(results), sorted(results["noise"])
        (['Original', 'noise'], ['max', 'mean', 'min'])
    """

    def __init__(self, forward_func: Callable, metric: Callable, preproc_fn: Optional[Callable] = None) -> None:
        for name, fn in (("forward_func", forward_func), ("metric", metric)):
            if not callable(fn):
                raise TypeError(f"`{name}` must be callable.")
        if preproc_fn is not None and not callable(preproc_fn):
            raise TypeError("`preproc_fn` must be callable or None.")
        self.forward_func = forward_func
        self.metric = metric
        self.preproc_fn = preproc_fn
        self.attacks: Dict[str, AttackInfo] = {}
        self.summary_results: Dict[str, Summarizer] = {}
        self.out_format = None

    def add_attack(self, attack: Callable, name: Optional[str] = None, num_attempts: int = 1,
                   apply_before_preproc: bool = True, attack_kwargs: Optional[Dict[str, Any]] = None,
                   additional_attack_arg_names: Optional[List[str]] = None) -> None:
        """Register ``attack`` (a :class:`~attrkit.robust.Perturbation` or any callable, e.g. a torchvision
        transform) under ``name`` (default: its class name; must be new). ``num_attempts`` > 1 for random
        attacks; ``additional_attack_arg_names``: keyword arguments of ``evaluate`` passed to the attack
        (e.g. ``["target"]`` for FGSM)."""
        if not callable(attack):
            raise TypeError("`attack` must be callable (a Perturbation or a function).")
        name = type(attack).__name__ if name is None else name
        if name in self.attacks or name == ORIGINAL_KEY:
            raise RuntimeError(f"Cannot add attack with same name as existing attack {name}")
        plumbing.check_positive_int(num_attempts, "num_attempts")
        if attack_kwargs is not None and not isinstance(attack_kwargs, dict):
            raise TypeError("`attack_kwargs` must be a dict of keyword arguments or None.")
        self.attacks[name] = AttackInfo(attack, name, num_attempts, apply_before_preproc, dict(attack_kwargs or {}),
                                        list(additional_attack_arg_names or []))

    def evaluate(self, inputs: Any, additional_forward_args: Any = None, perturbations_per_eval: Optional[int] = None,
                 **kwargs) -> Dict[str, Any]:
        """The metric on ``inputs`` and under every attack, for this batch (see the class docstring).
        ``kwargs`` go to the metric and, where named by ``additional_attack_arg_names``, to the attacks."""
        with threads_beside_others():
            return self._evaluate(inputs, additional_forward_args, perturbations_per_eval, kwargs)

    def _evaluate(self, inputs, additional_forward_args, perturbations_per_eval, kwargs) -> Dict[str, Any]:
        args = plumbing.format_args(additional_forward_args)
        preprocessed = self.preproc_fn(inputs) if self.preproc_fn is not None else inputs
        n_items = 1 + sum(a.num_attempts for a in self.attacks.values())
        k = per_eval(preprocessed, args, perturbations_per_eval, n_items)
        summarizers = {ORIGINAL_KEY: Summarizer([Mean()])}
        pending: list = []

        def flush():
            outputs = forward_many(self.forward_func, [item for _, item in pending], args)
            for (key, _), out in zip(pending, outputs):
                value = self.metric(out, **kwargs)
                self._remember_format(value)
                summarizers[key].update(value)
            pending.clear()

        for key, item in self._model_inputs(inputs, preprocessed, kwargs, summarizers):
            pending.append((key, item))
            if len(pending) == k:
                flush()
        if pending:
            flush()
        return self._record(summarizers)

    def _model_inputs(self, inputs, preprocessed, kwargs, summarizers):
        """``(key, model input)`` for the original and each attempt of each attack, in Captum's order."""
        yield ORIGINAL_KEY, preprocessed
        for attack in self.attacks.values():
            summarizers[attack.name] = Summarizer([Mean(), Min(), Max()] if attack.num_attempts > 1 else [Mean()])
            extra = {}
            for arg in attack.additional_args:
                if arg in kwargs:
                    extra[arg] = kwargs[arg]
                else:
                    warnings.warn(f"Additional sample arg {arg} not provided for {attack.name}", stacklevel=3)
            for _ in range(attack.num_attempts):
                if attack.apply_before_preproc:
                    attacked = attack.attack_fn(inputs, **extra, **attack.attack_kwargs)
                    yield attack.name, self.preproc_fn(attacked) if self.preproc_fn else attacked
                else:
                    yield attack.name, attack.attack_fn(preprocessed, **extra, **attack.attack_kwargs)

    def _remember_format(self, value) -> None:
        if self.out_format is None and isinstance(value, tuple) and hasattr(value, "_fields"):
            self.out_format = namedtuple(type(value).__name__, value._fields)

    def _format(self, summary):
        """A Summarizer's summary as ``{stat: value}``; tuple metrics as ``{stat: tuple (or named tuple)}``."""
        if isinstance(summary, dict):
            return summary
        out = {}
        for stat in summary[0]:
            values = tuple(s[stat] for s in summary)
            out[stat] = self.out_format(*values) if self.out_format else values
        return out

    def _running(self, key: str) -> Summarizer:
        if key not in self.summary_results:
            self.summary_results[key] = Summarizer([Mean()])
        return self.summary_results[key]

    def _record(self, summarizers: Dict[str, Summarizer]) -> Dict[str, Any]:
        results: Dict[str, Any] = {ORIGINAL_KEY: self._format(summarizers[ORIGINAL_KEY].summary)["mean"]}
        self._running(ORIGINAL_KEY).update(_batch_mean(results[ORIGINAL_KEY]))
        for attack in self.attacks.values():
            stats = self._format(summarizers[attack.name].summary)
            results[attack.name] = stats
            if len(stats) == 1:
                self._running(attack.name).update(_batch_mean(next(iter(stats.values()))))
            else:
                for stat, value in stats.items():
                    self._running(f"{attack.name} {stat.title()} Attempt").update(_batch_mean(value))
        return results

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """The running mean of every result over all ``evaluate`` calls since construction or :meth:`reset`."""
        return {key: self._format(s.summary) for key, s in self.summary_results.items()}

    def reset(self) -> None:
        """Forget the running summary."""
        self.summary_results = {}
