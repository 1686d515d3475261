"""Named photos and data sets, by their short name: the public names of :mod:`attrkit.zoo.assets`.
``python -m attrkit.assets`` runs its command line."""
import sys

from .zoo.assets import *  # noqa: F401,F403 - the public names, listed in its __all__
from .zoo.assets import __all__, main

if __name__ == "__main__":
    sys.exit(main())
