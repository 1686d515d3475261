"""The explorer in a real JupyterLab, in headless Chromium, where learners use it.

The test starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token, a temporary root folder and settings)
with a notebook that opens the explorer on a small CNN, runs the notebook at 1280x800 with the file browser open
(the output area is then about 850 px wide), and checks that the status line is on screen without scrolling and
names the method, the class the map explains and the baseline (the map's title names the class too), that no
control overlaps the images, that every slider's read-out is visible, that dragging ``n_steps`` and switching the
method change the image, and that switching the method during a long computation ends on the new method (the old
computation is superseded, not queued).
Screenshots go to book/_build/screenshots/.
"""
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from _helpers import FINGERPRINT, new_image

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = ROOT / "book" / "_build" / "screenshots"
pytestmark = pytest.mark.browser

# a small CNN whose forward pass pauses 30 ms per image, so that 200 integration steps take seconds; one batch per
# 8 steps, so a superseded computation has a next batch to stop at
CELL = """\
import time
import torch
from attrkit.insights import _methods, explore
from attrkit.testing import TinyImageCNN

class SlowCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = TinyImageCNN().eval()
    def forward(self, x):
        time.sleep(0.03 * x.shape[0])
        return self.body(x)

_methods.BATCH_ELEMENTS = 8 * 3 * 64 * 64
image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
explorer = explore(SlowCNN().eval(), image, baselines=0.5, classes=[f"class {i}" for i in range(10)])
explorer"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a temporary folder with the explorer notebook; always stopped."""
    pytest.importorskip("jupyterlab")
    root = tmp_path_factory.mktemp("lab")
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "id": "explorer", "metadata": {},
                           "outputs": [], "source": CELL}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (root / "explorer.ipynb").write_text(json.dumps(notebook))
    port, token = _free_port(), secrets.token_urlsafe(16)
    settings = tmp_path_factory.mktemp("lab-settings")
    news = settings / "lab" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the page
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               JUPYTER_CONFIG_DIR=str(settings / "config"), JUPYTERLAB_SETTINGS_DIR=str(settings / "lab"),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"), JUPYTER_RUNTIME_DIR=str(settings / "runtime"))
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--ServerApp.open_browser=False",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.allow_root=True"]
    log_path = settings / "lab.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
        yield f"{base}/lab/tree/explorer.ipynb?token={token}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (it and its kernels) only
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


# every visible control, image and read-out of the explorer, with their boxes
BOXES = """() => {
    const box = e => { const r = e.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; };
    const shown = e => e.offsetParent !== null && e.getBoundingClientRect().width > 0;
    const root = document.querySelector('.attrkit-explorer');
    const controls = [...root.querySelectorAll('.attrkit-panel > .widget-inline-hbox, '
                                                + '.attrkit-panel > .jupyter-widgets')]
        .filter(shown).map(e => ({name: [...e.classList].find(c => c.startsWith('attrkit-')), ...box(e)}));
    const images = [...root.querySelectorAll('.attrkit-images img'), ...root.querySelectorAll('.attrkit-legend')]
        .filter(shown).map(e => ({name: e.className, ...box(e)}));
    const readouts = [...root.querySelectorAll('.widget-readout')].filter(shown).map(e => {
        e.scrollIntoView({block: 'center'});
        const r = e.getBoundingClientRect();
        const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        return {text: e.innerText, covered: !(hit && (hit === e || e.contains(hit))), ...box(e)};
    });
    const area = box(root.closest('.jp-OutputArea-output') || root);
    return {controls, images, readouts, area, browser: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)')
            && document.querySelector('.jp-FileBrowser').getBoundingClientRect().width > 0};
}"""


def _overlap(a, b) -> bool:
    return a["x"] < b["x"] + b["w"] - 1 and b["x"] < a["x"] + a["w"] - 1 and \
        a["y"] < b["y"] + b["h"] - 1 and b["y"] < a["y"] + a["h"] - 1


def check_layout(boxes: dict, width: int) -> None:
    where = f"at {width}x800, output area {boxes['area']['w']:.0f} px"
    print(where)
    assert boxes["browser"], "the file browser should be open (JupyterLab's default)"
    assert boxes["area"]["w"] < 900, f"{where}: is the file browser open?"
    assert len(boxes["images"]) >= 3 and len(boxes["controls"]) >= 5 and boxes["readouts"], boxes
    right = boxes["area"]["x"] + boxes["area"]["w"] + 1
    for control in boxes["controls"]:
        for image in boxes["images"]:
            assert not _overlap(control, image), f"{where}: {control['name']} overlaps {image['name']}: {boxes}"
        assert control["x"] + control["w"] <= right, f"{where}: cut off: {control}"
    for image in boxes["images"]:
        assert image["x"] + image["w"] <= right, f"{where}: cut off: {image}"
    for readout in boxes["readouts"]:
        assert readout["w"] > 0 and readout["text"].strip() and not readout["covered"], f"{where}: {readout}"
        assert readout["x"] + readout["w"] <= right, f"{where}: read-out cut off: {readout}"


def drag(page, handle, dx: float) -> None:
    """Drag a slider's handle ``dx`` pixels to the right with the mouse."""
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=8)
    page.mouse.up()


def _status(page) -> str:
    return page.inner_text(".attrkit-explorer .attrkit-status").replace("\xa0", " ")


# the status line's box, the viewport, the notebook's scroll position, and the class the target control shows
STATUS = """() => {
    const r = document.querySelector('.attrkit-explorer .attrkit-status').getBoundingClientRect();
    const target = document.querySelector('.attrkit-target select');
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: innerWidth, height: innerHeight,
            scrolled: document.querySelector('.jp-WindowedPanel-outer, .jp-Notebook')?.scrollTop || 0,
            target: target.options[target.selectedIndex].text,
            title: document.querySelector('.attrkit-explorer .attrkit-title').innerText};
}"""


def check_status(page) -> None:
    """The status line is inside the viewport as the cell's output first appears, and says what the map is."""
    page.wait_for_function("() => /baseline/.test(document.querySelector('.attrkit-status').innerText)",
                           timeout=60_000)
    where = page.evaluate(STATUS)
    print("status line:", where, _status(page))
    assert 0 <= where["top"] and where["bottom"] <= where["height"], f"the status line is off screen: {where}"
    assert 0 <= where["left"] and where["right"] <= where["width"], f"the status line is cut off: {where}"
    status, name = _status(page), where["target"].replace("\xa0", " ").rsplit(" (", 1)[0]
    assert status.startswith("IntegratedGradients explains ") and f"{name} (" in status, (status, name)
    assert "baseline: 0.5 everywhere" in status, status  # the cell's baselines=0.5, named
    title = where["title"].replace("\xa0", " ")
    assert name in title and "IntegratedGradients" in title, where


def test_explorer_in_jupyterlab(browser, lab):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")) else route.abort())
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(lab, wait_until="domcontentloaded", timeout=60_000)
        page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=60_000)
        # run the cell once the kernel is idle: click into it, Shift+Enter (again if it did not start)
        prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
        for attempt in range(3):
            page.wait_for_function("() => /Idle/.test(document.querySelector("
                                   "'.jp-StatusBar-Widget, #jp-main-statusbar')?.innerText || '')", timeout=90_000)
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
            page.keyboard.press("Shift+Enter")
            try:
                page.wait_for_function("p => /\\[(\\*|\\d+)\\]/.test(p.innerText)", arg=prompt.element_handle(),
                                       timeout=15_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        heatmap = page.locator(".attrkit-explorer img.attrkit-heatmap")
        heatmap.wait_for(state="attached", timeout=90_000)
        page.wait_for_function("() => (document.querySelector('img.attrkit-heatmap') || {}).naturalWidth > 0",
                               timeout=60_000)

        # 0. at 1280x800 with the file browser open, before any scrolling: the status line is on screen and names
        # the method, the class and the baseline
        check_status(page)
        page.screenshot(path=str(SHOTS / "jupyterlab_status_1280x800.png"))

        # 1. the layout with the file browser open, at 1280x800 (an ~850 px output area) and narrower (~700 px):
        # nothing overlaps, nothing is cut off, every read-out is visible
        for width in (1130, 1280):
            page.set_viewport_size({"width": width, "height": 800})
            page.wait_for_timeout(500)
            check_layout(page.evaluate(BOXES), width)
        page.locator(".attrkit-explorer").screenshot(path=str(SHOTS / "jupyterlab_explorer.png"))
        page.screenshot(path=str(SHOTS / "jupyterlab_1280x800.png"))

        # 2. drag n_steps: a new map
        first = heatmap.evaluate(FINGERPRINT)
        drag(page, page.locator(".attrkit-n_steps .noUi-handle"), 40)
        steps = int(page.inner_text(".attrkit-n_steps .widget-readout"))
        assert steps > 20, f"dragging n_steps to the right left it at {steps}"
        after_steps = new_image(heatmap, first)
        assert after_steps.split(" ")[1:] != first.split(" ")[1:], "n_steps moved, the image did not change"

        # 3. switch the method: a new map, and the status names it
        page.locator(".attrkit-method select").select_option("Saliency")
        page.wait_for_function("() => document.querySelector('.attrkit-status').innerText.startsWith('Saliency')",
                               timeout=30_000)
        after_method = new_image(heatmap, after_steps)
        assert after_method.split(" ")[1:] != after_steps.split(" ")[1:], "method switched, the image did not change"

        # 4. a long computation (200 steps, ~6 s), superseded by a method switch: the new method wins
        page.locator(".attrkit-method select").select_option("IntegratedGradients")
        handle = page.locator(".attrkit-n_steps .noUi-handle")
        handle.wait_for(state="visible", timeout=30_000)  # shown again once the kernel has seen the new method
        drag(page, handle, 1000)  # past the right end: the slider's maximum
        assert page.inner_text(".attrkit-n_steps .widget-readout").strip() == "200"
        page.wait_for_function("() => document.querySelector('.attrkit-status').innerText"
                               ".includes('computing IntegratedGradients')", timeout=30_000)
        assert page.locator(".attrkit-heatmap.attrkit-stale").count() == 1, "the old map should be dimmed"
        page.locator(".attrkit-method select").select_option("InputXGradient")
        page.wait_for_function("() => document.querySelector('.attrkit-status').innerText"
                               ".startsWith('InputXGradient')", timeout=30_000)
        final = new_image(heatmap, after_method, timeout=5)
        time.sleep(8)  # longer than the superseded computation would have taken
        assert _status(page).startswith("InputXGradient"), _status(page)
        assert heatmap.evaluate(FINGERPRINT).split(" ")[1:] == final.split(" ")[1:], "a stale map was drawn"
        assert page.locator(".attrkit-heatmap.attrkit-stale").count() == 0
        page.locator(".attrkit-explorer").screenshot(path=str(SHOTS / "jupyterlab_explorer_final.png"))
        assert not [e for e in errors if "attrkit" in e.lower()], errors
    except Exception:
        page.screenshot(path=str(SHOTS / "jupyterlab_failure.png"))
        raise
    finally:
        page.close()
