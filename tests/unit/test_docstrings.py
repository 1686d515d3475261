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


# abstract bases: nothing to call
_ABSTRACT = {"Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution", "NeuronAttribution"}


def _reference_text():
    from pathlib import Path
    pages = Path(__file__).resolve().parents[2] / "book" / "reference"
    return "\n".join(p.read_text() for p in pages.glob("*.md"))


def test_every_attribute_method_is_documented_with_its_arguments_and_an_example():
    """The reference (autodoc) shows ``attribute()`` for every algorithm with Args, Returns and an example.

    autodoc lists only members defined on the class itself, so a method inherited from a private base
    must be named on a reference page with ``automethod``."""
    import inspect
    import re
    reference = _reference_text()
    problems = []
    for name in attrkit.__all__:
        cls = getattr(attrkit, name)
        if not (isinstance(cls, type) and issubclass(cls, attrkit.Attribution)) or name in _ABSTRACT:
            continue
        method = inspect.unwrap(cls.attribute)
        doc = method.__doc__ or ""
        if "attribute" not in cls.__dict__ and not re.search(rf"automethod:: [\w.]*\b{name}\.attribute\b", reference):
            problems.append(f"{name}.attribute is inherited: autodoc will not show it without an automethod entry")
        if not doc:
            problems.append(f"{name}.attribute: no docstring")
            continue
        for section in ("Returns:", "Example:", ">>>"):
            if section not in doc:
                problems.append(f"{name}.attribute: no {section!r}")
        for parameter in inspect.signature(method).parameters:
            if parameter != "self" and not parameter.startswith("_") and not re.search(rf"\b{parameter}\b", doc):
                problems.append(f"{name}.attribute: parameter {parameter!r} not described")
    assert not problems, problems
