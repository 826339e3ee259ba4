"""``hazefree serve`` end to end in a real headless browser: Playwright driving Debian's chromium.

Playwright's own browser download is not used (not reachable from CI); the system's chromium is
(``apt-get install -y chromium``, done by .ci/run). With ``HAZEFREE_SCREENSHOT=<file.png>`` the
screenshot taken half-way is also written there: ``python tools/serve_screenshot.py`` makes the
README's docs/serve.png this way.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import bomb_png, truncated_png

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install -e '.[web]')")
pytest.importorskip("uvicorn", reason="the web extra is not installed (pip install -e '.[web]')")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

from hazefree.io import read_image  # noqa: E402
from hazefree.web.server import ServeConfig, running  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "hazefree" / "samples"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def page():
    with running(ServeConfig()) as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        yield page
        browser.close()


def _split_percent(card) -> float:
    clip = card.locator("img.before").evaluate("img => img.style.clipPath")
    right = float(re.match(r"inset\(0(?:px)? ([\d.]+)%", clip).group(1))
    return 100.0 - right


def test_drop_photos_compare_download_and_errors(page, tmp_path):
    methods = page.locator("#method option")
    methods.first.wait_for(state="attached")
    names = methods.evaluate_all("options => options.map(o => o.value)")
    assert {"dcp", "guided-pix2pix"} <= set(names)

    # 1. a real photo with the default method
    sample = SAMPLES / "girls.jpg"
    page.set_input_files("#files", str(sample))
    card = page.locator("article.card").first
    card.locator(".status", has_text="done").wait_for()
    assert card.locator("img.after").evaluate("img => img.complete && img.naturalWidth > 0")
    assert card.locator("img.transmission").evaluate("img => img.complete && img.naturalWidth > 0")
    facts = card.locator(".facts").inner_text()
    before, after = map(float, re.search(r"haze density ([\d.]+) before, ([\d.]+) after", facts).groups())
    assert after < before

    # the full-size download: the input's size and format, and not the input
    with page.expect_download() as info:
        card.locator("a.download").click()
    download = info.value
    assert download.suggested_filename == "girls_dehazed.jpg"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    result, original = read_image(saved), read_image(sample)
    assert result.format == "JPEG" and result.size == original.size == (763, 1180)
    assert (result.rgb - original.rgb).abs().mean() > 0.02

    # 1b. the strength slider re-renders in the page, without a new dehaze request
    posts = []
    page.on("request", lambda request: posts.append(request.url) if "/api/dehaze" in request.url else None)
    slider = card.locator("input.strength")
    assert slider.is_visible() and slider.input_value() == "1"
    mean_after = "img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; " \
        "c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0); " \
        "const d = x.getImageData(0, 0, c.width, c.height).data; let s = 0; " \
        "for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2]; return s / (d.length / 4 * 3); }"
    after_img, before_img = card.locator("img.after"), card.locator("img.before")
    at_one = after_img.evaluate(mean_after)
    slider.focus()
    for _ in range(10):  # 1 -> 1.5 by the keyboard, step 0.05
        page.keyboard.press("ArrowRight")
    playwright.expect(card.locator(".strength-value")).to_have_text("1.50")
    page.wait_for_function("img => img.src.startsWith('data:') && img.complete", arg=after_img.element_handle())
    at_more = after_img.evaluate(mean_after)
    assert at_more < at_one - 2, (at_one, at_more)  # more haze removed: darker, as on the server
    page.keyboard.press("Home")  # S = 0: the input again
    playwright.expect(card.locator(".strength-value")).to_have_text("0.00")
    page.wait_for_function("img => img.complete", arg=after_img.element_handle())
    assert abs(after_img.evaluate(mean_after) - before_img.evaluate(mean_after)) < 0.5
    with page.expect_download() as info:  # the full-size file at S = 0, recomposed by the server
        card.locator("a.download").click()
    zero = tmp_path / "zero" / info.value.suggested_filename
    info.value.save_as(zero)
    assert (read_image(zero).rgb - original.rgb).abs().mean() < 0.01
    assert posts == []  # no request reran the network
    page.keyboard.press("End")
    slider.evaluate("el => { el.value = '1'; el.dispatchEvent(new Event('input')); }")

    # 2. drag the split from the middle to about a quarter of the width
    assert _split_percent(card) == pytest.approx(50.0)
    box = card.locator(".compare").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.35, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.25, y, steps=5)
    page.mouse.up()
    assert _split_percent(card) == pytest.approx(25.0, abs=3.0)

    # 3. a text file named .jpg: a clear message on the page
    page.set_input_files("#files", files=[{"name": "notes.jpg", "mimeType": "image/jpeg",
                                           "buffer": b"shopping list: bread, milk\n"}])
    failed = page.locator("article.card.failed").first
    failed.wait_for()
    message = failed.locator(".status").inner_text()
    assert message.startswith("notes.jpg: not an image file"), message
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("HAZEFREE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["HAZEFREE_SCREENSHOT"])

    # 4. the other bad files of the command line's checks, each named with its problem
    bad = {"empty.png": (b"", "empty file"), "cut.png": (truncated_png(), "truncated"),
           "bomb.png": (bomb_png(60_000, 60_000), "more than the limit")}
    page.set_input_files("#files", files=[{"name": name, "mimeType": "image/png", "buffer": data}
                                          for name, (data, _) in bad.items()])
    expect = playwright.expect
    expect(page.locator("article.card.failed")).to_have_count(4, timeout=60_000)  # a loaded machine is slow
    for name, (_, problem) in bad.items():
        card = page.locator("article.card.failed", has=page.locator(".name", has_text=name))
        expect(card.locator(".status")).to_contain_text(f"{name}: ")
        expect(card.locator(".status")).to_contain_text(problem)

    # 5. the server goes on serving, with another method
    page.select_option("#method", "dcp")
    page.set_input_files("#files", str(SAMPLES / "canyon.jpg"))
    newest = page.locator("article.card").first
    newest.locator(".status", has_text="done").wait_for()
    assert "method dcp" in newest.locator(".facts").inner_text()
    assert page.locator("article.card").count() == 6
