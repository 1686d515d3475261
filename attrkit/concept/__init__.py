"""Concept-based interpretation (Captum's ``captum.concept``): which human idea a model's prediction uses.

Swap ``from captum.concept import TCAV, Concept`` for ``from attrkit.concept import TCAV, Concept``.

* :class:`Concept` — a name, an id and example inputs; :func:`concepts_to_str` the key of a set of them;
* :class:`TCAV` (a :class:`ConceptInterpreter`) — TCAV scores per experimental set and layer, from the
  :class:`CAV` a :class:`Classifier` (by default :class:`DefaultClassifier`) learns;
* :func:`tcav_significance` — the paper's statistical test against many random concept sets;
* :class:`CustomIterableDataset`, :func:`dataset_to_dataloader` — the data helpers Captum's tutorials import.
"""
from ._cav import CAV
from ._classifier import Classifier, DefaultClassifier
from ._concept import Concept, ConceptInterpreter, CustomIterableDataset, concepts_to_str, dataset_to_dataloader
from ._significance import SignificanceResult, tcav_significance
from ._tcav import TCAV

__all__ = ["Concept", "ConceptInterpreter", "TCAV", "CAV", "Classifier", "DefaultClassifier", "concepts_to_str",
           "CustomIterableDataset", "dataset_to_dataloader", "tcav_significance", "SignificanceResult"]
