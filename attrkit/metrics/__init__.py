"""Quality numbers for attributions: can a heat map be trusted?

Captum-compatible (``from captum.metrics import ...`` becomes ``from attrkit.metrics import ...``):

* :func:`infidelity` — how well attributions predict the output change under
  perturbations (Yeh et al. 2019); :func:`infidelity_perturb_func_decorator`
  turns a function that only returns perturbed inputs into one ``infidelity`` accepts.
* :func:`sensitivity_max` — how much an explanation changes when the input moves
  a little (Yeh et al. 2019).

Beyond Captum, the two checks the literature asks of every saliency map:

* :func:`pixel_flipping` — deletion and insertion curves and their AUC
  (Samek et al. 2017; Petsiuk et al. 2018).
* :func:`model_randomization` — the "sanity check": do attributions change when the
  model's weights are re-initialised? (Adebayo et al. 2018). It reports
  :func:`spearman_correlation` and :func:`ssim` per layer.

Does a map fall on the object? Each against the score of a random map on the same mask
(:mod:`attrkit.metrics.localisation`):

* :func:`pointing_game` (Zhang et al. 2018), :func:`relevance_mass_accuracy` = :func:`energy_pointing_game`
  (Arras et al. 2022; Wang et al. 2020), :func:`relevance_rank_accuracy`, :func:`top_k_iou`, and
  :func:`localisation` for all four; each returns a :class:`Localisation` ``(score, random)``.

Plots: :func:`plot_pixel_flipping`, :func:`plot_model_randomization` (matplotlib,
imported only when you plot).
"""
from .fidelity import infidelity, infidelity_perturb_func_decorator, sensitivity_max
from .flipping import pixel_flipping
from .localisation import (
    Localisation,
    energy_pointing_game,
    localisation,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_iou,
)
from .plots import plot_model_randomization, plot_pixel_flipping
from .randomization import (
    ModelRandomizationResult,
    RandomizationRecord,
    model_randomization,
    spearman_correlation,
    ssim,
)

__all__ = [
    "infidelity", "infidelity_perturb_func_decorator", "sensitivity_max",
    "pixel_flipping", "model_randomization", "ModelRandomizationResult", "RandomizationRecord",
    "spearman_correlation", "ssim", "plot_pixel_flipping", "plot_model_randomization",
    "Localisation", "pointing_game", "relevance_mass_accuracy", "energy_pointing_game", "relevance_rank_accuracy",
    "top_k_iou", "localisation",
]
