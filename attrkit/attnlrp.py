"""AttnLRP: layer-wise relevance propagation through transformers, in one backward pass."""
from __future__ import annotations

import warnings
from typing import Callable

from torch import Tensor, nn

from . import _plumbing as plumbing
from ._hooks import layer_gradients, module_of
from ._rules import _first_caller_outside_attrkit
from ._transformer_rules import transformer_rules
from .base import GradientAttribution


class AttnLRP(GradientAttribution):
    r"""Layer-wise relevance propagation for transformers (AttnLRP), as relevance = input × modified gradient.

    The explained output's value is its relevance; the rules of :mod:`attrkit._transformer_rules` pass it back
    through attention (softmax and the two products ``q·kᵀ`` and ``attention·v``), normalisation, gated MLPs,
    nonlinearities, residual additions and linear layers, in *one* forward and backward pass. The model is used
    as it is: attention computed inside ``F.scaled_dot_product_attention`` (Hugging Face's default, and
    ``nn.MultiheadAttention`` in torchvision's ViT) or written out with ``torch.matmul`` and softmax (Hugging
    Face's eager attention) is rewritten only while ``attribute`` runs, and no hook, flag or setting of the model
    is left changed.

    Relevance is conserved up to what biases and softmax's bias term absorb: ``return_convergence_delta=True``
    returns ``output - sum(attributions)`` per example. The softmax rule is the paper's (its Proposition 3.1, a
    Taylor expansion at the input whose bias term keeps its share, as in the reference implementation LXT), and
    that bias term can absorb much of the relevance that enters the attention weights (the uniform rule gives
    them half of each attention output's): on SmolLM2-135M, 0.59 of the logit. With
    ``softmax_relevance=False`` the attention weights are held constant instead (CP-LRP, Ali et al. 2022,
    https://arxiv.org/abs/2202.07304, the paper's baseline): all of an attention output's relevance goes to the
    values, and relevance is conserved up to the biases, but queries and keys get none.
    A call that runs through a nonlinear operation no rule covers (a division of two activations, ``exp``, ...)
    warns, naming the module.

    Inputs are float tensors (pixels, or token embeddings: pass ``inputs_embeds`` for a language model).
    With ``layer=`` the relevance is computed at that module's output (or input, with
    ``attribute_to_layer_input=True``), e.g. at a ViT's first encoder block to see the relevance of the patch
    embeddings after the position embeddings were added.

    Achtibat et al. (2024), *AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers*, ICML,
    https://arxiv.org/abs/2402.05602

    Args:
        forward_func: an ``nn.Module``, or a function that runs ``model`` (then pass ``model``).
        model: the module whose calls get the rules (default: ``forward_func`` or the owner of its bound method).
        softmax_relevance: relevance passes through softmax to queries and keys (AttnLRP, default), or not
            (CP-LRP: the attention weights are constants).

    Example:
        >>> import torch
        >>> from torchvision.models import VisionTransformer
        >>> from attrkit import AttnLRP
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3).eval()
        >>> attr, delta = AttnLRP(vit).attribute(torch.rand(2, 3, 32, 32), target=1, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2]))
    """

    _multiplies_by_inputs = True
    _has_convergence_delta = True

    def __init__(self, forward_func: Callable, model: nn.Module | None = None, softmax_relevance: bool = True):
        super().__init__(forward_func)
        self.model = model if model is not None else module_of(forward_func)
        if not isinstance(softmax_relevance, bool):
            raise TypeError(f"`softmax_relevance` must be True or False, got {softmax_relevance!r}.")
        self.softmax_relevance = softmax_relevance
        if not isinstance(self.model, nn.Module):
            raise TypeError("`model` must be the nn.Module that `forward_func` runs (AttnLRP rewrites its calls), "
                            f"got {type(model).__name__}.")

    def attribute(self, inputs, target=None, additional_forward_args=None, return_convergence_delta: bool = False,
                  layer: nn.Module | None = None, attribute_to_layer_input: bool = False):
        """Relevance of every input (or of ``layer``'s values) for ``target``, in one forward and backward pass.

        Args:
            inputs: float input tensor (or tuple of tensors), batch first: pixels, or token embeddings.
            target: the output to explain per example: an int, a tuple index, a list of those, or None for a
                model that returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return ``output - sum(relevance)`` per example (what is not conserved).
            layer: a module of the model: relevance at its output instead of at the inputs, or None.
            attribute_to_layer_input: with ``layer``, relevance at the module's input instead of its output.

        Returns:
            Relevance shaped like the inputs (or the layer's values); with ``return_convergence_delta=True``,
            ``(relevance, delta)``.

        Example:
            >>> import torch
            >>> from torchvision.models import VisionTransformer
            >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3).eval()
            >>> AttnLRP(vit).attribute(torch.rand(1, 3, 32, 32), target=0, layer=vit.encoder.layers[0]).shape
            torch.Size([1, 17, 32])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        with transformer_rules(self.model, self.softmax_relevance) as rewriter:
            if layer is None:
                grads, values = self.gradient_func(self.forward_func, xs, target, args), xs
            else:
                grads, values = layer_gradients(self.forward_func, layer, xs, target, args, attribute_to_layer_input)
        _warn_uncovered(rewriter.uncovered)
        relevance = tuple(v.detach() * g for v, g in zip(values, grads))
        result = plumbing.restore(relevance, is_tuple if layer is None else len(relevance) > 1)
        if not return_convergence_delta:
            return result
        return result, self.compute_convergence_delta(relevance, plumbing.scalar_outputs(self.forward_func, xs,
                                                                                            target, args))

    def compute_convergence_delta(self, attributions, output: Tensor) -> Tensor:
        """Relevance lost on the way (to biases and softmax): ``output - sum(attributions)`` per example."""
        attrs, _ = plumbing.as_tuple(attributions, "attributions")
        return output.reshape(-1) - plumbing.sum_per_example(attrs).reshape(-1)


def _warn_uncovered(uncovered: dict):
    if uncovered:
        warnings.warn(
            f"AttnLRP: {' and '.join(uncovered)} {'has' if len(uncovered) == 1 else 'have'} no AttnLRP rule, so the "
            "ordinary gradient is used there and relevance may not be conserved. Compute it in a module and give "
            "that module a rule, or check the convergence delta.", stacklevel=_first_caller_outside_attrkit())
