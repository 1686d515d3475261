"""Explanations read from a transformer's attention: attention rollout and gradient-weighted
attention (Chefer et al.), plus :func:`vit_token_grid`, the reshape that lets Grad-CAM and the
other layer methods work on a vision transformer's tokens.

Both methods need each layer's attention matrix :math:`A` (N, heads, T, T). attrkit gets it
without editing the model, for the duration of one call:

* torchvision (``nn.MultiheadAttention``, which torchvision's ``EncoderBlock`` calls with
  ``need_weights=False``): a scoped forward hook recomputes the module's output from its own
  weights with the attention matrix written out, records that matrix, and returns the same
  output, so the gradient of the model output with respect to :math:`A` is the true one (the
  weights ``nn.MultiheadAttention`` returns are a copy the output does not depend on);
* Hugging Face models: the config's attention implementation is switched to ``"eager"`` and
  ``output_attentions=True`` is passed, then the implementation is set back.

The hooks are removed, and the config restored, even when an error is raised.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _plumbing as plumbing
from ._hooks import hook_handles
from .base import Attribution, LayerAttribution

__all__ = ["AttentionRollout", "GradientWeightedAttention", "vit_token_grid"]


# --------------------------------------------------------------------------- tokens to a patch grid
def vit_token_grid(tokens: Tensor, grid_size: tuple[int, int] | None = None, num_prefix_tokens: int = 1) -> Tensor:
    """A vision transformer's tokens (N, prefix + P, D) as a patch grid (N, D, h, w).

    The first ``num_prefix_tokens`` tokens (the class token; 2 with a distillation token)
    are dropped and the P patch tokens laid out row by row on an ``h × w`` grid
    (``grid_size``; by default the square ``√P × √P``). Give it to
    ``LayerGradCam.attribute(..., reshape_transform=vit_token_grid)``; the other layer
    methods return the token layout, which this function turns into maps afterwards.

    Example:
        >>> import torch
        >>> from attrkit import vit_token_grid
        >>> vit_token_grid(torch.rand(2, 1 + 16, 32)).shape
        torch.Size([2, 32, 4, 4])
    """
    if not isinstance(tokens, Tensor) or tokens.dim() != 3:
        raise ValueError("`tokens` must be a tensor of shape (N, prefix + patches, D), got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}.")
    patches = tokens[:, plumbing.check_positive_int(num_prefix_tokens, "num_prefix_tokens", minimum=0):]
    h, w = _grid(patches.shape[1], grid_size)
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _grid(n_patches: int, grid_size) -> tuple[int, int]:
    if grid_size is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ValueError(f"{n_patches} patch tokens do not form a square grid: give `grid_size=(h, w)`.")
        return side, side
    h, w = grid_size
    if h * w != n_patches:
        raise ValueError(f"`grid_size` {tuple(grid_size)} holds {h * w} patches, but there are {n_patches} tokens.")
    return h, w


# --------------------------------------------------------------------------- attention of torch's module
_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _explicit_attention(m: nn.MultiheadAttention, record: list, args: tuple, kwargs: dict):
    """What ``m(*args, **kwargs)`` returns, computed with the attention matrix written out and recorded."""
    call = _MHA_SIGNATURE.bind(m, *args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    query, key, value = a["query"], a["key"], a["value"]
    if query.dim() != 3:
        raise ValueError(f"attention capture needs batched (3-D) query/key/value, got shape {tuple(query.shape)}.")
    if m.batch_first is False:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    n, t, e = query.shape
    s, h = key.shape[1], m.num_heads
    d = e // h
    biases = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None, None, None)

    def heads(x, w, b, length):
        return F.linear(x, w, b).view(n, length, h, d).transpose(1, 2)

    wq, wk, wv = m.in_proj_weight.chunk(3)
    q, k, v = heads(query, wq, biases[0], t), heads(key, wk, biases[1], s), heads(value, wv, biases[2], s)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    scores = scores + _additive_mask(a["attn_mask"], a["key_padding_mask"], a["is_causal"], n, h, t, s, scores)
    attention = F.dropout(scores.softmax(-1), m.dropout, m.training)
    if torch.is_grad_enabled() and not attention.requires_grad:  # nothing upstream needs a gradient: start here
        attention.requires_grad_()
    record.append(attention)
    out = F.linear((attention @ v).transpose(1, 2).reshape(n, t, e), m.out_proj.weight, m.out_proj.bias)
    out = out if m.batch_first else out.transpose(0, 1)
    weights = (attention.mean(1) if a["average_attn_weights"] else attention) if a["need_weights"] else None
    return out, weights


def _additive_mask(attn_mask, key_padding_mask, is_causal, n, h, t, s, like: Tensor):
    """``nn.MultiheadAttention``'s masks as one additive term broadcastable to (N, H, T, S)."""
    total = torch.zeros((), dtype=like.dtype, device=like.device)
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(t, s, dtype=torch.bool, device=like.device).triu(1)
    for mask, shape in ((attn_mask, (n, h, t, s) if attn_mask is not None and attn_mask.dim() == 3 else (t, s)),
                        (key_padding_mask, (n, 1, 1, s))):
        if mask is None:
            continue
        mask = mask.reshape(shape)
        total = total + (torch.zeros_like(mask, dtype=like.dtype).masked_fill(mask, float("-inf"))
                         if mask.dtype == torch.bool else mask.to(like.dtype))
    return total


def _mha_hook(record: list, module, args, kwargs, output):
    return _explicit_attention(module, record, args, kwargs)


@contextmanager
def _torch_attention(modules: list) -> Iterator[list]:
    record: list = []
    with hook_handles() as handles:
        for m in modules:
            if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
                raise ValueError(f"`model`: attention capture supports nn.MultiheadAttention with equal query/key/"
                                 f"value sizes and no bias_k/add_zero_attn; {m} has them.")
            handles.append(m.register_forward_hook(partial(_mha_hook, record), with_kwargs=True))
        yield record


# --------------------------------------------------------------------------- attention of Hugging Face models
def _is_hugging_face(model: nn.Module) -> bool:
    return hasattr(getattr(model, "config", None), "_attn_implementation")


@contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    config = model.config
    before = config._attn_implementation
    try:
        config._attn_implementation = "eager"
        yield
    finally:
        config._attn_implementation = before


# --------------------------------------------------------------------------- the shared method
class _AttentionAttribution(Attribution):
    """Runs the model while recording every attention matrix; subclasses combine the matrices."""

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module with attention layers, got {type(model).__name__}.")
        super().__init__(model)
        self.model = model
        self._mha = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
        if not self._mha and not _is_hugging_face(model):
            raise ValueError(f"`model` ({type(model).__name__}) has no attention layer attrkit can read: it needs "
                             "torch.nn.MultiheadAttention modules (torchvision's ViT) or to be a Hugging Face "
                             "transformers model.")

    def _attention(self, xs: tuple, args: tuple) -> tuple[Tensor, list[Tensor]]:
        """The model's output and its attention matrices (N, H, T, T), in the order the layers ran."""
        if self._mha:
            with _torch_attention(self._mha) as record:
                return self.model(*xs, *args), record
        with _eager_attention(self.model):
            out = self.model(*xs, *args, output_attentions=True)
        attentions = getattr(out, "attentions", None)
        if not attentions:
            raise ValueError(f"`model` ({type(self.model).__name__}) returned no attentions with "
                             "output_attentions=True.")
        return getattr(out, "logits", out), list(attentions)

    def _read_out(self, relevance: Tensor, token_index: int, num_prefix_tokens: int, as_grid: bool, grid_size,
                  interpolate_dims, interpolate_mode: str) -> Tensor:
        """Row ``token_index`` of the (N, T, T) relevance over the non-prefix tokens, as a (N, 1, h, w) map."""
        t = relevance.shape[-1]
        if not -t <= token_index < t:
            raise ValueError(f"`token_index` {token_index} is outside the {t} tokens.")
        if not 0 <= num_prefix_tokens < t:
            raise ValueError(f"`num_prefix_tokens` must be in [0, {t}), got {num_prefix_tokens}.")
        row = relevance[:, token_index, num_prefix_tokens:]
        if not as_grid:
            return row
        h, w = _grid(row.shape[1], grid_size)
        grid = row.reshape(len(row), 1, h, w)
        return grid if interpolate_dims is None else LayerAttribution.interpolate(grid, interpolate_dims,
                                                                                   interpolate_mode)


def _identity_like(attention: Tensor) -> Tensor:
    n, _, t, _ = attention.shape
    return torch.eye(t, dtype=attention.dtype, device=attention.device).expand(n, t, t)


_HEAD_FUSIONS = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}


class AttentionRollout(_AttentionAttribution):
    r"""Attention rollout: how much each token flows into ``token_index`` (the class token)
    through all layers, when every layer mixes tokens by its head-averaged attention plus the
    residual connection, :math:`\hat A_l = \tfrac12(\bar A_l + I)` (rows renormalised), and
    the layers compose: :math:`R = \hat A_L \cdots \hat A_1`. No gradient, no target: the
    map is the same for every class.

    Abnar & Zuidema (2020), *Quantifying Attention Flow in Transformers*,
    https://arxiv.org/abs/2005.00928

    Args:
        model: a torchvision vision transformer (or any model built from
            ``nn.MultiheadAttention``), or a Hugging Face transformers model.

    ``attribute`` returns, per example, the row of ``token_index`` over the tokens after the
    first ``num_prefix_tokens`` as a (N, 1, h, w) patch map (``as_grid=False``: (N, P) token
    scores, for text models), upsampled to ``interpolate_dims`` when given.

    Example:
        >>> import torch
        >>> from torchvision.models import VisionTransformer
        >>> from attrkit import AttentionRollout
        >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        ...                         mlp_dim=64).eval()
        >>> rollout = AttentionRollout(vit).attribute(torch.rand(2, 3, 32, 32))
        >>> rollout.shape, AttentionRollout(vit).attribute(torch.rand(2, 3, 32, 32), interpolate_dims=(32, 32)).shape
        (torch.Size([2, 1, 4, 4]), torch.Size([2, 1, 32, 32]))
    """

    def attribute(self, inputs, additional_forward_args=None, head_fusion: str = "mean", add_residual: bool = True,
                  token_index: int = 0, num_prefix_tokens: int = 1, as_grid: bool = True, grid_size=None,
                  interpolate_dims=None, interpolate_mode: str = "bilinear") -> Tensor:
        """Roll the attention out through every layer and read out one token's row.

        Args:
            inputs: the input tensor (or tuple of tensors) of the model, batch first.
            additional_forward_args: extra arguments passed to the model after the inputs.
            head_fusion: how the heads of a layer are combined: ``"mean"``, ``"max"`` or ``"min"``.
            add_residual: add the identity for the residual connection before renormalising (the paper's rule).
            token_index: the token whose row is read out (0: the class token).
            num_prefix_tokens: tokens before the patches (class and register tokens), dropped from the map.
            as_grid: return a (N, 1, h, w) patch map (True) or (N, P) token scores (False, for text models).
            grid_size: ``(h, w)`` of the patch grid; None infers a square grid.
            interpolate_dims: upsample the map to this size (e.g. the image's), or None.
            interpolate_mode: the interpolation mode for ``interpolate_dims``.

        Returns:
            The rollout map per example: (N, 1, h, w), or (N, P) with ``as_grid=False``.

        Example:
            >>> import torch
            >>> from torchvision.models import VisionTransformer
            >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
            ...                         mlp_dim=64, num_classes=5).eval()
            >>> AttentionRollout(vit).attribute(torch.rand(2, 3, 32, 32), head_fusion="max").shape
            torch.Size([2, 1, 4, 4])
        """
        xs, _ = plumbing.as_tuple(inputs)
        plumbing.require_examples(xs)
        fuse = _HEAD_FUSIONS[plumbing.check_choice(head_fusion, "head_fusion", list(_HEAD_FUSIONS))]
        with torch.no_grad():
            _, attentions = self._attention(xs, plumbing.format_args(additional_forward_args))
            relevance = _identity_like(attentions[0])
            for attention in attentions:
                mixing = fuse(attention)
                if add_residual:
                    mixing = 0.5 * mixing + 0.5 * _identity_like(attention)
                mixing = mixing / mixing.sum(-1, keepdim=True)
                relevance = mixing @ relevance
        return self._read_out(relevance, token_index, num_prefix_tokens, as_grid, grid_size, interpolate_dims,
                              interpolate_mode)


class GradientWeightedAttention(_AttentionAttribution):
    r"""Gradient-weighted attention relevance (Chefer et al.'s rule for self-attention
    models): each layer's attention weighted by the gradient of the target output with
    respect to it, positive part, averaged over heads,
    :math:`\bar A_l = \mathbb{E}_h[(\nabla A_l \odot A_l)^+]`, accumulated from the first
    layer on with the residual kept as the identity, :math:`R \leftarrow R + \bar A_l R`,
    :math:`R_0 = I`. Class-specific, at the cost of one forward and one backward pass.

    Chefer, Gur & Wolf (2021), *Generic Attention-model Explainability for Interpreting
    Bi-Modal and Encoder-Decoder Transformers*, https://arxiv.org/abs/2103.15679

    Args:
        model: as for :class:`AttentionRollout`.

    ``attribute`` reads out the map as :class:`AttentionRollout` does; ``target`` chooses the
    output to explain, as in every Captum method.

    Example:
        >>> import torch
        >>> from torchvision.models import VisionTransformer
        >>> from attrkit import GradientWeightedAttention
        >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        ...                         mlp_dim=64, num_classes=5).eval()
        >>> GradientWeightedAttention(vit).attribute(torch.rand(2, 3, 32, 32), target=3).shape
        torch.Size([2, 1, 4, 4])
    """

    def attribute(self, inputs, target=None, additional_forward_args=None, token_index: int = 0,
                  num_prefix_tokens: int = 1, as_grid: bool = True, grid_size=None, interpolate_dims=None,
                  interpolate_mode: str = "bilinear") -> Tensor:
        """Weight each layer's attention by its gradient for ``target``, accumulate, and read out one token's row.

        Args:
            inputs: the input tensor (or tuple of tensors) of the model, batch first.
            target: the output to explain per example: an int, a tuple index, a list of those, or None for a
                model that returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs.
            token_index: the token whose row is read out (0: the class token).
            num_prefix_tokens: tokens before the patches (class and register tokens), dropped from the map.
            as_grid: return a (N, 1, h, w) patch map (True) or (N, P) token scores (False, for text models).
            grid_size: ``(h, w)`` of the patch grid; None infers a square grid.
            interpolate_dims: upsample the map to this size (e.g. the image's), or None.
            interpolate_mode: the interpolation mode for ``interpolate_dims``.

        Returns:
            The relevance map per example: (N, 1, h, w), or (N, P) with ``as_grid=False``.

        Example:
            >>> import torch
            >>> from torchvision.models import VisionTransformer
            >>> vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
            ...                         mlp_dim=64, num_classes=5).eval()
            >>> GradientWeightedAttention(vit).attribute(torch.rand(2, 3, 32, 32), target=0, as_grid=False).shape
            torch.Size([2, 16])
        """
        xs, _ = plumbing.as_tuple(inputs)
        plumbing.require_examples(xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        leaves = tuple(x.detach().requires_grad_() if x.is_floating_point() else x for x in xs)
        with torch.enable_grad():
            output, attentions = self._attention(leaves, args)
            objective = plumbing.per_example(plumbing.select_target(output, target), plumbing.batch_size_of(xs))
            if not all(a.requires_grad for a in attentions):
                raise ValueError("`model`: its attention does not depend on anything that requires a gradient "
                                 "(frozen parameters and integer inputs); unfreeze a parameter before it.")
            grads = torch.autograd.grad(objective.sum(), attentions, allow_unused=True)
        relevance = _identity_like(attentions[0]).clone()
        for attention, grad in zip(attentions, grads):
            grad = torch.zeros_like(attention) if grad is None else grad
            weighted = (grad * attention).clamp(min=0).mean(1)
            relevance = relevance + weighted.detach() @ relevance
        return self._read_out(relevance, token_index, num_prefix_tokens, as_grid, grid_size, interpolate_dims,
                              interpolate_mode)
