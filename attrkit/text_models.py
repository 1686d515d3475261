"""Text corpora and language models, by their short name: the public names of :mod:`attrkit.zoo.text_models`."""
from .zoo.text_models import *  # noqa: F401,F403 - the public names, listed in its __all__
from .zoo.text_models import __all__  # noqa: F401
