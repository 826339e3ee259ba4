"""``hazefree serve``: a local web page that dehazes dropped photos (FastAPI on uvicorn).

The page (plain HTML/JS/CSS in ``static/``, no build step) posts each photo as the raw request
body to ``POST /api/dehaze?method=M&name=N``. The server runs exactly the command line's path for
one file (:func:`hazefree.pipeline.dehaze_file`: :func:`hazefree.io.read_image` with its checks, the
method, :func:`hazefree.io.write_image` keeping format, size, bit depth, gray and alpha), then
answers with the haze density (:func:`hazefree.evaluation.haze_density`) of the input and of the
written result, and links to 8-bit previews (before, after, transmission) and to the full-size
result. A file that cannot be used is answered with ``{"error": "<name>: <problem>"}`` and the
server goes on serving.

Files: everything is written under one temporary folder, created when the app starts and
removed when it stops; each upload gets its own sub-folder named by a random token, so
concurrent requests never share a file, and only the newest ``keep_results`` results are kept.
Models are loaded once, on first use, under a lock, and reused by every request; dehazing runs
in worker threads, at most ``workers`` at a time (each already uses every torch thread).

The FastAPI and uvicorn imports are deferred to :func:`create_app` and :func:`serve`, so that
importing this module needs neither (install them with ``pip install "hazefree[web]"``).
"""

import atexit
import contextlib
import json
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import DEFAULT_MAX_PIXELS

__all__ = ["ServeConfig", "create_app", "serve", "running", "WebDependencyError"]

STATIC = Path(__file__).resolve().parent / "static"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class WebDependencyError(ImportError):
    """FastAPI or uvicorn is not installed."""


@dataclass(frozen=True)
class ServeConfig:
    """Limits of the web page.

    Attributes:
        max_upload: largest accepted upload in bytes (HTTP 413 above it).
        max_pixels: refuse images with more pixels, checked from the header as by the CLI
            (``--max-pixels``); 0 or None: no limit.
        preview_side: long side of the previews shown on the page (the download is full size).
        keep_results: results kept for download; older ones are deleted.
        workers: uploads dehazed at the same time.
    """

    max_upload: int = 50 * 2**20
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    preview_side: int = 1600
    keep_results: int = 32
    workers: int = 1

    def __post_init__(self) -> None:
        if self.max_upload < 1:
            raise ValueError(f"max_upload must be at least 1 byte, got {self.max_upload}")
        if self.preview_side < 16 or self.keep_results < 1 or self.workers < 1:
            raise ValueError("preview_side must be >= 16, keep_results and workers >= 1")


class UploadError(ValueError):
    """An upload that cannot be dehazed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Dehazers:
    """Each method loaded once, on first use, and shared by all requests (loading is locked)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}

    def get(self, method: str):
        from ..frontend import load_dehazer

        with self._lock:
            if method not in self._loaded:
                self._loaded[method] = load_dehazer(method, None)
            return self._loaded[method]


@dataclass(frozen=True)
class _Result:
    folder: Path
    files: dict[str, tuple[Path, str | None]]  # kind -> (file, download name or None)


class _Workspace:
    """The server's temporary folder: one sub-folder per upload, the newest results kept."""

    def __init__(self, keep: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hazefree-serve-"))
        self._keep = keep
        self._lock = threading.Lock()
        self._results: OrderedDict[str, _Result] = OrderedDict()
        atexit.register(self.remove)  # also when the server dies without a clean shutdown

    def new_folder(self) -> tuple[str, Path]:
        token = secrets.token_urlsafe(16)
        folder = self.root / token
        folder.mkdir()
        return token, folder

    def publish(self, token: str, result: _Result) -> None:
        with self._lock:
            self._results[token] = result
            while len(self._results) > self._keep:
                _, old = self._results.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)

    def lookup(self, token: str, kind: str) -> tuple[Path, str | None] | None:
        with self._lock:
            result = self._results.get(token)
            return None if result is None else result.files.get(kind)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def safe_name(name: str | None) -> str:
    """A file name for an upload: the last path component, other characters than letters, digits,
    '.', '_' and '-' replaced, at most 100 characters; "upload" when nothing is left."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _SAFE_NAME.sub("_", base).lstrip(".")[-100:]
    return cleaned or "upload"


def _preview(x, side: int):
    """``x`` (1 x C x H x W) reduced by area averaging to a long side of at most ``side``."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    s = side / max(h, w)
    return F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")


def dehaze_upload(folder: Path, name: str, method: str, dehazer, config: ServeConfig) -> dict:
    """Dehaze ``folder/in/<name>`` as ``hazefree dehaze`` does and prepare what the page shows.

    Returns the JSON fields of the answer and, under ``"files"``, the files to serve by kind.
    Raises :class:`UploadError` with a one-line message naming the upload.
    """
    from ..frontend import message
    from ..pipeline import FileOptions, Job, dehaze_file
    from ..evaluation import haze_density
    from ..io import ImageReadError, output_path_for, read_image, transmission_path_for, write_image
    from ..strength import AirlightRecorder, StrengthError, strength_t_min

    source = folder / "in" / name
    output = output_path_for(source, source.parent, folder / "out", "_dehazed")
    job = Job(source, output, transmission_path_for(output))
    recorder = AirlightRecorder(dehazer)  # A, for the strength slider (hazefree.strength)
    try:
        # The command line's own path for one file: same checks, same writing.
        result = dehaze_file(recorder, job, FileOptions(max_pixels=config.max_pixels or None))
        has_t = result.has_transmission
        # the input again, for the previews: its warnings are the pipeline's, already in `result`
        before = read_image(source, max_pixels=None, warn=lambda _text: None)
        after = read_image(output, max_pixels=None)
    except ImageReadError as exc:
        raise UploadError(f"{name}: {exc.problem}") from None
    except MemoryError:
        raise UploadError(f"{name}: not enough memory", 500) from None
    except ValueError as exc:  # e.g. a PNG with alpha named .jpg: JPEG cannot store the alpha
        raise UploadError(f"{name}: {message(exc)}") from None
    except (RuntimeError, OSError) as exc:
        raise UploadError(f"{name}: {message(exc)}", 500) from None

    # Previews for the browser (8-bit, PNG when there is alpha, else JPEG), all the same size.
    ext = ".png" if before.alpha is not None else ".jpg"
    files: dict[str, tuple[Path, str | None]] = {"download": (output, output.name)}
    for kind, image in (("before", before), ("after", after)):
        alpha = None if image.alpha is None else _preview(image.alpha, config.preview_side)
        path = folder / "preview" / f"{kind}{ext}"
        write_image(path, _preview(image.rgb, config.preview_side), alpha=alpha)
        files[kind] = (path, None)
    if has_t:
        t = read_image(job.transmission, max_pixels=None).rgb[:, :1]
        path = folder / "preview" / "transmission.png"
        write_image(path, _preview(t, config.preview_side), gray=True)
        files["transmission"] = (path, None)
    # What the page needs to recompose the result at another strength without the model: the
    # airlight and t_min, when the method has t and A (a tiled upload records no A: no slider).
    strength = None
    if has_t and recorder.airlight is not None:
        try:
            strength = {"airlight": recorder.airlight.flatten().tolist(), "t_min": strength_t_min(dehazer.model, method)}
            (folder / "strength.json").write_text(json.dumps(strength))
            for kind, path in (("source", source), ("t16", job.transmission), ("strength", folder / "strength.json")):
                files[kind] = (path, None)
        except StrengthError:
            pass
    height, width = before.size
    return {
        "name": name,
        "method": dehazer.method,
        "width": width,
        "height": height,
        "format": before.format,
        "bit_depth": before.bit_depth,
        "alpha": before.alpha is not None,
        "haze_before": round(haze_density(before.rgb).item(), 4),
        "haze_after": round(haze_density(after.rgb).item(), 4),
        "download_name": output.name,
        # the pipeline's warnings about the input (e.g. only a GIF's first frame used), naming the
        # upload rather than the server's temporary copy
        "warnings": [text.replace(str(source), name) for text in result.warnings],
        "strength": strength,
        "files": files,
    }


def create_app(config: ServeConfig | None = None):
    """The FastAPI application of ``hazefree serve`` (its temporary folder lives as long as it runs)."""
    # No `from __future__ import annotations` in this module: FastAPI reads the endpoints'
    # annotations (Request) at run time, and these names exist only inside this function.
    try:
        from contextlib import asynccontextmanager

        from fastapi import FastAPI, Request
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import FileResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
    except ImportError as exc:
        raise WebDependencyError(
            f"hazefree serve needs FastAPI and uvicorn ({exc.name} is missing): pip install \"hazefree[web]\""
        ) from None

    from .. import models
    from ..api import default_method

    config = config or ServeConfig()
    methods = models.pretrained()
    dehazers = _Dehazers()
    busy = threading.BoundedSemaphore(config.workers)
    state: dict[str, _Workspace] = {}

    @asynccontextmanager
    async def lifespan(app):
        state["workspace"] = app.state.workspace = _Workspace(config.keep_results)
        try:
            yield
        finally:
            state.pop("workspace").remove()

    app = FastAPI(title="hazefree", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/methods")
    def list_methods():
        return {"methods": methods, "default": default_method(), "max_upload": config.max_upload}

    @app.post("/api/dehaze")
    async def dehaze(request: Request, method: str = "", name: str = ""):
        shown = safe_name(name)
        method = method or default_method()
        if method not in methods:
            return error(f"unknown method {method!r}; choose one of {', '.join(methods)}")
        too_large = f"{shown}: file is larger than the upload limit of {_size(config.max_upload)}"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_upload:
            await _discard(request.stream())
            return error(too_large, 413)
        workspace = state["workspace"]
        token, folder = workspace.new_folder()
        try:
            (folder / "in").mkdir()
            received = 0
            chunks = request.stream()
            with open(folder / "in" / shown, "wb") as f:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > config.max_upload:
                        await _discard(chunks)
                        raise UploadError(too_large, 413)
                    f.write(chunk)
            dehazer = await run_in_threadpool(dehazers.get, method)

            def work() -> dict:
                with busy:
                    return dehaze_upload(folder, shown, method, dehazer, config)

            answer = await run_in_threadpool(work)
        except UploadError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            return error(str(exc), exc.status)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        files = answer.pop("files")
        workspace.publish(token, _Result(folder, files))
        answer["urls"] = {kind: f"/api/results/{token}/{kind}" for kind in files}
        return answer

    @app.get("/api/results/{token}/{kind}")
    def result_file(token: str, kind: str, strength: float = 1.0):
        workspace = state["workspace"]
        found = workspace.lookup(token, kind)
        if found is None:
            return error("no such result (results are kept only while the server runs)", 404)
        path, download = found
        if kind == "download" and strength != 1.0:  # recomposed from the saved t and A, no model run
            try:
                path = recompose_download(workspace, token, path, strength)
            except ValueError as exc:
                return error(str(exc))
        if download is None:
            return FileResponse(path, headers={"Cache-Control": "no-store"})
        return FileResponse(path, filename=download)

    return app


def recompose_download(workspace: "_Workspace", token: str, output: Path, strength: float) -> Path:
    """The full-size result of upload ``token`` at ``strength`` (:func:`hazefree.strength.recompose_file`
    from its input, its 16-bit transmission and the airlight the page was given); ValueError if the
    result cannot take a strength."""
    from ..strength import check_strength, recompose_file

    strength = check_strength(strength)
    source, t16 = workspace.lookup(token, "source"), workspace.lookup(token, "t16")
    info = workspace.lookup(token, "strength")
    if source is None or t16 is None or info is None:
        raise ValueError(f"{output.name}: this method cannot take a strength")
    import torch

    target = output.parent / f"strength-{strength:g}" / output.name
    if not target.exists():
        recompose = json.loads(info[0].read_text())
        recompose_file(source[0], t16[0], torch.tensor(recompose["airlight"]), recompose["t_min"], strength, target)
    return target


async def _discard(chunks) -> None:
    """Read the rest of a refused upload without keeping it: a client still sending its body
    when the server answers and closes would see a reset connection instead of the message."""
    async for _ in chunks:
        pass


def _size(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n:,} bytes"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); OSError if it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(sock: socket.socket, config: ServeConfig | None = None, log_level: str = "warning"):
    """A ``uvicorn.Server`` for :func:`create_app` on an already bound socket (call ``.run(sockets=[sock])``)."""
    try:
        import uvicorn
    except ImportError:
        raise WebDependencyError("hazefree serve needs uvicorn: pip install \"hazefree[web]\"") from None
    app = create_app(config)
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))


def serve(host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None) -> None:
    """Serve the page on ``host:port`` until interrupted (Ctrl+C)."""
    sock = listen(host, port)
    try:
        server = make_server(sock, config)
        shown_host = f"[{host}]" if ":" in host else host
        print(f"hazefree serve: http://{shown_host}:{sock.getsockname()[1]}/  (Ctrl+C to stop)", flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def running(config: ServeConfig | None = None, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0):
    """Run the server in a background thread for the ``with`` block; yields ``(base_url, server)``.

    For tests and scripts (the page's screenshot): the server listens before the block starts and
    has stopped, with its temporary folder removed, when the block ends.
    """
    sock = listen(host, port)
    try:
        server = make_server(sock, config)
    except BaseException:
        sock.close()
        raise
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hazefree-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("hazefree serve did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
