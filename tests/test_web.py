"""``hazefree serve`` over HTTP: a real uvicorn server in a thread, spoken to with urllib.

The page itself is driven in a real browser in test_web_browser.py.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import bomb_png, truncated_png
from PIL import Image

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install -e '.[web]')")
pytest.importorskip("uvicorn", reason="the web extra is not installed (pip install -e '.[web]')")

from hazefree import cli, models  # noqa: E402
from hazefree.api import default_method  # noqa: E402
from hazefree.io import read_image  # noqa: E402
from hazefree.web.server import ServeConfig, running, safe_name  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "hazefree" / "samples"


def _post(url: str, data: bytes, method: str = "dcp", name: str = "photo.png") -> tuple[int, dict]:
    query = urllib.parse.urlencode({"method": method, "name": name})
    request = urllib.request.Request(f"{url}/api/dehaze?{query}", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _png_bytes(pixels: np.ndarray, path: Path) -> bytes:
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


def _hazy(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(110, 230, w)[None, :, None] + rng.normal(0, 12, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def server():
    config = ServeConfig(max_upload=2 * 2**20, max_pixels=20_000_000, keep_results=4)
    with running(config) as (url, srv):
        yield url, srv
    root = srv.config.app.state.workspace.root
    assert not root.exists(), "the server's temporary folder must be removed when it stops"


def _workspace(server) -> Path:
    return server[1].config.app.state.workspace.root


def test_methods_are_the_shipped_ones(server):
    status, body, _ = _get(server[0] + "/api/methods")
    info = json.loads(body)
    assert status == 200
    assert info["methods"] == models.pretrained() and "dcp" in info["methods"]
    assert info["default"] == default_method()
    assert info["max_upload"] == 2 * 2**20


def test_page_and_static_files(server):
    status, body, headers = _get(server[0] + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset.encode() in body
        assert _get(server[0] + asset)[0] == 200


def test_real_photo_default_method(server):
    sample = SAMPLES / "canyon.jpg"
    status, answer = _post(server[0], sample.read_bytes(), method="", name="canyon.jpg")
    assert status == 200, answer
    assert answer["method"] == default_method()
    assert (answer["width"], answer["height"], answer["format"]) == (450, 600, "JPEG")
    assert answer["download_name"] == "canyon_dehazed.jpg"
    # a real hazy photo: the dehazed result is measurably less hazy than its input
    assert 0 <= answer["haze_after"] < answer["haze_before"] <= 1
    status, data, headers = _get(server[0] + answer["urls"]["download"])
    assert status == 200 and "canyon_dehazed.jpg" in headers["content-disposition"]
    path = _workspace(server).parent / "check.jpg"
    try:
        path.write_bytes(data)
        result, original = read_image(path), read_image(sample)
    finally:
        path.unlink()
    assert result.format == "JPEG" and result.size == original.size
    assert (result.rgb - original.rgb).abs().mean() > 0.02
    for kind in ("before", "after", "transmission"):
        status, data, _ = _get(server[0] + answer["urls"][kind])
        assert status == 200 and len(data) > 100


def test_download_equals_the_command_line_result(server, tmp_path, capsys):
    """16-bit RGBA PNG: the page's download is the CLI's output, bit for bit in pixels."""
    rng = np.random.default_rng(3)
    pixels = np.clip(np.linspace(20000, 60000, 40)[None, :, None] + rng.normal(0, 900, (30, 40, 4)), 0, 65535)
    pixels = pixels.astype(np.uint16)
    source = tmp_path / "deep.png"
    import cv2

    cv2.imwrite(str(source), pixels[:, :, [2, 1, 0, 3]])
    status, answer = _post(server[0], source.read_bytes(), name="deep.png")
    assert status == 200, answer
    assert answer["bit_depth"] == 16 and answer["alpha"] is True and answer["format"] == "PNG"
    downloaded = tmp_path / "web" / "deep_dehazed.png"
    downloaded.parent.mkdir()
    downloaded.write_bytes(_get(server[0] + answer["urls"]["download"])[1])
    assert cli.main(["dehaze", str(source), "-o", str(tmp_path / "cli"), "--method", "dcp", "--suffix", "_dehazed"]) == 0
    capsys.readouterr()
    web, ours = read_image(downloaded), read_image(tmp_path / "cli" / "deep_dehazed.png")
    assert web.bit_depth == ours.bit_depth == 16
    assert torch_equal(web.rgb, ours.rgb) and torch_equal(web.alpha, ours.alpha)
    assert torch_equal(web.alpha, read_image(source).alpha)  # alpha passed through untouched


def torch_equal(a, b) -> bool:
    return a is not None and b is not None and bool((a == b).all())


@pytest.mark.parametrize(
    "name, data, problem",
    [
        ("empty.png", b"", "empty file"),
        ("notes.jpg", b"these are my holiday notes, not a photo\n" * 3, "not an image file"),
        ("cut.png", truncated_png(), "truncated"),
        ("bomb.png", bomb_png(60_000, 60_000), "more than the limit"),
    ],
)
def test_bad_uploads_are_named_and_the_server_goes_on(server, tmp_path, name, data, problem):
    before = set(_workspace(server).iterdir())
    status, answer = _post(server[0], data, name=name)
    assert status == 400
    assert answer["error"].startswith(f"{name}: ") and problem in answer["error"], answer
    assert set(_workspace(server).iterdir()) == before  # a failed upload leaves nothing behind
    status, answer = _post(server[0], _png_bytes(_hazy(20, 24), tmp_path / "ok.png"), name="ok.png")
    assert status == 200, answer


def test_upload_limit(server):
    status, answer = _post(server[0], b"\0" * (2 * 2**20 + 1), name="big.tif")
    assert status == 413 and "big.tif" in answer["error"] and "upload limit of 2 MB" in answer["error"]


def test_upload_limit_without_a_declared_length(server):
    """A chunked upload (no Content-Length) is cut off once it passes the limit."""
    import http.client

    host, port = server[0].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunks = (b"\0" * 2**18 for _ in range(12))  # 3 MB in 256 KB chunks
    conn.request("POST", "/api/dehaze?method=dcp&name=stream.png", body=chunks, encode_chunked=True)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 413 and answer["error"].startswith("stream.png: file is larger")


def test_unknown_method_is_refused(server, tmp_path):
    status, answer = _post(server[0], _png_bytes(_hazy(8, 8), tmp_path / "a.png"), method="../weights.pt")
    assert status == 400 and "unknown method" in answer["error"]


def test_names_cannot_leave_the_upload_folder(server, tmp_path):
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\photos\\my photo.JPG") == "my_photo.JPG"
    assert safe_name("...") == "upload" and safe_name(None) == "upload"
    status, answer = _post(server[0], _png_bytes(_hazy(16, 16), tmp_path / "a.png"), name="../../x y.png")
    assert status == 200 and answer["download_name"] == "x_y_dehazed.png"
    assert _get(server[0] + "/api/results/nope/download")[0] == 404
    token = answer["urls"]["download"].split("/")[3]
    assert _get(f"{server[0]}/api/results/{token}/..%2F..%2Fetc")[0] == 404


def test_concurrent_uploads_get_their_own_results(server, tmp_path):
    sizes = [(36, 52), (44, 28), (30, 30)]
    answers: dict[int, tuple[int, dict]] = {}

    def upload(i: int) -> None:
        h, w = sizes[i]
        data = _png_bytes(_hazy(h, w, seed=i), tmp_path / f"in{i}.png")
        answers[i] = _post(server[0], data, name="same-name.png")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    downloads = set()
    for i, (h, w) in enumerate(sizes):
        status, answer = answers[i]
        assert status == 200 and (answer["height"], answer["width"]) == (h, w)
        downloads.add(answer["urls"]["download"])
        data = _get(server[0] + answer["urls"]["download"])[1]
        path = tmp_path / f"out{i}.png"
        path.write_bytes(data)
        assert read_image(path).size == (h, w)
    assert len(downloads) == len(sizes)


def test_only_the_newest_results_are_kept(server, tmp_path):
    data = _png_bytes(_hazy(12, 12), tmp_path / "a.png")
    urls = [_post(server[0], data, name="a.png")[1]["urls"]["download"] for _ in range(6)]
    assert len(list(_workspace(server).iterdir())) <= 4  # keep_results
    assert _get(server[0] + urls[0])[0] == 404 and _get(server[0] + urls[-1])[0] == 200


def test_serve_command_errors(capsys, monkeypatch):
    assert cli.main(["serve", "--port", "70000"]) == cli.EXIT_USAGE
    assert "at most 65535" in capsys.readouterr().err
    with running() as (url, _):
        busy_port = url.rsplit(":", 1)[1]
        assert cli.main(["serve", "--port", busy_port]) == cli.EXIT_USAGE
    assert f"cannot listen on 127.0.0.1:{busy_port}" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the web extra were not installed
    assert cli.main(["serve", "--port", "0"]) == cli.EXIT_USAGE
    assert 'pip install "hazefree[web]"' in capsys.readouterr().err


def test_each_method_is_loaded_once_and_shared():
    from hazefree.web.server import _Dehazers

    cache = _Dehazers()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("dcp"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 4 and all(d is got[0] for d in got)
    assert cache.get("aod-net") is not got[0] and cache.get("aod-net") is cache.get("aod-net")
