"""Training-data influence: which training examples taught the model a prediction (Captum's ``captum.influence``).

* :class:`TracInCP`, :class:`TracInCPFast`, :class:`TracInCPFastRandProj` -- TracIn over saved checkpoints
  (Pruthi et al. 2020), on any parameters, on the last layer in closed form, and as a projected index;
* :class:`NaiveInfluenceFunction` -- influence functions with the exact Hessian (Koh & Liang 2017);
* :class:`ArnoldiInfluenceFunction` -- the same with a low-rank inverse Hessian from the Arnoldi iteration
  (Schioppa et al. 2022), for models too large for the exact Hessian;
* :class:`SimilarityInfluence` -- nearest training examples in a layer's activations.

Inputs follow Captum: a batch is a tuple ``(*features, labels)``; ``influence(inputs, k=None)`` returns the scores
``(n_test, n_train)``, ``influence(inputs, k=5)`` the top-k :class:`KMostInfluentialResults`; ``self_influence()``
scores the training set against itself. Swap ``from captum.influence import ...`` for
``from attrkit.influence import ...``.

Example::

    >>> from attrkit.influence import TracInCP, TracInCPFast, KMostInfluentialResults
    >>> KMostInfluentialResults._fields
    ('indices', 'influence_scores')
"""
from ._common import DataInfluence, KMostInfluentialResults
from .arnoldi import ArnoldiInfluenceFunction
from .influence_function import NaiveInfluenceFunction
from .similarity import SimilarityInfluence, cosine_similarity, euclidean_distance
from .tracincp import TracInCP, TracInCPBase
from .tracincp_fast import NearestNeighbors, TopKNearestNeighbors, TracInCPFast, TracInCPFastRandProj

__all__ = ["DataInfluence", "KMostInfluentialResults", "TracInCPBase", "TracInCP", "TracInCPFast",
           "TracInCPFastRandProj", "NearestNeighbors", "TopKNearestNeighbors", "SimilarityInfluence",
           "cosine_similarity", "euclidean_distance", "NaiveInfluenceFunction",
           "ArnoldiInfluenceFunction"]
