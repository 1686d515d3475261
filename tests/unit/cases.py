"""One list of (algorithm, model, arguments) cases drives the cross-cutting tests.

Each algorithm family adds its cases in a ``cases_<family>.py`` module beside this
one (a ``CASES`` list of :class:`Case`); ``test_cross_cutting.py`` runs every case
through the same checks: agreement with the Captum oracle, hooks/flags/modes
restored (also after an error), results independent of the batch size, and
tuple-in/tuple-out shapes (each case says what its shape follows).
"""
from __future__ import annotations

import glob
import importlib
import os
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable

import torch

import attrkit


@dataclass
class Case:
    name: str                      # a short id for the test report
    method: str                    # the class name, the same in attrkit and captum.attr
    model: Callable[[], torch.nn.Module]
    inputs: Callable[[], Any]      # a tensor or a tuple of tensors (called after seeding)
    kwargs: dict = field(default_factory=dict)        # attribute(...) keyword arguments
    init: dict = field(default_factory=dict)          # constructor keyword arguments
    layer: str | None = None       # dotted attribute path of the layer, for layer and neuron methods
    wrapper: str | None = None     # e.g. "NoiseTunnel" around `method`
    oracle: str = "exact"          # "exact", "expectation" or "none"
    rtol: float = 1e-5
    atol: float = 1e-6
    batch_arg: str | None = None   # the keyword that sets a batch size, for the invariance test
    batch_values: tuple = (1, 3)
    bad_kwargs: dict | None = None  # keyword arguments that must raise (ValueError/TypeError)
    captum_kwargs: dict | None = None  # if Captum needs different keywords for the same computation
    shape: str | None = None       # what the result's shape follows: "inputs", "layer" (each tensor the layer
    #                                produces or receives) or "layer-summed" (the same, channels summed to one, as
    #                                Grad-CAM does); None: "inputs" without a layer, "layer" with one

    def __post_init__(self):
        if self.shape is None:
            self.shape = "inputs" if self.layer is None else "layer"
        if self.shape not in ("inputs", "layer", "layer-summed"):
            raise ValueError(f"case {self.name}: `shape` must be 'inputs', 'layer' or 'layer-summed', "
                             f"not {self.shape!r}")

    def __str__(self):
        return self.name


def load_cases() -> list[Case]:
    here = os.path.dirname(__file__)
    cases: list[Case] = []
    for path in sorted(glob.glob(os.path.join(here, "cases_*.py"))):
        module = importlib.import_module(os.path.splitext(os.path.basename(path))[0])
        cases.extend(module.CASES)
    return cases


def build(case: Case, library) -> Any:
    """Instantiate ``case.method`` from ``library`` (attrkit or captum.attr) on a fresh model."""
    torch.manual_seed(0)
    model = case.model()
    cls = getattr(library, case.method)
    args = (model,) if case.layer is None else (model, attrgetter(case.layer)(model))
    method = cls(*args, **case.init)
    if case.wrapper:
        method = getattr(library, case.wrapper)(method)
    return model, method


def make_inputs(case: Case):
    torch.manual_seed(1)
    return case.inputs()
