"""Math in the book without MathJax: every formula is drawn at build time by matplotlib's mathtext as an inline
SVG image, so pages need no script and nothing from a CDN (Sphinx's default, MathJax, loads from jsDelivr).

mathtext covers the TeX the docstrings and notebooks use (fractions, integrals, sums, Greek, accents, ``\\odot``);
a formula it cannot parse is shown as its TeX source in ``<code>``. Enabled in _config.yml with
``html_math_renderer: attrkit_mathtext``.
"""
from __future__ import annotations

import base64
import html
import io
from functools import lru_cache

from docutils import nodes


@lru_cache(maxsize=None)
def _svg(latex: str, size: float) -> str | None:
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    buf = io.BytesIO()
    try:
        mathtext.math_to_image(f"${latex}$", buf, prop=FontProperties(size=size), format="svg")
    except Exception:  # not mathtext's TeX: the source is shown instead
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html(latex: str, size: float, css: str) -> str:
    latex = " ".join(latex.split())
    svg = _svg(latex, size)
    if svg is None:
        return f"<code class='math'>{html.escape(latex)}</code>"
    return (f"<img class='math' src='data:image/svg+xml;base64,{svg}' alt='{html.escape(latex, quote=True)}' "
            f"style='{css}'>")


def visit_math(self, node):
    self.body.append(_html(node.astext(), 13, "vertical-align:middle;display:inline"))
    raise nodes.SkipNode


def visit_math_block(self, node):
    self.body.append(f"<div class='math' style='text-align:center;margin:.6em 0'>"
                     f"{_html(node.astext(), 15, 'display:inline-block')}</div>")
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer("attrkit_mathtext", (visit_math, None), (visit_math_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
