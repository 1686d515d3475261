"""Pixel flipping: deletion and insertion curves (Samek et al. 2017; Petsiuk et al. 2018).

Rank the features by attribution, then replace them — most important first — with
a baseline (*deletion*: the score should fall fast, a low AUC is good) or reveal
them on top of the baseline (*insertion*: the score should rise fast, a high AUC is
good). Every step of every example is one row of a batch: the masks are built for
all steps at once and the model is called as few times as ``max_examples_per_batch``
allows, under :func:`torch.inference_mode`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .. import _plumbing as plumbing
from .._threads import threads_beside_others

MODES = ("deletion", "insertion")
SCORES = ("softmax", "logit")


@threads_beside_others()
def pixel_flipping(
    model: Callable, inputs, attributions, target=None, mode: str = "deletion", steps: int = 20, baselines=None,
    additional_forward_args=None, score: str = "softmax", per_pixel: bool | None = None,
    max_examples_per_batch: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Deletion or insertion curve of each example, and the area under it.

    Features are ranked by attribution (largest first; ties keep their order). At
    step ``k`` of ``steps``, the top ``round(k / steps * n_features)`` features are

    * ``mode="deletion"``: replaced by ``baselines`` — the curve starts at the model's
      score for the input and ends at its score for the baseline. A faithful
      attribution makes it fall fast: **lower AUC is better**.
    * ``mode="insertion"``: copied from the input into the baseline — the curve
      starts at the baseline's score and ends at the input's. **Higher AUC is better.**

    The followed score is the ``target`` class's probability (``score="softmax"``,
    as in RISE; comparable across models, bounded in [0, 1]) or its raw output
    (``score="logit"``, as in Samek et al.; linear in the features of a linear model).
    A binary classifier with one logit per example, output ``(N, 1)``, is followed through the
    logit's sigmoid under ``score="softmax"`` (the positive class's probability — a softmax over
    one class would be the constant 1 for every map).

    Images: for inputs with 4 or more dimensions ``(N, C, H, W)`` a feature is a
    *pixel*: pixels are ranked by the attribution summed over channels, and all
    channels of a pixel are flipped together (attributions may then also have one
    channel, ``(N, 1, H, W)``, e.g. an upsampled Grad-CAM map). ``per_pixel=False``
    ranks every element instead; ``per_pixel=True`` forces pixels for 3-D inputs.
    With a tuple of inputs the features of all tensors are ranked together.

    ``baselines``: None (zeros), a number, or a tensor broadcastable to the inputs —
    a blurred copy of the image is the usual choice for insertion (Petsiuk et al.).
    The model is called as it is: put it in ``eval()`` mode so that dropout does not
    add noise to the curve.

    Samek, Binder, Montavon, Lapuschkin & Müller (2017), *Evaluating the Visualization
    of What a Deep Neural Network Has Learned*, https://arxiv.org/abs/1509.06321 ;
    Petsiuk, Das & Saenko (2018), *RISE: Randomized Input Sampling for Explanation of
    Black-box Models*, https://arxiv.org/abs/1806.07421

    Args:
        model: the model or any callable ``f(*inputs, *additional_forward_args)``.
        inputs, attributions: a tensor or a tuple of tensors, attributions shaped like the inputs.
        target: which output to follow (as in ``attribute()``).
        steps: the number of flipping steps; the curve has ``steps + 1`` points.
        max_examples_per_batch: at most this many rows per forward pass (None: one pass).

    Returns:
        ``(fractions, scores, auc)``: the fraction of features flipped at each point,
        shape ``(steps + 1,)``; the score of each example at each point, ``(N, steps + 1)``;
        the trapezoidal area under each example's curve, ``(N,)``.

    Example:
        >>> import torch
        >>> from attrkit import IntegratedGradients
        >>> from attrkit.metrics import pixel_flipping
        >>> from attrkit.testing import SmallCNN
        >>> model, x = SmallCNN().eval(), torch.randn(2, 1, 8, 8)
        >>> attr = IntegratedGradients(model).attribute(x, target=0)
        >>> fractions, scores, auc = pixel_flipping(model, x, attr, target=0, steps=8)
        >>> fractions.shape, scores.shape, auc.shape
        (torch.Size([9]), torch.Size([2, 9]), torch.Size([2]))
    """
    xs, _ = plumbing.as_tuple(inputs)
    plumbing.check_choice(mode, "mode", MODES)
    plumbing.check_choice(score, "score", SCORES)
    steps = plumbing.check_positive_int(steps, "steps")
    if max_examples_per_batch is not None:
        plumbing.check_positive_int(max_examples_per_batch, "max_examples_per_batch")
    pixels = [_use_pixels(x, per_pixel) for x in xs]
    ranking = _feature_scores(attributions, xs, pixels)
    bs = plumbing.format_baselines(baselines, xs)
    target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
    rank = _ranks(ranking)
    n, n_features = ranking.shape
    counts = (torch.arange(steps + 1, device=rank.device) * n_features + steps // 2) // steps  # rounded k/steps*F
    with torch.inference_mode():
        rows = []
        for chunk in plumbing.chunks(steps + 1, n, max_examples_per_batch):
            flipped = rank.unsqueeze(0) < counts[chunk.start:chunk.stop].view(-1, 1, 1)
            points = _flipped_inputs(xs, bs, flipped, pixels, mode)
            rows.append(_scores(model, points, target, args, score, len(chunk), n))
        scores = torch.cat(rows).T
    fractions = counts.to(scores.dtype) / n_features
    scores = scores.clone()  # a normal tensor again, usable outside inference mode
    return fractions, scores, torch.trapezoid(scores, fractions, dim=1)


def _use_pixels(x: Tensor, per_pixel: bool | None) -> bool:
    if per_pixel is None:
        return x.dim() >= 4
    if per_pixel and x.dim() < 3:
        raise ValueError(f"`per_pixel=True` needs inputs of shape (N, C, ...spatial); got {tuple(x.shape)}.")
    return bool(per_pixel)


def _feature_scores(attributions, xs: tuple[Tensor, ...], pixels: list[bool]) -> Tensor:
    """The ranking score of every feature, ``(N, n_features)``: pixels sum their channels."""
    attrs, _ = plumbing.as_tuple(attributions, "attributions")
    if len(attrs) != len(xs):
        raise ValueError(f"`attributions` has {len(attrs)} tensors but `inputs` has {len(xs)}: give one per input.")
    out = []
    for i, (a, x, pixel) in enumerate(zip(attrs, xs, pixels)):
        one_channel = pixel and a.dim() == x.dim() and a.shape[0] == x.shape[0] and a.shape[1] == 1 \
            and a.shape[2:] == x.shape[2:]
        if a.shape != x.shape and not one_channel:
            also = f" or {(x.shape[0], 1, *x.shape[2:])}" if pixel else ""
            raise ValueError(
                f"`attributions` tensor {i} has shape {tuple(a.shape)}; "
                f"expected the input's shape {tuple(x.shape)}{also}."
            )
        a = a.detach().to(x.device)
        out.append((a.sum(1) if pixel else a).reshape(x.shape[0], -1))
    return torch.cat(out, dim=1)


def _ranks(ranking: Tensor) -> Tensor:
    """Position of each feature when sorted by decreasing attribution (0 = most important)."""
    order = torch.argsort(ranking, dim=1, descending=True, stable=True)
    positions = torch.arange(ranking.shape[1], device=ranking.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _flipped_inputs(xs, bs, flipped: Tensor, pixels, mode: str) -> tuple[Tensor, ...]:
    """All steps of all examples, step-major rows: ``flipped`` is ``(steps, N, n_features)``."""
    k, n, _ = flipped.shape
    out, start = [], 0
    for x, b, pixel in zip(xs, bs, pixels):
        shape = (1, *x.shape[2:]) if pixel else tuple(x.shape[1:])
        size = int(torch.Size(shape).numel())
        mask = flipped[:, :, start:start + size].reshape(k, n, *shape)
        start += size
        take_baseline = mask if mode == "deletion" else ~mask
        out.append(torch.where(take_baseline, b.unsqueeze(0), x.unsqueeze(0)).reshape(k * n, *x.shape[1:]))
    return tuple(out)


def _scores(model, points, target, args, score: str, k: int, n: int) -> Tensor:
    output = model(*points, *plumbing.expand_args(args, k))
    if score == "softmax":
        if not isinstance(output, Tensor) or output.dim() < 2:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"`score='softmax'` needs an (N, classes) output; the model returned {shape}. "
                             "Use `score='logit'`.")
        # One logit per example, (N, 1): softmax over one class is constantly 1, which would hide every
        # difference between maps; the logit's sigmoid is the probability of the positive class instead.
        output = output.sigmoid() if output.shape[1] == 1 else output.softmax(dim=1)
    selected = plumbing.select_target(output, plumbing.expand_target(target, k))
    return plumbing.per_example(selected, k * n).reshape(k, n)
