"""``attrkit.assets`` is :mod:`attrkit.zoo.assets` (the same module object); ``python -m attrkit.assets``
runs its command line."""
import sys

from .zoo import assets as _assets

if __name__ == "__main__":
    sys.exit(_assets.main())
sys.modules[__name__] = _assets
