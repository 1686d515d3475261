"""Explorers that need no kernel: every map precomputed, swapped by a few lines of plain JavaScript.

A reader of the rendered book cannot run Python, so the book's explorers are computed when the book is built and
embedded in the page as one self-contained HTML fragment: no CDN, no build step, works from ``file://`` and
served, in JupyterLab and Colab output cells too.

* :func:`grid_explorer` is the generic part: *controls* (sliders and drop-downs over a few values each, some
  shown only for some values of another control) and *items*, one per combination of the controls' values, each
  filling the named *slots* of a page fragment (an ``<img data-slot="map">`` gets a ``src``, any other element
  ``innerHTML``). It knows nothing about images: a text explorer passes HTML of coloured tokens per item.
* :func:`image_explorer` builds on it for attribution maps of photos: a photo, a method, each method's own
  setting (``n_steps``, the occlusion window, ...) and the sign, with the colour legend beside the map.

Each distinct payload is stored once (a map that does not change with a control costs nothing extra), images as
WebP or JPEG data URIs.

Example:
    >>> import torch
    >>> from attrkit.insights.static import image_explorer
    >>> maps = {("x", "Saliency", None): torch.rand(1, 3, 8, 8), ("x", "IG", 4): torch.rand(1, 3, 8, 8),
    ...         ("x", "IG", 16): torch.rand(1, 3, 8, 8)}
    >>> page = image_explorer({"x": torch.rand(8, 8, 3).numpy()}, maps, settings={"IG": "n_steps"})
    >>> page.n_items, "<script" in page.html
    (12, True)
"""
from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..visualization import colors
from . import _render

SIGNS = tuple(colors.SIGNS)  # every sign, drawn by default


@dataclass
class Control:
    """One control of a :func:`grid_explorer`: ``values`` (any hashable), shown as ``labels`` (default
    ``str(value)``); ``kind`` "slider" (an ordered scale) or "select" (a drop-down); ``when=(other, values)``
    shows and uses it only while control ``other`` has one of ``values`` (its value then does not matter and
    is left out of the item's key); ``value`` is the initial value (default: the first)."""

    name: str
    values: Sequence[Any]
    labels: Sequence[str] | None = None
    kind: str = "slider"
    when: tuple[str, Sequence[Any]] | None = None
    value: Any = None
    description: str | None = None

    def __post_init__(self):
        if self.kind not in ("slider", "select"):
            raise ValueError(f"Control {self.name!r}: kind must be 'slider' or 'select', got {self.kind!r}")
        if not self.values:
            raise ValueError(f"Control {self.name!r}: `values` is empty")
        self.labels = [str(v) for v in self.values] if self.labels is None else list(self.labels)
        if len(self.labels) != len(self.values):
            raise ValueError(f"Control {self.name!r}: {len(self.labels)} labels for {len(self.values)} values")
        if self.value is not None and self.value not in self.values:
            raise ValueError(f"Control {self.name!r}: initial value {self.value!r} is not one of its values")


@dataclass
class StaticExplorer:
    """A kernel-free explorer: ``html`` (a self-contained fragment: style, markup, data and script),
    ``n_items`` (combinations of control values) and ``n_payloads`` (distinct slot contents stored).
    Displays itself in a notebook; :meth:`save` writes a standalone page."""

    html: str
    n_items: int
    n_payloads: int
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return len(self.html.encode("utf-8"))

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path, title: str = "attrkit explorer") -> Path:
        path = Path(path)
        path.write_text(f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
                        f"</title></head><body>{self.html}</body></html>\n", encoding="utf-8")
        return path


_CSS = """<style>
.attrkit-grid{font:14px/1.4 system-ui,sans-serif;display:flex;flex-wrap:wrap;gap:12px 20px;align-items:flex-start;
  max-width:100%;margin:8px 0}
.attrkit-grid .ak-controls{display:flex;flex-direction:column;gap:6px;flex:0 1 300px;min-width:220px}
.attrkit-grid label{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.attrkit-grid label>span{min-width:6.5em;font-weight:600}
.attrkit-grid input[type=range]{flex:1 1 100px;min-width:80px}
.attrkit-grid output{min-width:5.5em;font-variant-numeric:tabular-nums}
.attrkit-grid select{max-width:100%;flex:1 1 auto}
.attrkit-grid .ak-body{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start;flex:1 1 320px;min-width:0}
.attrkit-grid .ak-body img{max-width:100%;height:auto;image-rendering:auto}
.attrkit-grid .ak-title{flex-basis:100%;font-weight:600}
.attrkit-grid .ak-note{flex-basis:100%;font-size:12px;color:#555}
</style>"""

# the whole runtime: read the controls, build the key, fill the slots from the payloads
_JS = """(function(){
var root=document.getElementById(%(id)s);if(!root||root.dataset.ready)return;root.dataset.ready="1";
var spec=JSON.parse(root.querySelector("script.ak-spec").textContent);
var inputs={};root.querySelectorAll("[data-control]").forEach(function(el){inputs[el.dataset.control]=el;});
function value(c){return parseInt(inputs[c.name].value,10);}
function shown(c){if(!c.when)return true;var o=spec.controls.filter(function(d){return d.name===c.when[0];})[0];
  return shown(o)&&c.when[1].indexOf(value(o))>=0;}
function update(){var key=[];spec.controls.forEach(function(c){var on=shown(c);
    inputs[c.name].closest("label").style.display=on?"":"none";
    var out=root.querySelector('output[data-for="'+c.name+'"]');if(out)out.textContent=c.labels[value(c)];
    key.push(on?String(value(c)):"-");});
  var item=spec.items[key.join("|")];if(!item)return;
  spec.slots.forEach(function(s,i){root.querySelectorAll('[data-slot="'+s+'"]').forEach(function(el){
    var v=spec.payloads[item[i]];if(el.tagName==="IMG"){el.src=v;}else{el.innerHTML=v;}});});
  root.dataset.key=key.join("|");}
Object.keys(inputs).forEach(function(n){inputs[n].addEventListener("input",update);
  inputs[n].addEventListener("change",update);});
update();})();"""


def _control_html(c: Control) -> str:
    """One control's label and field (a range slider with its read-out, or a drop-down)."""
    start = c.values.index(c.value) if c.value is not None else 0
    label = html.escape(c.description or c.name)
    if c.kind == "slider":
        field_html = (f"<input type='range' min='0' max='{len(c.values) - 1}' step='1' value='{start}' "
                      f"data-control='{html.escape(c.name)}' aria-label='{label}'>"
                      f"<output data-for='{html.escape(c.name)}'>{html.escape(c.labels[start])}</output>")
    else:
        options = "".join(f"<option value='{i}'{' selected' if i == start else ''}>{html.escape(lab)}</option>"
                          for i, lab in enumerate(c.labels))
        field_html = f"<select data-control='{html.escape(c.name)}' aria-label='{label}'>{options}</select>"
    return f"<label class='ak-{c.kind}'><span>{label}</span>{field_html}</label>"


def grid_explorer(controls: Sequence[Control], items: Mapping[tuple, Mapping[str, str]], body: str, *,
                  title: str = "", note: str = "") -> StaticExplorer:
    """A kernel-free explorer over every combination of ``controls``' values.

    ``items`` maps a key — one value per control, in order, with ``None`` for a control that its ``when`` hides —
    to the contents of the slots: slot name -> a string (an image's ``src``, e.g. a data URI, or HTML).
    ``body`` is the HTML fragment with the slots (elements with ``data-slot="name"``). Every reachable
    combination must have an item (a ``KeyError`` names the first missing one).
    """
    controls = list(controls)
    names = [c.name for c in controls]
    if len(set(names)) != len(names):
        raise ValueError(f"control names must be distinct, got {names}")
    by_name = dict(zip(names, controls))
    for c in controls:
        if c.when and c.when[0] not in by_name:
            raise ValueError(f"Control {c.name!r} depends on an unknown control {c.when[0]!r}")

    def active(c: Control, choice: dict) -> bool:
        if c.when is None:
            return True
        other = by_name[c.when[0]]
        return active(other, choice) and choice[other.name] in c.when[1]

    slots = sorted({s for item in items.values() for s in item})
    payloads, index, table = [], {}, {}
    for combo in product(*(c.values for c in controls)):
        choice = dict(zip(names, combo))
        key = tuple(v if active(c, choice) else None for c, v in zip(controls, combo))
        js_key = "|".join(str(c.values.index(v)) if v is not None else "-" for c, v in zip(controls, key))
        if js_key in table:
            continue
        if key not in items:
            raise KeyError(f"no item for {dict(zip(names, key))}")
        row = []
        for s in slots:
            content = items[key].get(s, "")
            if content not in index:
                index[content] = len(payloads)
                payloads.append(content)
            row.append(index[content])
        table[js_key] = row
    spec = {"controls": [{"name": c.name, "labels": c.labels,
                          "when": None if c.when is None else
                          [c.when[0], [by_name[c.when[0]].values.index(v) for v in c.when[1]
                                       if v in by_name[c.when[0]].values]]} for c in controls],
            "slots": slots, "items": table, "payloads": payloads}
    data = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    uid = "attrkit-grid-" + hashlib.sha1(data.encode()).hexdigest()[:12]
    rows = [_control_html(c) for c in controls]
    head = f"<div class='ak-title'>{html.escape(title)}</div>" if title else ""
    foot = f"<div class='ak-note'>{note}</div>" if note else ""
    fragment = (f"{_CSS}<div class='attrkit-grid' id='{uid}'>{head}<div class='ak-controls'>{''.join(rows)}</div>"
                f"<div class='ak-body'>{body}</div>{foot}"
                f"<script type='application/json' class='ak-spec'>{data}</script>"
                f"<script>{_JS % {'id': json.dumps(uid)}}</script></div>")
    return StaticExplorer(fragment, len(table), len(payloads))


def _caption(method, setting, sign, settings, labels, explained) -> str:
    """What one map shows: the class it explains, the method (and its setting) and the sign."""
    what = f"{method}" + (f", {settings.get(method, 'setting')} = {labels.get(method, str)(setting)}"
                          if setting is not None else "") + f" · sign: {sign}"
    return f"why “{explained}”: {what}" if explained else what


def image_explorer(pictures: Mapping[str, np.ndarray], maps: Mapping[tuple, Any], *,
                   settings: Mapping[str, str] | None = None, labels: Mapping[str, Callable[[Any], str]] | None = None,
                   signs: Sequence[str] = SIGNS, alpha: float = 0.6, outlier_perc: float = 2.0, fmt: str = "webp",
                   quality: int = 80, title: str = "", note: str | None = None,
                   explained: Mapping[str, str] | None = None) -> StaticExplorer:
    """A kernel-free explorer of precomputed attribution maps of photos.

    ``pictures``: name -> the photo as the model sees it, (H, W, 3) in [0, 1]. ``maps``: ``(picture, method,
    setting)`` -> the attribution, (1, C, H, W) or (C, H, W), with ``setting`` None for a method without one;
    methods appear in the order they first occur. ``settings``: method -> the name of its setting's slider
    (``{"Integrated Gradients": "n_steps"}``); ``labels``: method -> a function that writes a setting's value
    for the slider's read-out. Every map is drawn once per sign in ``signs`` (blended heat map, ``alpha``,
    ``outlier_perc`` as :func:`attrkit.visualization.visualize_image_attr`), with its colour legend.
    ``explained``: picture -> the class its maps explain (the target's name), written under every map.
    """
    settings, labels, explained = dict(settings or {}), dict(labels or {}), dict(explained or {})
    names = list(pictures)
    methods = list(dict.fromkeys(m for _, m, _ in maps))
    values = {m: sorted({s for _, mm, s in maps if mm == m and s is not None}) for m in methods}
    controls = []
    if len(names) > 1:
        controls.append(Control("picture", names, kind="select", description="photo"))
    controls.append(Control("method", methods, kind="select"))
    for m in methods:
        if values[m]:
            show = labels.get(m, str)
            controls.append(Control(f"{m}:setting", values[m], [show(v) for v in values[m]],
                                    when=("method", [m]), value=values[m][-1],
                                    description=settings.get(m, "setting")))
    controls.append(Control("sign", list(signs), kind="select"))
    photo_uri = {n: _render.data_uri(_render.encode(np.asarray(pictures[n], dtype=np.float64), fmt, quality), fmt)
                 for n in names}
    items = {}
    for (name, method, setting), attr in maps.items():
        for sign in signs:
            rgb = _render.blend(attr, np.asarray(pictures[name], dtype=np.float64), sign, alpha, outlier_perc)
            key = ([name] if len(names) > 1 else []) + [method]
            key += [setting if m == method else None for m in methods if values[m]]
            key.append(sign)
            items[tuple(key)] = {
                "photo": photo_uri[name], "map": _render.data_uri(_render.encode(rgb, fmt, quality), fmt),
                "legend": _render.legend_html(sign, _render.scale_of(attr, sign, outlier_perc), outlier_perc),
                "caption": html.escape(_caption(method, setting, sign, settings, labels, explained.get(name)))}
    body = ("<figure style='margin:0'><img data-slot='photo' alt='the photo' width='224'></figure>"
            "<div style='display:flex;gap:6px;align-items:flex-start;max-width:100%'>"  # the legend beside its map
            "<figure style='margin:0;min-width:0'><img data-slot='map' class='ak-map' alt='attribution map' "
            "width='224'><figcaption data-slot='caption' style='font-size:12px;max-width:224px'></figcaption>"
            "</figure><div data-slot='legend'></div></div>")
    if note is None:
        note = ("Precomputed when the book was built: every combination of these controls is stored in the page, "
                "so the map changes at once without Python. Run the notebook for every setting.")
    return grid_explorer(controls, items, body, title=title, note=note)
