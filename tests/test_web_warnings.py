"""The web page shows the pipeline's warnings about an input (here: only an animated GIF's first
frame is used) on the result's card, in a real headless browser (see test_web_browser.py)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install -e '.[web]')")
pytest.importorskip("uvicorn", reason="the web extra is not installed (pip install -e '.[web]')")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

from hazefree.web.server import ServeConfig, running  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
)


def _gif(frames: int) -> bytes:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(90, 200, (48, 64, 3), np.uint8)).convert("P") for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=frames > 1, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


def test_warnings_on_the_card():
    with running(ServeConfig()) as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.locator("#method option").first.wait_for(state="attached")
            page.select_option("#method", "dcp")
            for name, data in (("still.gif", _gif(1)), ("anim.gif", _gif(2))):
                page.set_input_files("#files", files=[{"name": name, "mimeType": "image/gif", "buffer": data}])
                card = page.locator("article.card", has=page.locator(".name", has_text=name))
                card.locator(".status", has_text="done").wait_for()
            animated = page.locator("article.card", has=page.locator(".name", has_text="anim.gif"))
            items = animated.locator(".warnings li")
            playwright.expect(items).to_have_count(1)
            assert items.inner_text() == "warning: anim.gif: GIF file with 2 frames; only the first is used"
            assert animated.locator(".warnings").is_visible()
            still = page.locator("article.card", has=page.locator(".name", has_text="still.gif"))
            assert still.locator(".warnings li").count() == 0 and not still.locator(".warnings").is_visible()
        finally:
            browser.close()
