"""The committed notebooks follow the conventions of shared/design.md section 4."""
import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.stem)
def nb(request):
    return json.loads(request.param.read_text())


def _code(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell):
    return "".join(cell["source"])


def test_committed_without_outputs(nb):
    for cell in _code(nb):
        assert not cell.get("outputs") and cell.get("execution_count") is None


def test_opens_with_title_and_colab_badge(nb):
    first = _src(nb["cells"][0])
    assert first.startswith("# ") and "colab.research.google.com" in first and "You will learn" in first


def test_first_code_cell_installs_on_colab_only(nb):
    first = _src(_code(nb)[0])
    assert '"google.colab" in sys.modules' in first and "pip install" in first


def test_second_code_cell_is_the_parameters_cell(nb):
    cell = _code(nb)[1]
    assert "parameters" in cell["metadata"].get("tags", [])
    assert sum("parameters" in c["metadata"].get("tags", []) for c in _code(nb)) == 1


def test_never_imports_captum(nb):
    for cell in nb["cells"]:
        assert "captum" not in _src(cell).replace("Captum", "").replace("captum.ai", "")


def test_ends_with_summary(nb):
    text = "\n".join(_src(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in text


def test_no_cell_is_expected_to_fail(nb):
    """`make test` executes each notebook once, with papermill for the book, which fails on any error output:
    a teaching cell that shows an error catches it and prints it instead of tagging `raises-exception`."""
    for cell in _code(nb):
        assert "raises-exception" not in cell["metadata"].get("tags", [])
