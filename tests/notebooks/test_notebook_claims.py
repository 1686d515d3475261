"""Static markdown must not make claims about a run's results (issue 24, shared/design.md section 4).

A sentence about *this run* (a number, which is larger, what ranks first, "large", "agrees", a sign, a
percentage) is written by code from the values (`IPython.display.Markdown`) and guarded by a visible `assert`
cell with its threshold. Static markdown cells explain methods only.

The detector below flags result-like words in every static markdown cell of every notebook in `notebooks/`:
numbers (digits, percentages, signed values), comparatives and superlatives ("larger", "most", "worst"),
verdicts ("agrees", "contradicts", "decisive", "stays large", "fails") and signs ("positive", "negative").
It flags generously; a cell whose flagged words a person has read and found to be about the method, the data
set or the setup (not about this run's results) carries the cell tag **`claims-reviewed`** (in JupyterLab:
the property inspector, "Cell Tags"). Put a result into a generated cell instead of tagging it: the tag says
"nothing in this cell depends on what the code computes", and a reader of the rendered book will hold it to that.
When you edit a reviewed cell, review it again.
"""
import json
import pathlib
import re

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
REVIEWED_TAG = "claims-reviewed"

_WORDS = (
    # comparatives and superlatives
    r"larger|largest|smaller|smallest|bigger|biggest|greater|greatest|higher|highest|lower|lowest|"
    r"stronger|strongest|weaker|weakest|better|best|worse|worst|more|most|less|least|fewer|fewest|"
    r"closer|closest|further|furthest|sharper|noisier|cleaner|faster|fastest|slower|slowest|"
    # verdicts about results
    r"agrees?|agreement|disagrees?|contradicts?|contradiction|confirms?|matches|differs?|dominates?|dominant|"
    r"decisive|significant|clearly|obviously|large|small|tiny|huge|big|sizeable|negligible|exact|exactly|"
    r"accurate|converged|converges|unconverged|stays|remains|always|never|none|every|only|"
    r"ranks?|ranked|first|top|fails?|wrong|right|correct|correctly|mistakes?|errors?|"
    # signs
    r"positive|negative|positively|negatively|sign|flips?"
)
_PATTERNS = {
    "number": r"(?<![\w.])[+\-−±]?\d+(?:[.,]\d+)*(?:\s?%|\s?×|x\b)?",
    "word": rf"\b(?:{_WORDS})\b",
}


def _prose(markdown: str) -> str:
    """The prose a reader sees: no code (fenced or inline), no link targets, HTML tags or math."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)            # images (badges)
    text = re.sub(r"\]\([^)]*\)", "]", text)                      # link targets
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"\b[\w-]*\d+[\w-]*\.ipynb\b", " ", text)      # chapter file names
    return text


def result_claims(markdown: str) -> list[str]:
    """The result-like words and numbers in a markdown cell's prose, in order."""
    text = _prose(markdown)
    found = []
    for kind, pattern in _PATTERNS.items():
        found += [(m.start(), m.group(0).strip()) for m in re.finditer(pattern, text, flags=re.I)]
    return [word for _, word in sorted(found)]


# --------------------------------------------------------------------------- the detector can fail
FLAGGED = [
    "On a transformer the convergence delta stays large.",
    "Each size measurement looks moderately important, none looks decisive.",
    "DeepLift and Integrated Gradients agree on this model.",
    "Occlusion contradicts the gradient maps.",
    "Punctuation gets 38% of the attribution.",
    "The full stop's attribution is +0.42.",
    "The beak gets a negative attribution.",
    "Occlusion is sharper than Integrated Gradients here.",
    "The model ranks worst radius first.",
    "The map is worse than random.",
    "It finds no mistakes in 49 photos.",
    "The largest share goes to the city.",
]
NOT_FLAGGED = [
    "Integrated Gradients walks in a straight line from a baseline to the input.",
    "`LLMAttribution` wraps a perturbation method around the model (see `n_steps=50`).",
    "Feature ablation switches one segment off at a time and scores the prompt again.",
    "The next cell computes the convergence delta; read it before you read the map.",
    "See [the toy model](01_toy_model.ipynb) for the method.",
]


@pytest.mark.parametrize("sentence", FLAGGED)
def test_detector_flags_result_claims(sentence):
    assert result_claims(sentence), sentence


@pytest.mark.parametrize("sentence", NOT_FLAGGED)
def test_detector_leaves_method_prose_alone(sentence):
    assert result_claims(sentence) == [], (sentence, result_claims(sentence))


def test_a_reviewed_tag_is_what_silences_it():
    cell = {"cell_type": "markdown", "metadata": {}, "source": ["The delta stays large."]}
    assert _unreviewed_claims({"cells": [cell]})
    cell["metadata"]["tags"] = [REVIEWED_TAG]
    assert not _unreviewed_claims({"cells": [cell]})


# --------------------------------------------------------------------------- every chapter
def _unreviewed_claims(nb) -> list[tuple[int, list[str], str]]:
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown" or REVIEWED_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"])
        claims = result_claims(source)
        if claims:
            out.append((i, claims, source[:120].replace("\n", " ")))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_static_markdown_makes_no_unreviewed_result_claims(path):
    nb = json.loads(path.read_text())
    flagged = _unreviewed_claims(nb)
    report = "\n".join(f"  cell {i}: {claims}  «{start}…»" for i, claims, start in flagged)
    assert not flagged, (
        f"{path.name}: static markdown with result-like words. Generate the sentence from the values "
        f"(IPython.display.Markdown) with an assert cell, or, if the words are about the method, tag the cell "
        f"'{REVIEWED_TAG}':\n{report}")


def test_reviewed_cells_are_markdown():
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if REVIEWED_TAG in cell.get("metadata", {}).get("tags", []):
                assert cell["cell_type"] == "markdown", path.name
