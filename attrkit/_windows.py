"""Occlusion's windows: checking ``sliding_window_shapes`` and ``strides``, the grid of window positions
per dimension, the masks of chosen windows, and spreading each window's output drop back over the elements
it covers (:class:`attrkit.Occlusion`)."""
from __future__ import annotations

import torch
from torch import Tensor


def window_shapes(shapes, xs: tuple[Tensor, ...]) -> tuple[tuple[int, ...], ...]:
    if isinstance(shapes, int):  # one size along every dimension of every input
        shapes = tuple((shapes,) * (x.dim() - 1) for x in xs)
    if not isinstance(shapes, (tuple, list)) or not shapes:
        raise TypeError(f"`sliding_window_shapes` must be a tuple of ints (one per input dimension after the batch), "
                        f"got {shapes!r}.")
    per_input = (tuple(shapes),) if all(isinstance(s, int) for s in shapes) else tuple(tuple(s) for s in shapes)
    if len(per_input) != len(xs):
        raise ValueError(f"`sliding_window_shapes` must give one window per input ({len(xs)}), got {shapes!r}.")
    for i, (w, x) in enumerate(zip(per_input, xs)):
        dims = tuple(x.shape[1:])
        if len(w) != len(dims) or not all(isinstance(v, int) and v >= 1 for v in w):
            raise ValueError(f"`sliding_window_shapes` for input {i} must be {len(dims)} positive ints (one per "
                             f"dimension of {dims}), got {w!r}.")
        if any(v > d for v, d in zip(w, dims)):
            raise ValueError(f"`sliding_window_shapes` {w} is larger than input {i}'s example shape {dims}.")
    return per_input


def strides_of(strides, xs: tuple[Tensor, ...], windows) -> tuple[tuple[int, ...], ...]:
    if strides is None:
        strides = 1
    if isinstance(strides, int):  # one step along every dimension of every input
        strides = (strides,) * len(xs)
    elif len(xs) == 1 and not (isinstance(strides, tuple) and len(strides) == 1):
        strides = (strides,)
    if not isinstance(strides, (tuple, list)) or len(strides) != len(xs):
        raise ValueError(f"`strides` must be an int, a tuple per dimension, or one of those per input ({len(xs)}); "
                         f"got {strides!r}.")
    out = []
    for i, (s, w, x) in enumerate(zip(strides, windows, xs)):
        s = (s,) * len(w) if isinstance(s, int) else tuple(s)
        if len(s) != len(w) or not all(isinstance(v, int) and v >= 1 for v in s):
            raise ValueError(f"`strides` for input {i} must be positive ints, one per dimension of "
                             f"{tuple(x.shape[1:])}; got {s!r}.")
        for v, k, d in zip(s, w, x.shape[1:]):
            if v > k and d > k:
                raise ValueError(f"`strides` {s} is larger than the window {w} for input {i}: elements between "
                                 f"windows would never be occluded.")
        out.append(s)
    return tuple(out)


def window_grid(x: Tensor, window: tuple[int, ...], stride: tuple[int, ...]) -> list[Tensor]:
    """Per dimension, a ``(positions, size)`` boolean matrix: which elements each window position covers."""
    grid = []
    for w, s, d in zip(window, stride, x.shape[1:]):
        count = -(-(d - w) // s) + 1  # ceil((d - w) / s) + 1 positions; the last may stick out and is cut
        start = torch.arange(count, device=x.device).unsqueeze(1) * s
        element = torch.arange(d, device=x.device).unsqueeze(0)
        grid.append((element >= start) & (element < start + w))
    return grid


def n_windows(grid: list[Tensor]) -> int:
    n = 1
    for axis in grid:
        n *= axis.shape[0]
    return n


def window_masks(grid: list[Tensor], local: Tensor) -> Tensor:
    """``(k, *example_shape)`` masks of windows number ``local`` (row-major); out-of-range numbers give
    empty masks (they belong to another input)."""
    inside = (local >= 0) & (local < n_windows(grid))
    index, mask = local.clamp(0, n_windows(grid) - 1), inside.reshape(-1, *([1] * len(grid)))
    for d in reversed(range(len(grid))):
        positions = grid[d].shape[0]
        axis = grid[d][index % positions]  # (k, size_d)
        mask = mask & axis.reshape(-1, *([1] * d), axis.shape[1], *([1] * (len(grid) - d - 1)))
        index = index // positions
    return mask


def spread_windows(diffs: Tensor, grid: list[Tensor]) -> Tensor:
    """Average each element's output drop over the windows covering it, one dimension at a time."""
    def spread(values: Tensor) -> Tensor:
        out = values.reshape(values.shape[0], *(axis.shape[0] for axis in grid))
        for axis in grid:  # contract the window positions of one dimension with its coverage matrix
            out = torch.tensordot(out, axis.to(values.dtype), dims=([1], [0]))
        return out

    return spread(diffs) / spread(torch.ones_like(diffs[:1]))
