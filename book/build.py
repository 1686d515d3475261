"""Build the book: execute the notebooks with papermill, generate pages, run Jupyter Book.

    python book/build.py                 # everything (what `make book` runs)
    python book/build.py --no-execute    # reuse the executed notebooks already in book/notebooks
    python book/build.py --only 01_toy_model

Executed copies go to book/notebooks/ and book/gallery/ (both generated, ignored by git); the committed
notebooks in notebooks/ stay output-free. Gallery pages are the penguin/swan notebook run with other parameters.
Notebooks with a `book_explorer` parameter run with it set to True (a kernel-free explorer in the page), and the
executed copies lose their widget state, so the pages load nothing from outside (book/explorers.py).
"""
from __future__ import annotations

import argparse
import inspect
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import explorers  # noqa: E402  (book/explorers.py: kernel-free explorers, no widget state in the pages)

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
SOURCE = ROOT / "notebooks"
EXECUTED = BOOK / "notebooks"
GALLERY = BOOK / "gallery"
GENERATED = BOOK / "generated"

NOTEBOOKS = ["01_toy_model", "02_imagenet_penguin_swan", "03_fastai_pets", "04_text_sentiment", "05_llm_prompts",
             "06_tabular", "07_transformers", "08_concepts", "09_influence", "10_robustness", "11_segmentation"]

# (page name, title, source notebook, parameters): the same notebook, other settings.
GALLERY_PAGES = [
    ("swan_small_occlusion", "The swan with a fine occlusion grid", "02_imagenet_penguin_swan",
     {"photos": ["swan"], "occlusion_windows": [32, 16]}),
    ("penguin_more_steps", "The penguins with 200 integration steps and more noise samples", "02_imagenet_penguin_swan",
     {"photos": ["penguin"], "ig_steps": 200, "nt_samples": 16}),
]


def execute(src: Path, dst: Path, parameters: dict | None = None) -> float:
    import papermill

    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(src), str(dst), parameters=parameters or {}, cwd=str(SOURCE), kernel_name="python3",
        progress_bar=False, request_save_on_cell_execute=False,
    )
    return time.perf_counter() - start


from colab import drop_badge_if_unset  # noqa: E402  (book/colab.py, beside this script)

BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"


def localize_badge(notebook: Path) -> None:
    """Show the Colab badge from the book's own _static folder, so pages load completely offline."""
    text = notebook.read_text()
    text = text.replace(BADGE_URL, "../_static/colab-badge.svg")
    notebook.write_text(drop_badge_if_unset(text))  # no repository URL in _config.yml: no badge (book/colab.py)


def retitle(notebook: Path, title: str, parameters: dict) -> None:
    """Give a gallery page its own title and say which parameters made it."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "markdown")
    body = re.sub(r"^# .*\n?", "", first.source, count=1)
    settings = ", ".join(f"`{k}={v!r}`" for k, v in parameters.items())
    first.source = f"# Gallery: {title}\n\n*Generated from the penguin and swan notebook with {settings}.*\n\n{body}"
    for cell in nb.cells:  # links to sibling notebooks now point into ../notebooks/
        if cell.cell_type == "markdown":
            cell.source = re.sub(r"\]\((0\d_[\w]+\.ipynb)\)", r"](../notebooks/\1)", cell.source)
    nbformat.write(nb, notebook)


# modules whose classes are documented on another family's reference page (every attrkit.layer.* on "layer")
REFERENCE_PAGE = {"surrogates": "shapley", "lime": "shapley", "neuron_rules": "neuron"}


def algorithms_table() -> str:
    """The comparison table in the introduction, from the library's own metadata."""
    import attrkit

    rows = ["| method | family | kind | completeness delta | × (input − baseline) | baselines | paper |",
            "|---|---|---|---|---|---|---|"]
    for name in attrkit.__all__:
        cls = getattr(attrkit, name)
        if not inspect.isclass(cls) or not issubclass(cls, attrkit.Attribution) or name.endswith("Attribution"):
            continue
        module = cls.__module__.split(".")[1]  # attrkit.<module> or attrkit.<package>.<module>
        page = REFERENCE_PAGE.get(module, module)
        kind = next((k for k in ("Layer", "Neuron", "Gradient", "Perturbation")
                     if any(b.__name__ == f"{k}Attribution" for b in cls.__mro__)), "Other")
        delta, multiplies = _flags(cls)
        takes_baselines = "baselines" in inspect.signature(cls.attribute).parameters
        paper = re.search(r"https?://\S+", cls.__doc__ or "")
        link = f"[paper]({paper.group(0).rstrip('.,)')})" if paper else ""
        rows.append(f"| {{doc}}`{name} </reference/{page}>` | {page} | {kind} | {_yes(delta)} | {_yes(multiplies)} "
                    f"| {_yes(takes_baselines)} | {link} |")
    return "\n".join(rows) + "\n"


def _flags(cls):
    """Instantiate on a tiny model to ask the method itself (no hard-coded table)."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    try:
        params = inspect.signature(cls.__init__).parameters
        args = [model] + ([model[0]] if "layer" in params else [])
        if "attribution_method" in params:
            from attrkit import IntegratedGradients
            args = [IntegratedGradients(model)]
        method = cls(*args)
        return method.has_convergence_delta(), method.multiplies_by_inputs
    except Exception:  # a method that needs more to construct: leave the cell blank
        return None, None


def _yes(flag) -> str:
    return {True: "yes", False: "no", None: "–"}[flag]


def data_sources() -> str:
    """data/ASSETS.md (sources and licences, written by the project) without its title."""
    text = (ROOT / "data" / "ASSETS.md").read_text()
    return re.sub(r"^# .*\n", "", text, count=1)


def performance_table() -> None:
    for name in ("performance_table.md", "performance_busy_table.md"):
        table = BOOK / name
        if not table.exists():
            table.write_text("*No measurements yet: run `make bench`.*\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-execute", action="store_true", help="reuse executed notebooks")
    parser.add_argument("--only", nargs="*", help="execute only these notebooks (names without .ipynb)")
    parser.add_argument("--no-gallery", action="store_true", help="skip the gallery variations")
    parser.add_argument("--no-html", action="store_true", help="execute only, do not run jupyter-book")
    args = parser.parse_args(argv)

    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "algorithms.md").write_text(algorithms_table())
    (GENERATED / "data_sources.md").write_text(data_sources())
    performance_table()

    if not args.no_execute:
        for name in args.only or NOTEBOOKS:
            seconds = execute(SOURCE / f"{name}.ipynb", EXECUTED / f"{name}.ipynb",
                              explorers.parameters_for(SOURCE / f"{name}.ipynb"))
            localize_badge(EXECUTED / f"{name}.ipynb")
            print(f"executed {name} in {seconds:.0f} s", flush=True)
        if not args.no_gallery and not args.only:
            GALLERY.mkdir(exist_ok=True)
            for page, title, source, params in GALLERY_PAGES:
                seconds = execute(SOURCE / f"{source}.ipynb", GALLERY / f"{page}.ipynb", params)
                retitle(GALLERY / f"{page}.ipynb", title, params)
                localize_badge(GALLERY / f"{page}.ipynb")
                print(f"executed gallery/{page} in {seconds:.0f} s", flush=True)
    write_gallery_index()
    for notebook in [*EXECUTED.glob("*.ipynb"), *GALLERY.glob("*.ipynb")]:  # pages load nothing from outside
        explorers.strip_widgets(notebook)
    if args.no_html:
        return 0
    shutil.rmtree(BOOK / "_build", ignore_errors=True)  # a full build: Sphinx only re-warns about documents it re-reads
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(BOOK), "--warningiserror", "--keep-going"]
    return subprocess.call(cmd, cwd=ROOT)


def write_gallery_index() -> None:
    GALLERY.mkdir(exist_ok=True)
    items = "\n".join(f"- [{title}]({page}.ipynb)" for page, title, _, _ in GALLERY_PAGES
                      if (GALLERY / f"{page}.ipynb").exists())
    (GALLERY / "index.md").write_text(
        "# Gallery\n\nThe penguin and swan notebook, executed again with other parameters by `make book` "
        "(papermill). Each page shows what changes when one knob turns.\n\n" + (items or "*Not built yet.*") + "\n")


if __name__ == "__main__":
    sys.exit(main())
