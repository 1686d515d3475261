"""Ready models, by their short name: the public names of :mod:`attrkit.zoo.models`."""
from .zoo.models import *  # noqa: F401,F403 - the public names, listed in its __all__
from .zoo.models import __all__  # noqa: F401
