"""What build.py does so that the rendered book has working explorers and loads nothing from outside.

* **Kernel-free explorers.** A notebook whose ``parameters`` cell defines ``book_explorer`` is executed with
  ``book_explorer=True``: it then displays :func:`attrkit.insights.static.image_explorer` (or any other
  :mod:`attrkit.insights.static` explorer), every map precomputed from what the notebook already computed, as
  plain HTML and JavaScript in a cell output. Default ``False``: in JupyterLab, Colab and the notebook tests the
  live ipywidgets explorer is enough. A new chapter gets one by adding the parameter and a cell.
* **No widget state.** Live widgets cannot work in a static page, and myst-nb renders stored widget state by
  loading require.js and the widgets' html-manager from two CDNs. :func:`strip_widgets` removes the state from the
  executed copies and replaces each widget's output by what its ``Output`` widgets hold (the figure of an
  ``interact``), so no page asks a CDN for anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PARAMETER = "book_explorer"


def parameters_for(notebook: Path) -> dict:
    """``{"book_explorer": True}`` when ``notebook``'s ``parameters`` cell defines ``book_explorer``, else ``{}``."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            names = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)}
            return {PARAMETER: True} if PARAMETER in names else {}
    return {}


def _static_outputs(model_id: str, state: dict, seen: set | None = None) -> list:
    """The outputs held by ``Output`` widgets in the tree of widget ``model_id`` (depth first)."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in state:
        return []
    seen.add(model_id)
    model = state[model_id]
    if model.get("model_name") == "OutputModel":
        return list(model.get("state", {}).get("outputs", []))
    outputs = []
    for child in model.get("state", {}).get("children", []):
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            outputs += _static_outputs(child[len("IPY_MODEL_"):], state, seen)
    return outputs


def strip_widgets(notebook: Path) -> int:
    """Remove stored widget state and widget views from an executed notebook, keeping what its ``Output``
    widgets show; returns how many widget outputs were replaced."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW) if out.get("output_type") in ("display_data",
                                                                                       "execute_result") else None
            if view is None:
                outputs.append(out)
                continue
            replaced += 1
            outputs += [nbformat.from_dict(o) for o in _static_outputs(view.get("model_id", ""), state)]
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, notebook)
    return replaced
