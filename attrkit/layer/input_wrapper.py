"""Model inputs as layers: :class:`ModelInputWrapper` puts an identity module in front of each argument of a
model's ``forward``, so any Layer* method can attribute to an input (Captum's ``ModelInputWrapper``) — handy for
a model that mixes token ids (attributed at their embedding) with continuous features (attributed as they are).
"""
from __future__ import annotations

import inspect

from torch import nn

__all__ = ["InputIdentity", "ModelInputWrapper"]

_NAMED = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class InputIdentity(nn.Module):
    """The identity, standing for the model input ``input_name`` (a layer to attribute to)."""

    def __init__(self, input_name: str):
        super().__init__()
        self.input_name = input_name

    def forward(self, x):
        return x

    def extra_repr(self) -> str:
        return f"input_name={self.input_name!r}"


class ModelInputWrapper(nn.Module):
    """``module_to_wrap`` with each named argument of its ``forward`` passed through its own
    :class:`InputIdentity` first: ``wrapped.input_maps["x"]`` is the layer of input ``x``. The wrapper is
    called exactly as the model is, and returns what the model returns. The identity's input and output are
    the same tensor, so ``attribute_to_layer_input`` makes no difference there.

    Example:
        >>> import torch
        >>> from attrkit import LayerIntegratedGradients, ModelInputWrapper
        >>> class Mixed(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.head = torch.nn.Embedding(10, 3), torch.nn.Linear(5, 2)
        ...     def forward(self, tokens, extra):
        ...         return self.head(torch.cat([self.embed(tokens).mean(1), extra], 1))
        >>> model = ModelInputWrapper(Mixed())
        >>> tokens, extra = torch.tensor([[1, 2, 3]]), torch.rand(1, 2)
        >>> lig = LayerIntegratedGradients(model, [model.module.embed, model.input_maps["extra"]])
        >>> [a.shape for a in lig.attribute((tokens, extra), target=0)]
        [torch.Size([1, 3, 3]), torch.Size([1, 2])]
    """

    def __init__(self, module_to_wrap: nn.Module):
        super().__init__()
        self.module = module_to_wrap
        parameters = inspect.signature(module_to_wrap.forward).parameters.values()
        self.arg_name_list = [p.name for p in parameters if p.kind in _NAMED]
        self.input_maps = nn.ModuleDict({name: InputIdentity(name) for name in self.arg_name_list})

    def forward(self, *args, **kwargs):
        named = [self.input_maps[name](value) for name, value in zip(self.arg_name_list, args)]
        kwargs = {name: self.input_maps[name](value) if name in self.input_maps else value
                  for name, value in kwargs.items()}
        return self.module(*named, *args[len(named):], **kwargs)
