"""The built book in headless Chromium: every notebook page renders its images, shows no traceback and loads
nothing from outside 127.0.0.1; the kernel-free explorers change their map with every slider and method."""
import pathlib
from urllib.parse import urlparse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HTML = ROOT / "book" / "_build" / "html"
SHOTS = ROOT / "book" / "_build" / "screenshots"
PAGES = ["intro", "notebooks/01_toy_model", "notebooks/02_imagenet_penguin_swan", "notebooks/03_fastai_pets",
         "notebooks/04_text_sentiment", "notebooks/05_llm_prompts",
         "notebooks/06_tabular", "notebooks/11_segmentation", "gallery/index", "reference/gradient", "performance",
         "data_sources"]
pytestmark = pytest.mark.browser
# figures each executed notebook draws at its default parameters (plots, heat maps, fastai's views)
MIN_FIGURES = {"notebooks/01_toy_model": 2, "notebooks/02_imagenet_penguin_swan": 12,
               "notebooks/03_fastai_pets": 6, "notebooks/04_text_sentiment": 2,
               "notebooks/05_llm_prompts": 5, "notebooks/06_tabular": 2,
               "notebooks/11_segmentation": 3}
# pages with a kernel-free explorer (attrkit.insights.static), and their controls
EXPLORERS = {"notebooks/02_imagenet_penguin_swan": {"picture", "method", "sign"},
             "notebooks/03_fastai_pets": {"method", "sign"},
             "notebooks/04_text_sentiment": {"method", "n_steps", "window", "baseline"}}
MAX_EXPLORER_BYTES = 3_000_000


def _local_only(page) -> list:
    """Refuse every request that would leave 127.0.0.1 (or the file system); return the list of refused URLs."""
    outside = []

    def route(r):
        url = r.request.url
        if url.startswith(("data:", "blob:", "file:")) or urlparse(url).hostname in ("127.0.0.1", "localhost"):
            return r.continue_()
        outside.append(url)
        return r.abort()

    page.route("**/*", route)
    return outside


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders(browser, static_server, page_name):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside = _local_only(page)
    try:
        response = page.goto(f"{static_server}/{page_name}.html", wait_until="load")
        assert response is not None and response.ok, f"{page_name}: HTTP {response and response.status}"
        page.wait_for_load_state("networkidle", timeout=15_000)
        broken = page.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
        assert not broken, f"images that did not load on {page_name}: {broken}"
        text = page.inner_text("main")
        assert "Traceback (most recent call last)" not in text
        assert "Error" not in page.eval_on_selector_all(".output.traceback, .output.error", "e => e.length ? 'Error' : ''")
        if page_name.startswith("notebooks/"):
            figures = page.eval_on_selector_all(".cell_output img:not(.attrkit-grid img)", "imgs => imgs.length")
            assert figures >= MIN_FIGURES[page_name], f"{page_name}: {figures} figures in cell outputs"
        assert not page.locator("script[src*='require'], script[src*='html-manager']").count(), "widget CDN scripts"
        assert not errors, errors  # none at all: each inline script is written once (book/_ext/attrkit_pages.py)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '__')}.png"), full_page=True)
    finally:
        page.close()
    assert not outside, f"{page_name} asked outside 127.0.0.1 for {outside}"


def _map(grid) -> str:
    """What the explorer shows: the map image's source, or for an explorer without one (text) its body's HTML."""
    image = grid.locator("img.ak-map")
    return image.evaluate("i => i.src") if image.count() else grid.locator(".ak-body").inner_html()


def _exercise(grid) -> int:
    """Switch every method, move every slider through its values and switch every sign, photo and other drop-down;
    the map must change each time. Returns the number of changes checked."""
    checked = 0

    def expect_change(action, what):
        nonlocal checked
        before = _map(grid)
        action()
        assert _map(grid) != before, f"the map did not change after {what}"
        checked += 1

    method = grid.locator("select[data-control=method]")
    names = method.locator("option").all_inner_texts()
    for i in range(1, len(names)):
        expect_change(lambda i=i: method.select_option(str(i)), f"switching the method to {names[i]}")
    for i, name in enumerate(names):
        method.select_option(str(i))
        for slider in grid.locator("input[type=range][data-control]").all():
            if not slider.is_visible():
                continue
            top = int(slider.get_attribute("max"))
            slider.fill("0")
            for v in range(1, top + 1):
                expect_change(lambda v=v: slider.fill(str(v)), f"moving {name}'s slider to {v}")
    signed = next((i for i, n in enumerate(names) if "Integrated" in n), 0)  # a signed map: every sign differs
    method.select_option(str(signed))
    sign = grid.locator("select[data-control=sign]")
    for i in range(1, sign.locator("option").count() if sign.count() else 1):
        expect_change(lambda i=i: sign.select_option(str(i)), f"switching the sign to option {i}")
    pictures = grid.locator("select[data-control=picture]")
    if pictures.count():
        for i in range(1, pictures.locator("option").count()):
            expect_change(lambda i=i: pictures.select_option(str(i)), f"switching the photo to option {i}")
    for other in grid.locator("select[data-control]").all():  # any other drop-down (the text's baseline token)
        name = other.get_attribute("data-control")
        if name not in ("method", "sign", "picture") and other.is_visible():
            for i in range(1, other.locator("option").count()):
                expect_change(lambda i=i: other.select_option(str(i)), f"switching the {name} to option {i}")
    return checked


@pytest.mark.parametrize("page_name", sorted(EXPLORERS))
def test_kernel_free_explorer_changes_the_map_with_every_control(browser, static_server, page_name):
    size = (HTML / f"{page_name}.html").stat().st_size
    assert size < MAX_EXPLORER_BYTES + 1_500_000, f"{page_name}.html weighs {size / 1e6:.1f} MB"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = _local_only(page)
    try:
        page.goto(f"{static_server}/{page_name}.html", wait_until="load")
        grid = page.locator(".attrkit-grid").first
        grid.wait_for(timeout=15_000)
        assert grid.get_attribute("data-ready") == "1", "the explorer's script did not run"
        controls = {c.split(":")[0] for c in grid.locator("[data-control]").evaluate_all(
            "l => l.map(e => e.dataset.control)")}
        assert EXPLORERS[page_name] <= controls, controls
        assert grid.locator(".attrkit-legend").count() == 1  # the colour scale beside the map
        assert _exercise(grid) >= 8
        grid.screenshot(path=str(SHOTS / f"explorer__{page_name.split('/')[-1]}.png"))
    finally:
        page.close()
    assert not outside, outside


def test_kernel_free_explorer_works_from_file(browser):
    """Opened from the file system, without a server: the same page, the same explorer."""
    page_file = HTML / "notebooks" / "02_imagenet_penguin_swan.html"
    if not page_file.exists():
        pytest.fail("book/_build/html is missing: run `make book`")
    page = browser.new_page(viewport={"width": 900, "height": 900})
    outside = _local_only(page)
    try:
        page.goto(page_file.as_uri(), wait_until="load")
        grid = page.locator(".attrkit-grid").first
        before = _map(grid)
        grid.locator("select[data-control=method]").select_option("1")
        assert _map(grid) != before
    finally:
        page.close()
    assert not outside, outside
