"""The book's Colab path, from one setting: ``repository.url`` (and the ref ``repository.branch``) in _config.yml.

* The install cell (the first code cell of every chapter) installs ``attrkit[colab]`` from that repository at that
  ref; ``python book/colab.py`` rewrites those cells after the setting changes (only that cell, with nbformat).
* With the URL unset (empty), the executed copies lose the "Open in Colab" badge line (the committed notebooks keep
  it as the marker) and the install cell says that attrkit has to be installed by hand.
* ``ATTRKIT_COLAB_SOURCE`` overrides what the cell installs (the Colab-like test installs the local wheel).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
NOTEBOOKS = BOOK.parent / "notebooks"
BADGE = "colab-badge.svg"
INSTALL_MARKER = "# On Colab, install attrkit first"


def repository() -> tuple[str, str]:
    """``(url, ref)`` from _config.yml; url is "" while the project has no public repository."""
    import yaml

    config = yaml.safe_load((BOOK / "_config.yml").read_text()).get("repository") or {}
    return (config.get("url") or "").rstrip("/"), str(config.get("branch") or "main")


def install_source() -> str:
    """The pip requirement the install cell installs: ``attrkit[colab] @ git+URL@REF``, or "" when unset."""
    url, ref = repository()
    return f"attrkit[colab] @ git+{url}@{ref}" if url else ""


def install_cell_source() -> str:
    return "\n".join([
        f"{INSTALL_MARKER}; elsewhere (JupyterLab, the book, CI) this cell does nothing.",
        "import os",
        "import sys",
        "",
        "if \"google.colab\" in sys.modules:",
        f"    ATTRKIT_SOURCE = os.environ.get(\"ATTRKIT_COLAB_SOURCE\", {json.dumps(install_source())})  # book/_config.yml",
        "    if not ATTRKIT_SOURCE:",
        "        raise RuntimeError(\"attrkit has no public repository yet: pip install attrkit[colab] from a checkout\")",
        "    %pip install --quiet \"{ATTRKIT_SOURCE}\"",
        "    print(\"attrkit is installed. If an import below fails, restart the session (Runtime > Restart session) \"",
        "          \"and run the notebook again.\")",
    ])


def install_cell(nb):
    """The first code cell, which must be the install cell."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    if not cell.source.startswith(INSTALL_MARKER):
        raise ValueError(f"the first code cell is not the Colab install cell: {cell.source[:60]!r}")
    return cell


def drop_badge_if_unset(text: str) -> str:
    """Remove the badge line from an executed copy's JSON text while no repository URL is set."""
    if repository()[0]:
        return text
    return re.sub(r'\s*"[^"\n]*' + re.escape(BADGE) + r'[^"\n]*",?', "", text)


def sync(paths=None) -> list[Path]:
    """Rewrite the install cell of each chapter to match the setting; returns the notebooks changed."""
    import nbformat

    changed = []
    for path in paths or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        text = Path(path).read_text()
        nb = nbformat.reads(text, as_version=4)
        cell = install_cell(nb)
        if cell.source != install_cell_source():
            cell.source = install_cell_source()
            out = nbformat.writes(nb)
            Path(path).write_text(out if out.endswith("\n") == text.endswith("\n") else out + "\n")
            changed.append(Path(path))
    return changed


if __name__ == "__main__":
    for p in sync(sys.argv[1:] or None):
        print("updated", p.name)
