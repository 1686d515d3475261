"""Every page of the built book reads on a phone and at the book's width (issue 24): no script error in the
console, no sideways scroll at 390 px, no stderr stream (a warning) in a cell's output, and no figure drawn wider
than the column and squeezed into it (its labels would shrink below a readable size)."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HTML = ROOT / "book" / "_build" / "html"
SHOTS = ROOT / "book" / "_build" / "screenshots"
PHONE, COLUMN = 390, 700  # a phone's viewport; a window that gives the book its ~700 px content width
SQUEEZE = 1.1  # a figure may be drawn at most this much wider than it is shown
# Sphinx's own index pages and the highlighted source of the modules: generated, no figures, no prose
SKIP = ("genindex", "search", "py-modindex", "_modules/", "_sources/", "_static/", "_images/")
pytestmark = pytest.mark.browser


def _pages() -> list:
    if not (HTML / "index.html").exists():
        return ["book/_build/html is missing: run `make book`"]
    pages = [p.relative_to(HTML).with_suffix("").as_posix() for p in sorted(HTML.rglob("*.html"))]
    return [p for p in pages if p != "index" and not p.startswith(SKIP)]  # index.html only redirects to intro


PAGES = _pages()


def _open(browser, static_server, page_name, width):
    """The page at ``width`` px, loaded with nothing from outside; returns (page, console errors)."""
    if not (HTML / f"{page_name}.html").exists():
        pytest.fail(page_name)  # the build is missing: _pages() says so
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith((static_server, "data:", "blob:"))
               else r.abort())
    page.goto(f"{static_server}/{page_name}.html", wait_until="load")
    page.wait_for_load_state("networkidle", timeout=15_000)
    return page, errors


# the elements that stick out of the page on the right, outside any box that scrolls or clips them
_STICKING_OUT = """() => {
  const out = [];
  for (const e of document.querySelectorAll("body *")) {
    const box = e.getBoundingClientRect();
    if (box.width === 0 || box.right <= innerWidth + 1) continue;
    let p = e.parentElement, held = false;
    for (; p && !held; p = p.parentElement) held = ["auto", "scroll", "hidden"].includes(getComputedStyle(p).overflowX);
    if (!held) out.push(`${e.tagName.toLowerCase()}.${String(e.className).split(" ")[0]} (right edge ${Math.round(box.right)} px)`);
  }
  return out.slice(0, 5);
}"""


@pytest.mark.parametrize("page_name", PAGES)
def test_page_reads_on_a_phone(browser, static_server, page_name):
    page, errors = _open(browser, static_server, page_name, PHONE)
    try:
        wide = page.evaluate("document.documentElement.scrollWidth")
        sticking_out = page.evaluate(_STICKING_OUT) if wide > PHONE else []
        stderr = page.eval_on_selector_all(".cell_output .stderr", "e => e.map(o => o.innerText.slice(0, 200))")
        if wide > PHONE:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"phone__{page_name.replace('/', '__')}.png"))
    finally:
        page.close()
    assert not errors, f"{page_name}: script errors in the console: {errors}"
    assert wide <= PHONE, f"{page_name} scrolls sideways on a {PHONE} px phone ({wide} px wide): {sticking_out}"
    assert not stderr, f"{page_name} shows a stderr stream (a warning) in a cell's output: {stderr}"


NOTEBOOK_PAGES = [p for p in PAGES if p.startswith(("notebooks/", "gallery/"))]


@pytest.mark.parametrize("page_name", NOTEBOOK_PAGES)
def test_figures_are_drawn_for_the_column_not_squeezed_into_it(browser, static_server, page_name):
    page, errors = _open(browser, static_server, page_name, COLUMN)
    try:
        sizes = page.eval_on_selector_all(
            ".cell_output img:not(.attrkit-grid img)",
            "imgs => imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().width, i.alt || i.src.slice(0, 40)])")
    finally:
        page.close()
    assert not errors, f"{page_name}: script errors in the console: {errors}"
    squeezed = [f"{alt}: {natural} px shown at {shown:.0f}" for natural, shown, alt in sizes
                if shown and natural > SQUEEZE * shown]
    assert not squeezed, (f"{page_name}: figures drawn wider than the {COLUMN} px page's column and shrunk (their "
                          f"text shrinks with them; draw them at most ~6.8 inches wide): {squeezed}")
