"""Kernel-free explorers (attrkit.insights.static) and the book's widget-state stripping (book/explorers.py)."""
import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from attrkit.insights import _render
from attrkit.insights.static import Control, grid_explorer, image_explorer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "book"))
import explorers  # noqa: E402


def spec_of(page) -> dict:
    return json.loads(re.search(r"<script type='application/json' class='ak-spec'>(.*?)</script>", page.html,
                                re.S).group(1).replace("<\\/", "</"))


def test_grid_keys_leave_out_hidden_controls_and_store_each_payload_once():
    controls = [Control("method", ["A", "B"], kind="select"), Control("steps", [1, 2, 3], when=("method", ["B"]))]
    items = {("A", None): {"text": "a"}, ("B", 1): {"text": "b1"}, ("B", 2): {"text": "b2"}, ("B", 3): {"text": "a"}}
    page = grid_explorer(controls, items, "<div data-slot='text'></div>", title="demo")
    spec = spec_of(page)
    assert page.n_items == 4 and page.n_payloads == 3  # "a" twice, stored once
    assert set(spec["items"]) == {"0|-", "1|0", "1|1", "1|2"}
    assert spec["controls"][1]["when"] == ["method", [1]]
    assert "<script>" in page.html and "http" not in page.html.replace("http://www.w3.org", "")  # nothing to fetch


def test_grid_names_the_first_missing_item():
    controls = [Control("method", ["A", "B"], kind="select")]
    with pytest.raises(KeyError, match="'method': 'B'"):
        grid_explorer(controls, {("A",): {"x": "1"}}, "")


def test_control_checks_its_arguments():
    with pytest.raises(ValueError, match="kind"):
        Control("x", [1], kind="knob")
    with pytest.raises(ValueError, match="labels"):
        Control("x", [1, 2], labels=["one"])
    with pytest.raises(ValueError, match="initial value"):
        Control("x", [1, 2], value=3)


def test_image_explorer_draws_every_map_with_every_sign_and_a_legend():
    g = torch.Generator().manual_seed(0)
    maps = {("p", "Saliency", None): torch.rand(1, 3, 16, 16, generator=g)}
    for steps in (4, 16):
        maps["p", "IG", steps] = torch.randn(1, 3, 16, 16, generator=g)
    page = image_explorer({"p": np.random.default_rng(0).random((16, 16, 3))}, maps, settings={"IG": "n_steps"})
    spec = spec_of(page)
    assert page.n_items == 3 * 4  # three maps, four signs
    assert [c["name"] for c in spec["controls"]] == ["method", "IG:setting", "sign"]  # one photo: no photo control
    assert spec["slots"] == ["caption", "legend", "map", "photo"]
    assert all(p.startswith("data:image/webp;base64,") for p in spec["payloads"] if p.startswith("data:"))
    assert sum("attrkit-legend" in p for p in spec["payloads"]) >= 4
    assert "n_steps" in page.html and page.nbytes < 200_000


def test_blend_matches_the_colormap_ends_and_the_legend_scale():
    attr = torch.zeros(1, 1, 4, 4)
    attr[0, 0, 0, 0] = 2.0
    rgb = _render.blend(attr, np.zeros((4, 4, 3)), "positive", alpha=1.0, outlier_perc=0)
    assert tuple(rgb[0, 0]) == (0, 68, 27)  # the darkest green of "Greens" at the scale's end
    assert _render.scale_of(attr, "positive", 0) == 2.0
    assert "2" in _render.legend_html("positive", 2.0) and "−" in _render.legend_html("all", 2.0)


def test_strip_widgets_keeps_output_widget_contents_and_drops_the_state(tmp_path):
    figure = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
              "metadata": {}}
    state = {"box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}},
             "slider": {"model_name": "IntSliderModel", "state": {}},
             "out": {"model_name": "OutputModel", "state": {"outputs": [figure]}}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("interact(...)", outputs=[
        nbformat.v4.new_output("display_data", data={explorers.WIDGET_VIEW: {"model_id": "box", "version_major": 2},
                                                      "text/plain": "interactive(...)"}),
        nbformat.v4.new_output("stream", name="stdout", text="kept\n")])])
    nb.metadata["widgets"] = {explorers.WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert explorers.strip_widgets(path) == 1
    out = nbformat.read(path, as_version=4)
    assert "widgets" not in out.metadata
    assert [o.output_type for o in out.cells[0].outputs] == ["display_data", "stream"]
    assert out.cells[0].outputs[0].data["image/png"] == "iVBORw0KGgo="
    assert explorers.strip_widgets(path) == 0  # idempotent


def test_book_parameters_come_from_the_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1\nbook_explorer = False  # the book")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert explorers.parameters_for(path) == {"book_explorer": True}
    nb.cells[0].source = "x = 1"
    nbformat.write(nb, path)
    assert explorers.parameters_for(path) == {}


def test_image_explorer_names_the_explained_class_under_every_map():
    maps = {(p, "Saliency", None): torch.rand(1, 3, 8, 8) for p in ("a", "b")}
    pictures = {p: np.random.default_rng(0).random((8, 8, 3)) for p in ("a", "b")}
    page = image_explorer(pictures, maps, explained={"a": "king penguin", "b": "black swan"}, signs=("all",))
    captions = [p for p in spec_of(page)["payloads"] if "sign: all" in p]
    assert sorted(captions) == ["why “black swan”: Saliency · sign: all", "why “king penguin”: Saliency · sign: all"]
