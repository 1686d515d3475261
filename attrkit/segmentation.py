"""Explaining a segmentation model with any attribution method.

A segmentation model answers with a map, ``(N, C, H, W)`` logits: one score per class *per pixel*. Attribution
methods need one number per example for a ``target``. :class:`SegmentationWrapper` makes it so, the way Captum's
segmentation tutorial does: for each class ``c``, the sum of the ``c`` logits over the pixels predicted as ``c``.
Its output is ``(N, C)``, so ``target=c`` asks "what makes the model call *this region* class ``c``?", and every
method — gradients, Grad-CAM on a decoder layer, feature ablation — applies unchanged.

The pixels that count are the *reference prediction*: :meth:`SegmentationWrapper.fix` takes it from the
unperturbed inputs once, so perturbed or interpolated copies are scored on the same region (Captum's tutorial
does the same); unfixed, each call uses its own argmax.

For perturbation methods, two feature masks: :func:`grid_feature_mask` (square cells) and
:func:`segment_feature_mask` (the predicted segments, optionally cut by a grid into superpixel-like pieces that
follow the model's own boundaries).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from attrkit import LayerGradCam
    >>> from attrkit.segmentation import SegmentationWrapper
    >>> seg = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))   # 2 classes
    >>> x = torch.randn(1, 3, 8, 8)
    >>> wrapper = SegmentationWrapper(seg).fix(x)
    >>> wrapper(x).shape                                            # one number per example per class
    torch.Size([1, 2])
    >>> LayerGradCam(wrapper, seg[0]).attribute(x, target=1).shape
    torch.Size([1, 1, 8, 8])
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["SegmentationWrapper", "grid_feature_mask", "segment_feature_mask"]


class SegmentationWrapper(nn.Module):
    """``(N, C, H, W)`` segmentation logits → ``(N, C)``: class ``c``'s logits summed over the pixels predicted ``c``.

    Args:
        model: the segmentation model; its output is a ``(N, C, H, W)`` tensor, or a mapping holding one under
            ``output_key`` (torchvision's segmentation models return ``{"out": ...}``).
        output_key: the key of the logits when the model returns a mapping (default ``"out"``).
        predicted: an optional fixed reference prediction, ``(N, H, W)`` class indices (see :meth:`fix`).

    A batch with a multiple of the reference's ``N`` rows (the perturbed or interpolated copies an attribution
    method evaluates, example-minor: row ``r`` belongs to example ``r % N``) is scored with the reference
    repeated. The wrapper holds the model as a submodule, so a layer of the model is a layer of the wrapper.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attrkit.segmentation import SegmentationWrapper
        >>> logits = torch.tensor([[[[2., -1.]], [[0., 3.]]]])        # (1, 2 classes, 1, 2 pixels)
        >>> SegmentationWrapper(nn.Identity())(logits)                   # pixel 0 is class 0, pixel 1 class 1
        tensor([[2., 3.]])
    """

    def __init__(self, model: nn.Module, output_key: str = "out", predicted: Tensor | None = None):
        super().__init__()
        if not callable(model):
            raise TypeError(f"`model` must be callable, got {type(model).__name__}")
        self.model = model
        self.output_key = output_key
        self.predicted = None if predicted is None else self._check_predicted(predicted)

    @staticmethod
    def _check_predicted(predicted) -> Tensor:
        if not isinstance(predicted, Tensor) or predicted.dim() != 3 or predicted.is_floating_point():
            raise ValueError("`predicted` must be an integer tensor of class indices shaped (N, H, W)")
        return predicted.long()

    def logits(self, *inputs, **kwargs) -> Tensor:
        """The model's ``(N, C, H, W)`` logits."""
        out = self.model(*inputs, **kwargs)
        if isinstance(out, Mapping):
            if self.output_key not in out:
                raise ValueError(f"the model returned a mapping without `output_key` {self.output_key!r}; "
                                 f"keys: {list(out)}")
            out = out[self.output_key]
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"a segmentation model must return (N, C, H, W) logits; got {shape}")
        return out

    @torch.no_grad()
    def fix(self, *inputs, **kwargs) -> "SegmentationWrapper":
        """Take the reference prediction (the argmax class of every pixel) from these inputs; returns ``self``."""
        self.predicted = self.logits(*inputs, **kwargs).argmax(1)
        return self

    def release(self) -> "SegmentationWrapper":
        """Forget the reference prediction: each call then uses its own argmax."""
        self.predicted = None
        return self

    def _reference(self, out: Tensor) -> Tensor:
        if self.predicted is None:
            return out.detach().argmax(1)
        ref = self.predicted.to(out.device)
        if ref.shape[1:] != out.shape[2:]:
            raise ValueError(f"the reference prediction is {tuple(ref.shape[1:])} pixels but the model's output is "
                             f"{tuple(out.shape[2:])}")
        rows, n = out.shape[0], ref.shape[0]
        if rows % n:
            raise ValueError(f"a batch of {rows} rows is not a multiple of the {n} examples of the reference "
                             "prediction; call fix() with the inputs being explained")
        return ref.repeat(rows // n, 1, 1)

    def forward(self, *inputs, **kwargs) -> Tensor:
        out = self.logits(*inputs, **kwargs)
        ref = self._reference(out)
        chosen = torch.zeros_like(out).scatter_(1, ref.unsqueeze(1), 1.0)
        return (out * chosen).sum(dim=(2, 3))


def grid_feature_mask(height: int, width: int, cell: int | tuple[int, int], device=None) -> Tensor:
    """A ``(1, 1, height, width)`` feature mask of square cells (ids row by row), for FeatureAblation and friends.

    Example:
        >>> from attrkit.segmentation import grid_feature_mask
        >>> grid_feature_mask(4, 4, 2)[0, 0]
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [2, 2, 3, 3],
                [2, 2, 3, 3]])
    """
    ch, cw = (cell, cell) if isinstance(cell, int) else tuple(cell)
    for name, v in (("height", height), ("width", width), ("cell", ch), ("cell", cw)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
    rows = torch.arange(height, device=device) // ch
    cols = torch.arange(width, device=device) // cw
    per_row = -(-width // cw)
    return (rows[:, None] * per_row + cols[None, :])[None, None]


def segment_feature_mask(labels: Tensor, cell: int | None = None) -> Tensor:
    """A ``(N, 1, H, W)`` feature mask whose features are the segments of ``labels`` (e.g. the predicted classes,
    ``(N, H, W)``), each cut into ``cell``-sized grid pieces when ``cell`` is given: superpixel-like regions that
    follow the model's own boundaries. Ids are renumbered ``0 .. K-1`` over the batch.

    Example:
        >>> import torch
        >>> from attrkit.segmentation import segment_feature_mask
        >>> labels = torch.tensor([[[0, 0, 5, 5], [0, 0, 5, 5], [0, 5, 5, 5], [0, 0, 0, 5]]])
        >>> segment_feature_mask(labels, cell=2)[0, 0]
        tensor([[0, 0, 3, 3],
                [0, 0, 3, 3],
                [1, 4, 5, 5],
                [1, 1, 2, 5]])
    """
    if not isinstance(labels, Tensor) or labels.dim() != 3 or labels.is_floating_point():
        raise ValueError("`labels` must be an integer tensor shaped (N, H, W)")
    key = labels.long() - labels.min()
    if cell is not None:
        h, w = labels.shape[1:]
        grid = grid_feature_mask(h, w, cell, device=labels.device)[0]
        key = key * (int(grid.max()) + 1) + grid
    return torch.unique(key, return_inverse=True)[1].unsqueeze(1)
