"""``attrkit.text_models`` is :mod:`attrkit.zoo.text_models` (the same module object)."""
import sys

from .zoo import text_models as _text_models

sys.modules[__name__] = _text_models
