"""What every neuron method shares: a primary method rebuilt with one neuron's activation as its objective.

Used by :mod:`attrkit.neuron` and :mod:`attrkit.neuron_rules` (a module of its own so that neither imports
the other's internals).
"""
from __future__ import annotations

from typing import Callable

from ._hooks import neuron_objective
from .base import GradientAttribution, NeuronAttribution


class _AimedAtNeuron(NeuronAttribution):
    """Shared by the neuron methods: build a primary method whose objective is the neuron."""

    def __init__(self, forward_func: Callable, layer, device_ids=None, multiply_by_inputs: bool = True):
        NeuronAttribution.__init__(self, forward_func, layer, device_ids, multiply_by_inputs)

    def _aimed(self, method_cls, neuron_selector, attribute_to_neuron_input: bool, **init):
        """``method_cls`` applied to the neuron's activation instead of the model's output.

        The objective is an ``nn.Module`` holding the model, so methods that hook the
        model's modules (DeepLift, guided backpropagation) find them as usual.
        """
        objective = neuron_objective(self.forward_func, self.layer, neuron_selector, attribute_to_neuron_input)
        return method_cls(objective, **init)


class _NeuronMethod(_AimedAtNeuron, GradientAttribution):
    """A gradient-based neuron method."""
