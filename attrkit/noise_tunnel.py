"""NoiseTunnel: average any attribution method over noisy copies of the input.

* ``smoothgrad`` — the mean attribution (Smilkov et al., 2017, https://arxiv.org/abs/1706.03825);
* ``smoothgrad_sq`` — the mean of squared attributions;
* ``vargrad`` — their variance (Adebayo et al., 2018, https://arxiv.org/abs/1810.03307).
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from . import _plumbing as plumbing
from .base import Attribution

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


class NoiseTunnel(Attribution):
    r"""Wrap an attribution method and average it over ``nt_samples`` noisy inputs.

    Each example is copied ``nt_samples`` times, Gaussian noise with standard
    deviation ``stdevs`` is added, the wrapped method attributes every copy, and
    the copies are reduced by ``nt_type`` (SmoothGrad: Smilkov et al., 2017,
    https://arxiv.org/abs/1706.03825; VarGrad: Adebayo et al., 2018). Per-example ``baselines``, ``target``
    and ``additional_forward_args`` follow their example; with
    ``draw_baseline_from_distrib=True`` each copy draws its baseline at random from
    the rows of ``baselines``.

    Example:
        >>> import torch
        >>> from attrkit import IntegratedGradients, NoiseTunnel
        >>> from attrkit.testing import ToyModel
        >>> nt = NoiseTunnel(IntegratedGradients(ToyModel()))
        >>> nt.attribute(torch.rand(2, 3), nt_type="smoothgrad", nt_samples=4, stdevs=0.1, target=0).shape
        torch.Size([2, 3])
    """

    def __init__(self, attribution_method: Attribution):
        if not isinstance(attribution_method, Attribution):
            raise TypeError(
                f"`attribution_method` must be an attrkit attribution (e.g. IntegratedGradients(model)), "
                f"got {type(attribution_method).__name__}."
            )
        super().__init__(attribution_method.forward_func)
        self.attribution_method = attribution_method
        self.is_delta_supported = attribution_method.has_convergence_delta()

    def has_convergence_delta(self) -> bool:
        return self.is_delta_supported

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution_method.multiplies_by_inputs

    def attribute(self, inputs, nt_type: str = "smoothgrad", nt_samples: int = 5, nt_samples_batch_size=None,
                  stdevs=1.0, draw_baseline_from_distrib: bool = False, **kwargs):
        """Run the wrapped method on noisy copies of ``inputs`` and combine the results.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            nt_type: how the noisy attributions are combined: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of
                squares) or ``"vargrad"`` (variance).
            nt_samples: noisy copies per example.
            nt_samples_batch_size: noisy copies per call of the wrapped method; None takes them all at once.
            stdevs: standard deviation of the Gaussian noise added to each sample: a float, or one per input.
            draw_baseline_from_distrib: draw one baseline per noisy sample from ``baselines`` (for methods that take
                a baseline distribution).
            **kwargs: passed to the wrapped method's ``attribute`` (``target``, ``baselines``, ``n_steps``...).

        Returns:
            What the wrapped method returns, combined over the noisy copies; ``(attributions, delta)`` when it
            returns a delta.

        Example:
            >>> import torch
            >>> from attrkit import NoiseTunnel
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> from attrkit import Saliency
            >>> _ = torch.manual_seed(0)
            >>> NoiseTunnel(Saliency(model)).attribute(x, nt_samples=4, stdevs=0.1, target=0).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        plumbing.check_choice(nt_type, "nt_type", NT_TYPES)
        nt_samples = plumbing.check_positive_int(nt_samples, "nt_samples")
        sds = _stdevs(stdevs, len(xs))
        want_delta = kwargs.get("return_convergence_delta", False)
        if want_delta and not self.is_delta_supported:
            raise ValueError(
                f"`return_convergence_delta=True`, but {type(self.attribution_method).__name__} has no convergence delta."
            )
        n = plumbing.batch_size_of(xs)
        # One seed per sample, drawn from the global RNG: the noise of sample s is the
        # same whatever `nt_samples_batch_size` is, so results do not depend on it.
        seeds = torch.randint(0, 2**62, (nt_samples,)).tolist()
        total = total_sq = None
        deltas = []
        for samples in plumbing.chunks(nt_samples, 1, nt_samples_batch_size):
            k = len(samples)
            gens = [_generator(seeds[s], xs[0].device) for s in samples]
            noisy = tuple(_noisy_copies(x, sd, gens) for x, sd in zip(xs, sds))
            kw = _expand_kwargs(kwargs, xs, n, k, gens if draw_baseline_from_distrib else None)
            out = self.attribution_method.attribute(plumbing.restore(noisy, is_tuple), **kw)
            attrs, delta = out if want_delta else (out, None)
            attrs, _ = plumbing.as_tuple(attrs, "attributions")
            summed = tuple(a.reshape(n, k, *a.shape[1:]).sum(1) for a in attrs)
            squared = tuple((a * a).reshape(n, k, *a.shape[1:]).sum(1) for a in attrs)
            total = summed if total is None else tuple(t + s for t, s in zip(total, summed))
            total_sq = squared if total_sq is None else tuple(t + s for t, s in zip(total_sq, squared))
            if delta is not None:
                deltas.append(delta.reshape(n, k))
        mean = tuple(t / nt_samples for t in total)
        mean_sq = tuple(t / nt_samples for t in total_sq)
        result = {"smoothgrad": mean, "smoothgrad_sq": mean_sq,
                  "vargrad": tuple(s - m * m for s, m in zip(mean_sq, mean))}[nt_type]
        result = plumbing.restore(result, is_tuple)
        return (result, torch.cat(deltas, 1).reshape(-1)) if want_delta else result


def _stdevs(stdevs, n_inputs: int) -> tuple[float, ...]:
    if isinstance(stdevs, numbers.Number):
        return (float(stdevs),) * n_inputs
    if isinstance(stdevs, (tuple, list)) and len(stdevs) == n_inputs and all(
        isinstance(s, numbers.Number) for s in stdevs
    ):
        return tuple(float(s) for s in stdevs)
    raise ValueError(f"`stdevs` must be a number or a tuple of {n_inputs} numbers (one per input), got {stdevs!r}.")


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _noisy_copies(x: Tensor, sd: float, gens: list) -> Tensor:
    """``len(gens)`` noisy copies of every example, interleaved: rows (x0+e0, x0+e1, ..., x1+e0, ...)."""
    copies = torch.stack([x if not sd else x + sd * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
                          for g in gens], dim=1)
    return copies.reshape(-1, *x.shape[1:])


def _expand_kwargs(kwargs: dict, xs: tuple, n: int, k: int, gens) -> dict:
    """Make the per-example keyword arguments follow examples copied ``k`` times (interleaved).
    With ``gens`` (one generator per sample), baselines are drawn from the ``baselines`` rows."""
    out = dict(kwargs)
    if "target" in out:
        out["target"] = plumbing.expand_target(plumbing.validate_target(out["target"]), k, "interleave")
    if out.get("additional_forward_args") is not None:
        args = plumbing.format_args(out["additional_forward_args"])
        out["additional_forward_args"] = plumbing.expand_args(args, k, "interleave")
    if out.get("baselines") is not None:
        out["baselines"] = (_draw_baselines(out["baselines"], xs, n, gens) if gens is not None
                            else _expand_per_example(out["baselines"], n, k))
    if isinstance(out.get("feature_mask"), (Tensor, tuple)):
        out["feature_mask"] = _expand_per_example(out["feature_mask"], n, k)
    return out


def _draw_baselines(baselines, xs: tuple, n: int, gens: list):
    """For every (example, sample) pair, one random row of the baseline distribution."""
    dist = plumbing.baseline_distribution(baselines, xs)
    rows = torch.stack([torch.randint(len(dist[0]), (n,), generator=g, device=g.device) for g in gens], 1)
    picked = tuple(d[rows.reshape(-1).to(d.device)] for d in dist)
    return picked if isinstance(baselines, tuple) else picked[0]


def _expand_per_example(value, n: int, k: int):
    """Interleave-repeat tensors that carry one row per example; leave shared ones alone."""
    if isinstance(value, tuple):
        return tuple(_expand_per_example(v, n, k) for v in value)
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n and n > 1:
        return value.repeat_interleave(k, dim=0)
    return value
