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

Plots: :func:`plot_pixel_flipping`, :func:`plot_model_randomization` (matplotlib,
imported only when you plot).
"""
from .fidelity import infidelity, infidelity_perturb_func_decorator, sensitivity_max
from .flipping import pixel_flipping
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
]
