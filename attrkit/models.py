"""``attrkit.models`` is :mod:`attrkit.zoo.models` (the same module object)."""
import sys

from .zoo import models as _models

sys.modules[__name__] = _models
