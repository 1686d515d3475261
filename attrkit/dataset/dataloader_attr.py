"""Attribute a metric of a whole data loader (accuracy, recall, mean score) to the input features.

:class:`DataLoaderAttribution` asks "how much does the corpus-wide metric change when feature *j* is replaced by
its baseline in every example?": one pass over the loader for the unperturbed metric, then one pass per group of
``perturbations_per_pass`` features, each batch run once per feature of the group. The attribution of a feature is
``metric(original) - metric(feature ablated)`` (Zeiler & Fergus 2014, feature ablation), as in Captum 0.9's
``captum.attr.DataLoaderAttribution``, whose arguments and output shapes this follows. One deliberate departure:
a loader yielding plain tensors (not tuples) is one attributed input per batch, where Captum iterates over the
batch's rows as if they were the batch's elements.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .._batching import format_feature_mask
from ..base import Attribution
from ..perturbation import FeatureAblation
from .roles import InputRole, elements, parse_roles, split_batch


def _concat_tensors(accum: Optional[Tensor], output: Tensor, _inputs) -> Tensor:
    """The default ``reduce``: all outputs, concatenated along the batch."""
    return output if accum is None else torch.cat([accum, output])


class DataLoaderAttribution(Attribution):
    """Feature ablation of a metric computed over a whole ``DataLoader``.

    Args:
        attr_method: a :class:`attrkit.FeatureAblation` (the one method Captum supports here either); its
            ``forward_func`` is the model.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from attrkit import DataLoaderAttribution, FeatureAblation
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> loader = DataLoader(TensorDataset(torch.ones(5, 3)), batch_size=2)
        >>> def total(acc, out, inputs):  # sum of outputs over the loader
        ...     return out.sum() if acc is None else acc + out.sum()
        >>> DataLoaderAttribution(FeatureAblation(model)).attribute(loader, reduce=total)
        (tensor([[ 5., 10., 15.]]),)
    """

    def __init__(self, attr_method: Attribution) -> None:
        if type(attr_method) is not FeatureAblation:
            raise TypeError("`attr_method` must be an attrkit.FeatureAblation instance "
                            f"(DataLoaderAttribution does not support {type(attr_method).__name__}).")
        super().__init__(attr_method.forward_func)
        self.attr_method = attr_method

    def attribute(
        self,
        dataloader: torch.utils.data.DataLoader,
        input_roles: Optional[Tuple[int, ...]] = None,
        baselines=None,
        feature_mask: Union[None, Tensor, Tuple[Tensor, ...]] = None,
        reduce: Optional[Callable] = None,
        to_metric: Optional[Callable] = None,
        perturbations_per_pass: int = 1,
        show_progress: bool = False,
        return_input_shape: bool = True,
    ) -> Union[Tensor, Tuple[Tensor, ...]]:
        """Attribute ``to_metric(reduce over the loader of the model's outputs)`` to each feature.

        Args:
            dataloader: any iterable of batches (a tensor, or a tuple/list of tensors and other values), iterated
                ``1 + ceil(n_features / perturbations_per_pass)`` times.
            input_roles: one :class:`InputRole` per batch element (default: every element is attributed);
                ``(0, 2)`` for ``(features, labels)`` batches. Names work too (an attrkit addition):
                ``("input", "label")``; see :mod:`attrkit.dataset.roles`.
            baselines: the replacement value of each attributed element: a number, or a tensor with first dimension
                1 (shared by every batch); a tuple for several attributed elements. Default 0.
            feature_mask: integer tensor(s) with first dimension 1, one per attributed element; equal ids are
                ablated together. Default: every scalar is a feature.
            reduce: ``reduce(accum, output, batch) -> accum``, folded over the batches (``accum`` starts as None).
                Default: concatenate the outputs.
            to_metric: ``to_metric(accum) -> Tensor``, the metric to attribute (default: ``accum`` itself).
            perturbations_per_pass: features ablated in the same pass over the loader.
            show_progress: a progress bar over the passes.
            return_input_shape: True: one tensor per attributed element, shaped
                ``(metric.numel(), *element.shape[1:])``; False: one tensor ``(metric.numel(), n_features)``.

        Returns:
            The attributions, a tuple when the loader yields tuples or lists (as in Captum): one tensor per
            attributed element, ``(metric.numel(), *element.shape[1:])`` (every element of a feature group gets
            the group's value), or one ``(metric.numel(), n_features)`` tensor with ``return_input_shape=False``.

        Example:
            >>> import torch
            >>> from torch.utils.data import DataLoader, TensorDataset
            >>> from attrkit import DataLoaderAttribution, FeatureAblation
            >>> model = torch.nn.Linear(3, 1, bias=False)
            >>> with torch.no_grad():
            ...     _ = model.weight.fill_(1.0)
            >>> loader = DataLoader(TensorDataset(torch.ones(4, 3), torch.zeros(4)), batch_size=2)  # (x, label)
            >>> def squared_error(acc, out, batch):  # summed over the loader; batch: (features, labels)
            ...     error = ((out.squeeze(1) - batch[1]) ** 2).sum()
            ...     return error if acc is None else acc + error
            >>> ablation = DataLoaderAttribution(FeatureAblation(model))
            >>> ablation.attribute(loader, input_roles=(0, 2), reduce=squared_error,  # labels: not forwarded
            ...                    feature_mask=torch.tensor([[0, 0, 1]]), return_input_shape=False)
            tensor([[32., 20.]])
        """
        try:
            first = next(iter(dataloader))
        except StopIteration:
            raise ValueError("`dataloader` yielded no batch; it must yield at least one.") from None
        first, is_tuple = elements(first)
        checked = parse_roles(input_roles, len(first))
        attr_inputs, roles = split_batch(first, checked).inputs, checked.codes
        for i, x in enumerate(attr_inputs):
            if not isinstance(x, Tensor):
                raise TypeError(f"batch element {i} has role need_attr (0) and must be a tensor, got {type(x).__name__}.")
        baselines = self._check_baselines(baselines, len(attr_inputs))
        masks = self._check_masks(feature_mask, attr_inputs)
        if not isinstance(perturbations_per_pass, int) or perturbations_per_pass < 1:
            raise ValueError(f"`perturbations_per_pass` must be a positive integer, got {perturbations_per_pass!r}.")
        reduce = _concat_tensors if reduce is None else reduce

        n_features = int(max(int(m.max()) for m in masks)) + 1
        present = sorted({int(v) for m in masks for v in torch.unique(m).tolist()})
        groups = [present[i:i + perturbations_per_pass] for i in range(0, len(present), perturbations_per_pass)]
        dtype = torch.get_default_dtype()
        progress = None
        if show_progress:
            from tqdm.auto import tqdm
            progress = tqdm(total=1 + len(groups), desc="DataLoaderAttribution passes")
        try:
            (initial,) = self._pass(dataloader, [None], roles, baselines, masks, reduce, to_metric, dtype)
            if progress is not None:
                progress.update()
            flat0 = initial.reshape(-1)
            unique_attr = None
            for group in groups:
                metrics = self._pass(dataloader, group, roles, baselines, masks, reduce, to_metric, dtype)
                for f, metric in zip(group, metrics):
                    diff = flat0 - metric.reshape(-1)
                    if unique_attr is None:
                        unique_attr = torch.zeros(flat0.numel(), n_features, dtype=diff.dtype, device=diff.device)
                    unique_attr[:, f] = diff
                if progress is not None:
                    progress.update()
        finally:
            if progress is not None:
                progress.close()
        if unique_attr is None:  # no feature at all
            unique_attr = torch.zeros(flat0.numel(), n_features, dtype=flat0.dtype, device=flat0.device)
        if not return_input_shape:
            return unique_attr
        out = []
        for x, m in zip(attr_inputs, masks):
            idx = m.expand(1, *x.shape[1:]).reshape(-1).to(unique_attr.device)
            out.append(unique_attr[:, idx].reshape(unique_attr.shape[0], *x.shape[1:]))
        return tuple(out) if is_tuple else out[0]

    def attribute_future(self) -> Callable:
        """Not available for DataLoaderAttribution (as in Captum)."""
        raise NotImplementedError("attribute_future is not implemented for DataLoaderAttribution")

    # -- one pass over the loader, evaluating several perturbations per batch --------------------------------
    def _pass(self, dataloader, features: List[Optional[int]], roles, baselines, masks, reduce, to_metric, dtype):
        keeps = [None if f is None else [(m != f).to(dtype) if bool((m == f).any()) else None for m in masks]
                 for f in features]
        accums = [None] * len(features)
        with torch.no_grad():
            for batch in dataloader:
                batch, _ = elements(batch)
                if len(batch) != len(roles):
                    raise ValueError(f"every batch must have {len(roles)} elements (as `input_roles`), got {len(batch)}.")
                for k, keep in enumerate(keeps):
                    perturbed = self._perturb(batch, roles, baselines, keep)
                    fwd = tuple(x for x, r in zip(perturbed, roles) if r != InputRole.no_forward)
                    output = self.forward_func(*fwd)
                    accums[k] = reduce(accums[k], output, perturbed)
        metrics = [to_metric(a) if to_metric is not None else a for a in accums]
        for m in metrics:
            if not isinstance(m, Tensor):
                raise TypeError("the accumulated metric (the result of `reduce`, then `to_metric`) must be a Tensor, "
                                f"got {type(m).__name__}.")
        return metrics

    @staticmethod
    def _perturb(batch, roles, baselines, keep):
        if keep is None:
            return batch
        out, j = [], 0
        for x, role in zip(batch, roles):
            if role != InputRole.need_attr:
                out.append(x)
                continue
            k = keep[j]
            if k is None:
                out.append(x)
            else:
                k = k.to(x.device)
                out.append(x * k + baselines[j] * (1 - k))
            j += 1
        return tuple(out)

    # -- argument checks -------------------------------------------------------------------------------------
    @staticmethod
    def _check_baselines(baselines, n: int) -> tuple:
        if baselines is None:
            return (0,) * n
        bs = baselines if isinstance(baselines, tuple) else (baselines,)
        if len(bs) != n:
            raise ValueError(f"`baselines` has {len(bs)} entries but {n} batch element(s) have role need_attr (0).")
        for i, b in enumerate(bs):
            if isinstance(b, Tensor):
                if b.dim() == 0 or b.size(0) != 1:
                    raise ValueError(f"`baselines[{i}]` must have first dimension 1 (shared by every batch), "
                                     f"got shape {tuple(b.shape)}.")
            elif not isinstance(b, (int, float)):
                raise TypeError(f"`baselines[{i}]` must be a number or a tensor, got {type(b).__name__}.")
        return bs

    @staticmethod
    def _check_masks(feature_mask, attr_inputs) -> Tuple[Tensor, ...]:
        if feature_mask is None:
            return format_feature_mask(None, attr_inputs)  # every scalar its own feature
        masks = feature_mask if isinstance(feature_mask, tuple) else (feature_mask,)
        if len(masks) != len(attr_inputs):
            raise ValueError(f"`feature_mask` has {len(masks)} entries but {len(attr_inputs)} batch element(s) "
                             "have role need_attr (0).")
        for i, (m, x) in enumerate(zip(masks, attr_inputs)):
            if not isinstance(m, Tensor) or m.is_floating_point() or m.is_complex():
                raise TypeError(f"`feature_mask[{i}]` must be an integer tensor.")
            if m.dim() == 0 or m.size(0) != 1:
                raise ValueError(f"`feature_mask[{i}]` must have first dimension 1 (shared by every batch), "
                                 f"got shape {tuple(m.shape)}.")
            try:
                torch.broadcast_shapes(m.shape, (1, *x.shape[1:]))
            except RuntimeError:
                raise ValueError(f"`feature_mask[{i}]` of shape {tuple(m.shape)} does not broadcast to the element's "
                                 f"shape (1, {', '.join(map(str, x.shape[1:]))}).") from None
            if bool((m < 0).any()):
                raise ValueError(f"`feature_mask[{i}]` must hold non-negative feature ids.")
        return masks
