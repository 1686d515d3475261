"""Captum's ``captum.robust``: adversarial attacks (FGSM, PGD) and robustness metrics (AttackComparator,
MinParamPerturbation). Swap ``from captum.robust import FGSM`` for ``from attrkit.robust import FGSM``."""
from ._attacks import FGSM, PGD, Perturbation
from ._comparator import AttackComparator
from ._min_param import MinParamPerturbation

__all__ = ["FGSM", "AttackComparator", "MinParamPerturbation", "Perturbation", "PGD"]
