"""The built book in headless Chromium: every notebook page renders its images and shows no traceback."""
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = ROOT / "book" / "_build" / "screenshots"
PAGES = ["intro", "notebooks/01_toy_model", "notebooks/02_imagenet_penguin_swan", "notebooks/03_fastai_pets",
         "gallery/index", "reference/gradient", "performance", "data_sources",
         "notebooks/04_text_sentiment", "notebooks/05_llm_prompts"]
pytestmark = pytest.mark.browser
# figures each executed notebook draws at its default parameters (plots, heat maps, fastai's views)
MIN_FIGURES = {"notebooks/01_toy_model": 2, "notebooks/02_imagenet_penguin_swan": 12,
               "notebooks/03_fastai_pets": 6, "notebooks/04_text_sentiment": 2, "notebooks/05_llm_prompts": 5}


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders(browser, static_server, page_name):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(f"{static_server}/{page_name}.html", wait_until="load")
        assert response is not None and response.ok, f"{page_name}: HTTP {response and response.status}"
        page.wait_for_load_state("networkidle", timeout=15_000)
        broken = page.eval_on_selector_all(
            "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert not broken, f"images that did not load on {page_name}: {broken}"
        text = page.inner_text("main")
        assert "Traceback (most recent call last)" not in text
        assert "Error" not in page.eval_on_selector_all(".output.traceback, .output.error", "e => e.length ? 'Error' : ''")
        if page_name.startswith("notebooks/"):
            figures = page.eval_on_selector_all(".cell_output img", "imgs => imgs.length")
            assert figures >= MIN_FIGURES[page_name], f"{page_name}: {figures} figures in cell outputs"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{page_name.replace('/', '__')}.png"), full_page=True)
    finally:
        page.close()
