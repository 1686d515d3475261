"""Every docstring example in attrkit runs and prints what it says (one test per module)."""
import doctest
import importlib
import pkgutil

import matplotlib
import pytest

import attrkit

matplotlib.use("Agg")
MODULES = sorted(m.name for m in pkgutil.walk_packages(attrkit.__path__, "attrkit.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_public_class_has_an_example_and_every_algorithm_a_reference():
    missing = []
    for name in attrkit.__all__:
        obj = getattr(attrkit, name)
        doc = obj.__doc__ or ""
        if name.endswith(("Attribution", "Rule")) or name in ("LimeBase", "LayerActivation"):
            continue
        if ">>>" not in doc:
            missing.append(f"{name}: no example")
        is_algorithm = isinstance(obj, type) and issubclass(obj, attrkit.Attribution)
        if is_algorithm and "http" not in doc and "et al" not in doc and "(19" not in doc and "(20" not in doc:
            missing.append(f"{name}: no paper reference")
    assert not missing, missing
