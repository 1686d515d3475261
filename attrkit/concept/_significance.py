"""The statistical test the TCAV paper demands: a concept's score against many random concept sets."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ._concept import Concept, concepts_to_str

__all__ = ["SignificanceResult", "tcav_significance"]


@dataclass
class SignificanceResult:
    """One layer's test: the concept's TCAV scores against each random set, the scores of a random set
    against the same random sets (what chance gives), and a two-sided Welch t-test between the two."""
    layer: str
    concept_scores: torch.Tensor
    random_scores: torch.Tensor
    t_statistic: float
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def mean(self) -> float:
        return float(self.concept_scores.mean())

    @property
    def std(self) -> float:
        return float(self.concept_scores.std())


def tcav_significance(tcav, inputs, concept: "Concept | list[Concept]", random_concepts: list[Concept], target=None,
                      score_type: str = "sign_count", alpha: float = 0.05, additional_forward_args=None,
                      **kwargs) -> dict[str, SignificanceResult]:
    r"""Test ``concept`` against many random concepts at every layer of ``tcav``, as Kim et al. (2018) do.

    With random concepts :math:`r_0, r_1, \dots, r_m`, the concept is scored against each of
    :math:`r_1..r_m` (sets ``[concept, r_i]``) and, for reference, :math:`r_0` is scored against the same
    :math:`r_i`. If the concept meant nothing to the model, its scores would look like :math:`r_0`'s; a
    two-sided t-test (Welch's, unequal variances) between the two lists gives the p-value.

    Kim et al. (2018), *Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
    Activation Vectors (TCAV)*, https://arxiv.org/abs/1711.11279 (section 3.5).

    Args:
        tcav: a :class:`~attrkit.concept.TCAV`.
        inputs, target, additional_forward_args, kwargs: as for :meth:`TCAV.interpret`.
        concept: the concept to test, or a list of them (one :meth:`TCAV.interpret` call for all).
        random_concepts: at least three random concepts (more is better: the paper uses tens).
        score_type: ``"sign_count"`` or ``"magnitude"``.
        alpha: the significance level reported by :attr:`SignificanceResult.significant`.

    Returns:
        ``{layer: SignificanceResult}``; for a list of concepts, ``{concept name: {layer: SignificanceResult}}``.

    Example:
        >>> import torch
        >>> from attrkit.concept import TCAV, Concept, tcav_significance
        >>> from attrkit.testing import SmallCNN
        >>> g = torch.Generator().manual_seed(0)
        >>> noise = [Concept(i, f"random_{i}", [torch.rand(8, 1, 8, 8, generator=g)]) for i in range(1, 5)]
        >>> bright = Concept(0, "bright", [torch.rand(8, 1, 8, 8, generator=g) + 2])
        >>> model = SmallCNN()
        >>> result = tcav_significance(TCAV(model, "conv2"), torch.rand(6, 1, 8, 8), bright, noise, target=0)
        >>> 0 <= result["conv2"].p_value <= 1
        True
    """
    if score_type not in ("sign_count", "magnitude"):
        raise ValueError(f"`score_type` must be 'sign_count' or 'magnitude', got {score_type!r}.")
    several = isinstance(concept, (list, tuple))
    tested = list(concept) if several else [concept]
    if not tested:
        raise ValueError("`concept` must be a Concept or a non-empty list of them.")
    if len(random_concepts) < 3:
        raise ValueError(f"`random_concepts` needs at least 3 concepts (got {len(random_concepts)}): one reference "
                         "and two or more to score against.")
    if {r.id for r in random_concepts} & {c.id for c in tested}:
        raise ValueError("`random_concepts` must not contain a tested `concept`.")
    from scipy.stats import ttest_ind

    reference, others = random_concepts[0], list(random_concepts[1:])
    sets = [[c, r] for c in tested for r in others] + [[reference, r] for r in others]
    scores = tcav.interpret(inputs, sets, target=target, additional_forward_args=additional_forward_args, **kwargs)

    def along(first, layer):
        return torch.stack([scores[concepts_to_str([first, r])][layer][score_type][0] for r in others]).float().cpu()

    results = {}
    for c in tested:
        results[c.name] = {}
        for layer in tcav.layers:
            ours, chance = along(c, layer), along(reference, layer)
            with warnings.catch_warnings():     # a list of equal scores (all 1.0) is a valid sample; scipy warns
                warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
                t, p = ttest_ind(ours.numpy(), chance.numpy(), equal_var=False)
            if ours.std() == 0 and chance.std() == 0:          # scipy gives nan when both lists are constant
                t, p = (0.0, 1.0) if torch.equal(ours.mean(), chance.mean()) else (float("inf"), 0.0)
            results[c.name][layer] = SignificanceResult(layer, ours, chance, float(t), float(p), alpha)
    return results if several else results[tested[0].name]
