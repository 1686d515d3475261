"""The explorer as a web app (Voilà) in headless Chromium: moving ``n_steps`` and switching the method redraw
the attribution image. The page may only load from 127.0.0.1: the app must work offline."""
import pathlib

import pytest
import torch

from attrkit.insights import AttributionVisualizer, Batch, ImageFeature
from attrkit.testing import TinyImageCNN

from _helpers import FINGERPRINT, new_image

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOT = ROOT / "book" / "_build" / "screenshots" / "insights_app.png"
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app():
    """A visualizer over four 32x32 images and a tiny CNN, served on 127.0.0.1; always stopped."""
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    vis = AttributionVisualizer(TinyImageCNN().eval(), [f"class {i}" for i in range(10)],
                                [ImageFeature("Photo", [lambda x: x * 0 + 0.5], [])],  # grey: IG depends on n_steps
                                [Batch(images, torch.tensor([0, 1, 2, 3]))], score_func=lambda o: o.softmax(-1))
    server = vis.serve(timeout=60)
    try:
        yield server
    finally:
        server.stop()
    assert not server.running()


def test_controls_redraw_the_attribution(browser, app):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def local_only(route):  # anything not from the app (e.g. a CDN) is refused: it must work offline
        if route.request.url.startswith("http://127.0.0.1:") or route.request.url.startswith(("data:", "blob:")):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    page.route("**/*", local_only)
    try:
        page.goto(app.url, wait_until="load", timeout=60_000)
        heatmap = page.locator("img.attrkit-heatmap")
        heatmap.wait_for(state="visible", timeout=60_000)
        page.wait_for_function("() => document.querySelector('img.attrkit-heatmap').naturalWidth > 0",
                               timeout=30_000)
        first = heatmap.evaluate(FINGERPRINT)

        # the slider by keyboard: focus its handle, press the arrow keys
        page.locator(".attrkit-n_steps .noUi-handle").focus()
        for _ in range(18):  # 20 -> 2 steps: a visibly different map (17 and 20 steps can draw the same bytes)
            page.keyboard.press("ArrowLeft")
        after_steps = new_image(heatmap, first)
        page.wait_for_function("() => document.querySelector('.attrkit-status').innerText.includes('Integrated')",
                               timeout=30_000)
        assert after_steps.split(" ")[1:] != first.split(" ")[1:], "n_steps moved, the image bytes did not change"

        page.locator(".attrkit-method select").select_option("Saliency")
        page.wait_for_function("() => document.querySelector('.attrkit-status').innerText.startsWith('Saliency')",
                               timeout=30_000)
        after_method = new_image(heatmap, after_steps)
        assert after_method.split(" ")[1:] != after_steps.split(" ")[1:], "method switched, the image did not change"
        assert page.locator(".attrkit-n_steps").is_hidden(), "n_steps is not used by Saliency and should be hidden"

        text = page.inner_text("body")
        assert "Traceback" not in text and "Error" not in text
        assert not errors, errors
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOT), full_page=True)
    finally:
        page.close()
    # nothing from outside: widget code and icon styles come from the app itself
    assert not outside, outside


@pytest.mark.slow
def test_example_app_explains_the_penguin(browser):
    """``python -m attrkit.insights.example``'s app: the ImageNet classifier on the bundled photos."""
    pytest.importorskip("attrkit.models")
    from attrkit import assets
    from attrkit.insights.example import build

    try:
        assets.path("penguin"), assets.path("swan")
    except assets.AssetError as e:
        pytest.skip(f"photos not available offline: {e}")
    server = build().serve(timeout=60)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(server.url, wait_until="load", timeout=120_000)
        page.wait_for_function("() => (document.querySelector('img.attrkit-heatmap') || {}).naturalWidth > 0",
                               timeout=120_000)
        chosen = page.locator(".attrkit-target select").evaluate("s => s.options[s.selectedIndex].text")
        assert chosen.replace("\xa0", " ").startswith("king penguin (")  # the top prediction is the target
        assert "Traceback" not in page.inner_text("body")
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOT.with_name("insights_example.png")), full_page=True)
    finally:
        page.close()
        server.stop()
    assert not server.running()
