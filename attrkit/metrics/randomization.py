"""Model randomisation: the sanity check of Adebayo et al. (2018).

If an attribution method explains the *model*, re-initialising the model's weights
must change the attributions. The layers are re-initialised from the output down on
a deep copy of the model (the original is never touched), and after each one the
new attributions are compared with the original ones by rank correlation
(:func:`spearman_correlation`) and structural similarity (:func:`ssim`).

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim (2018), *Sanity Checks for
Saliency Maps*, https://arxiv.org/abs/1810.03292
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _plumbing as plumbing
from .._threads import threads_beside_others

ORDERS = ("cascading", "independent")
NOTHING = "(none)"


# --------------------------------------------------------------------------- similarity measures
def _average_ranks(x: Tensor) -> Tensor:
    """Ranks along dim 1 (0-based); tied values share their average rank."""
    n, f = x.shape
    values, order = x.sort(dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = (starts.cumsum(1) - 1) + torch.arange(n, device=x.device).unsqueeze(1) * f  # one id per tie group
    position = torch.arange(f, device=x.device, dtype=torch.float32).expand(n, f)
    total = torch.zeros(n * f, device=x.device).scatter_add_(0, group.reshape(-1), position.reshape(-1))
    count = torch.zeros(n * f, device=x.device).scatter_add_(0, group.reshape(-1), torch.ones(n * f, device=x.device))
    averaged = (total / count.clamp_min(1))[group]
    return torch.empty_like(averaged).scatter_(1, order, averaged)


def spearman_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation between the rows of ``a`` and ``b`` (``(N, ...)`` each,
    flattened per row): the Pearson correlation of their ranks, ties sharing their
    average rank. NaN where a row is constant.

    Example:
        >>> import torch
        >>> from attrkit.metrics import spearman_correlation
        >>> spearman_correlation(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 40.0, 90.0]]))
        tensor([1.])
    """
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    ra, rb = (_average_ranks(t.detach().reshape(t.shape[0], -1).float()) for t in (a, b))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / ((ra * ra).sum(1) * (rb * rb).sum(1)).sqrt()


def _gaussian_window(size: int, sigma: float, like: Tensor) -> Tensor:
    coords = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).reshape(1, 1, size, size)


def ssim(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    r"""Structural similarity of 2-D maps ``(N, H, W)``, one number per map.

    Wang, Bovik, Sheikh & Simoncelli (2004), *Image Quality Assessment: From Error
    Visibility to Structural Similarity*: local means, variances and covariance under
    a Gaussian window (11x11, :math:`\sigma = 1.5`; shrunk to the map's size when the
    map is smaller), :math:`C_1 = (0.01 L)^2`, :math:`C_2 = (0.03 L)^2` with
    ``L = data_range``, averaged over the positions where the window fits.

    Example:
        >>> import torch
        >>> from attrkit.metrics import ssim
        >>> m = torch.rand(2, 16, 16)
        >>> ssim(m, m)
        tensor([1., 1.])
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"`a` and `b` must be maps of the same shape (N, H, W); "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}.")
    size = min(window_size, a.shape[1], a.shape[2])
    size -= 1 - size % 2  # odd, so the window has a centre
    a, b = a.detach().float().unsqueeze(1), b.detach().float().unsqueeze(1)
    window = _gaussian_window(size, sigma, a)

    def mean(t):
        return F.conv2d(t, window)

    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.flatten(1).mean(1)


# --------------------------------------------------------------------------- results
@dataclass(eq=False)
class RandomizationRecord:
    """One row of the check: ``layer`` re-initialised (with every layer above it, in
    the cascading order), the new ``attributions``, and their per-example ``spearman``
    and ``ssim`` against the original attributions (shape ``(N,)`` each)."""

    layer: str
    spearman: Tensor
    ssim: Tensor
    attributions: Tensor | tuple

    def as_row(self) -> dict:
        return {"layer": self.layer, "spearman": float(self.spearman.nanmean()), "ssim": float(self.ssim.nanmean())}


@dataclass(eq=False)
class ModelRandomizationResult:
    """The outcome of :func:`model_randomization`: a list of :class:`RandomizationRecord`.

    ``records[0]`` (layer ``"(none)"``) recomputes the attributions on the untouched
    copy: its correlation is 1 for a deterministic method, and the noise floor for a
    sampled one. ``pandas.DataFrame(result.rows())`` gives a table.
    """

    order: str
    absolute: bool
    original: Tensor | tuple
    records: list

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    @property
    def layers(self) -> list[str]:
        return [r.layer for r in self.records]

    @property
    def spearman(self) -> Tensor:
        """``(n_records, N)``."""
        return torch.stack([r.spearman for r in self.records])

    @property
    def ssim(self) -> Tensor:
        """``(n_records, N)``."""
        return torch.stack([r.ssim for r in self.records])

    def rows(self) -> list[dict]:
        """One dict per record: layer, mean Spearman, mean SSIM."""
        return [r.as_row() for r in self.records]

    def __repr__(self):
        lines = [f"ModelRandomizationResult(order={self.order!r})", f"{'layer':<24}{'spearman':>10}{'ssim':>10}"]
        lines += [f"{r['layer']:<24}{r['spearman']:>10.3f}{r['ssim']:>10.3f}" for r in self.rows()]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the check
@threads_beside_others()
def model_randomization(
    model: nn.Module, attribute_fn: Callable, inputs, target=None, order: str = "cascading", layers=None,
    absolute: bool = True, seed: int | None = 0,
) -> ModelRandomizationResult:
    r"""Re-initialise the model's layers from the output down and measure how much the
    attributions change (the model-parameter randomisation test).

    ``attribute_fn(model, inputs, target) -> attributions`` computes the attributions
    for a given model, e.g. ``lambda m, x, t: IntegratedGradients(m).attribute(x, target=t)``.
    It is called once on ``model`` (the reference) and then on a ``copy.deepcopy`` of it
    whose layers are re-initialised one after another; ``model`` itself is never modified.

    * ``order="cascading"``: the layers are randomised cumulatively, top (output) first.
    * ``order="independent"``: each layer alone, the others keeping their weights.

    ``layers``: names (as in ``model.named_modules()``) or the modules themselves; by
    default every module that owns parameters. They are always processed from the top
    down, i.e. in reverse order of registration (for most models, reverse forward order).
    A layer is re-initialised with its own ``reset_parameters()`` (the weights it would
    have before training; BatchNorm also resets its running statistics); parameters of
    modules without one are redrawn from a normal with their own mean and spread.
    ``seed`` makes the new weights reproducible (each layer gets ``seed`` plus its position
    in the model, so both orders draw the same weights for a layer); the global random
    state is left as it was. ``None`` uses the global generator.

    Comparison: image attributions ``(N, C, H, W)`` are summed over channels to a map;
    with ``absolute=True`` (Adebayo et al.'s "absolute value" variant, the default) the
    magnitudes are compared, so sign flips do not count as a change. Spearman's rank
    correlation uses every element; SSIM (:func:`ssim`) compares the 2-D maps after
    scaling each to [0, 1], and is NaN for attributions that are not single 2-D maps.

    Adebayo et al. (2018), *Sanity Checks for Saliency Maps*, https://arxiv.org/abs/1810.03292

    Returns:
        a :class:`ModelRandomizationResult` (``result.rows()``, ``result.spearman``, ...).

    Example:
        >>> import torch
        >>> from attrkit import Saliency
        >>> from attrkit.metrics import model_randomization
        >>> from attrkit.testing import SmallCNN
        >>> result = model_randomization(SmallCNN(), lambda m, x, t: Saliency(m).attribute(x, target=t),
        ...                              torch.randn(4, 1, 8, 8), target=0)
        >>> result.layers
        ['(none)', 'fc', 'conv2', 'conv1']
        >>> round(result.rows()[0]["spearman"], 3)
        1.0
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module (it is copied and re-initialised), "
                        f"got {type(model).__name__}.")
    if not callable(attribute_fn):
        raise TypeError(f"`attribute_fn` must be callable as attribute_fn(model, inputs, target), "
                        f"got {type(attribute_fn).__name__}.")
    plumbing.check_choice(order, "order", ORDERS)
    names = _layers_top_down(model, layers)
    position = {name: i for i, (name, _) in enumerate(model.named_modules())}
    original = _detached(attribute_fn(model, inputs, target))
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    records = [_record(NOTHING, attribute_fn(randomised, inputs, target), original, absolute)]
    for name in names:
        layer = modules[name]
        saved = {k: v.clone() for k, v in layer.state_dict().items()} if order == "independent" else None
        _reinitialise(layer, None if seed is None else seed + position[name])
        records.append(_record(name, attribute_fn(randomised, inputs, target), original, absolute))
        if saved is not None:
            layer.load_state_dict(saved)
    return ModelRandomizationResult(order, absolute, original, records)


def _layers_top_down(model: nn.Module, layers) -> list[str]:
    named = list(model.named_modules())
    owners = [name for name, m in named if next(m.parameters(recurse=False), None) is not None]
    if layers is None:
        chosen = owners
    else:
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        by_module = {id(m): name for name, m in named}
        known = dict(named)
        chosen = []
        for layer in layers:
            name = by_module.get(id(layer)) if isinstance(layer, nn.Module) else layer
            if not isinstance(name, str) or name not in known:
                raise ValueError(f"`layers` entry {layer!r} is not a module of the model; "
                                 f"modules with parameters: {owners}.")
            if next(known[name].parameters(), None) is None:
                raise ValueError(f"`layers` entry {name!r} has no parameters to re-initialise; choose among {owners}.")
            chosen.append(name)
    order = {name: i for i, (name, _) in enumerate(named)}
    return sorted(set(chosen), key=order.__getitem__, reverse=True)


def _rng_kept(module: nn.Module, seed: int | None):
    """Fork the random generators of the devices the layer lives on (the CPU's always),
    so that seeding the re-initialisation leaves the caller's random streams as they were."""
    stack = contextlib.ExitStack()
    if seed is None:
        return stack
    devices: dict[str, set] = {}
    for p in module.parameters():
        if p.device.type != "cpu" and hasattr(getattr(torch, p.device.type, None), "get_rng_state"):
            devices.setdefault(p.device.type, set()).add(p.device.index or 0)
    stack.enter_context(torch.random.fork_rng(devices=[]))
    for device_type, indices in devices.items():
        stack.enter_context(torch.random.fork_rng(devices=sorted(indices), device_type=device_type))
    return stack


@torch.no_grad()
def _reinitialise(layer: nn.Module, seed: int | None) -> None:
    with _rng_kept(layer, seed):
        if seed is not None:
            torch.manual_seed(seed)
        for m in layer.modules():
            own = list(m.parameters(recurse=False))
            if not own:
                continue
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                continue
            for p in own:
                spread = p.std() if p.numel() > 1 else p.abs().mean()
                spread = torch.where(spread > 0, spread, torch.ones_like(spread) / math.sqrt(max(p[0].numel(), 1)))
                p.copy_(torch.randn_like(p) * spread + p.mean())


def _detached(attributions):
    if isinstance(attributions, (tuple, list)):
        return tuple(a.detach() for a in attributions)
    if not isinstance(attributions, Tensor):
        raise TypeError(f"`attribute_fn` must return a tensor or a tuple of tensors, "
                        f"got {type(attributions).__name__}.")
    return attributions.detach()


def _comparable(attributions, absolute: bool) -> tuple[Tensor, ...]:
    """Each attribution tensor as the map that is compared: channels summed for images."""
    items = attributions if isinstance(attributions, tuple) else (attributions,)
    maps = tuple(a.sum(1) if a.dim() >= 4 else a for a in items)
    return tuple(m.abs() if absolute else m for m in maps)


def _unit_range(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return (maps - low.view(-1, 1, 1)) / span.view(-1, 1, 1)


def _record(name: str, attributions, original, absolute: bool) -> RandomizationRecord:
    attributions = _detached(attributions)
    new, old = _comparable(attributions, absolute), _comparable(original, absolute)
    if [t.shape for t in new] != [t.shape for t in old]:
        raise ValueError(f"`attribute_fn` returned shapes {[tuple(t.shape) for t in new]} after randomising "
                         f"{name!r}, but {[tuple(t.shape) for t in old]} for the original model.")
    n = old[0].shape[0]
    rho = spearman_correlation(torch.cat([t.reshape(n, -1) for t in new], 1),
                               torch.cat([t.reshape(n, -1) for t in old], 1))
    if len(new) == 1 and new[0].dim() == 3:
        similarity = ssim(_unit_range(new[0].float()), _unit_range(old[0].float()))
    else:
        similarity = torch.full_like(rho, float("nan"))
    return RandomizationRecord(name, rho, similarity, attributions)
