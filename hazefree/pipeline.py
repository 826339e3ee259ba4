"""One image file through hazefree: read, dehaze (whole or in tiles), write.

:func:`dehaze_file` is the whole pipeline for one file, the unit that ``hazefree dehaze`` runs per
input (and that a worker process or a Ray task can run). It is split into three stages so that
:func:`run_jobs` can overlap them over a folder: :func:`load` (decode, in a thread), :func:`infer`
(the model, in the calling thread) and :func:`save` (encode and write, in threads).

Routes (chosen per file by :func:`load` from its header):

* ``whole``: the image is decoded whole (:func:`hazefree.io.read_image`), dehazed by the
  :class:`~hazefree.api.Dehazer` and written back in its format: images up to
  :data:`~hazefree.tiling.UNTILED_MAX_PIXELS` by default, or with ``tile=0``.
* ``raster``: GeoTIFFs always, and large plain TIFFs, are read and written by windows with rasterio
  (:mod:`hazefree.geotiff`): no whole copy of the image is ever in memory.
* ``array``: other large images are decoded whole as 8- or 16-bit integers (PNG, JPEG, WebP and
  BMP decoders cannot give a window) and dehazed tile by tile into an integer output, so that
  floats exist per tile only; the memory is about twice the integer image.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Union

from .io import DEFAULT_MAX_PIXELS

__all__ = ["Job", "FileOptions", "FileResult", "dehaze_file", "load", "infer", "save", "run_jobs"]


@dataclass(frozen=True)
class Job:
    """One input file and the files its result goes to (``transmission`` None: not saved)."""

    source: Path
    output: Path
    transmission: Path | None = None

    @property
    def targets(self) -> tuple[Path, ...]:
        """Every file the job writes."""
        return (self.output,) if self.transmission is None else (self.output, self.transmission)


@dataclass(frozen=True)
class FileOptions:
    """How files are read and split.

    Attributes:
        max_pixels: refuse images with more pixels (None: no limit).
        tile: tile side in pixels; 0 dehazes the image whole; None chooses from the image size
            (:func:`hazefree.tiling.auto_tile`).
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    tile: int | None = None
    video: object = None  # hazefree.video.VideoOptions for video inputs (None: its defaults)


class FileResult(NamedTuple):
    """What happened to one file: whether a transmission map was produced, whether the image was
    tiled (the tile side, 0 if whole), and warnings about the input (one line each)."""

    has_transmission: bool
    tile: int
    warnings: tuple[str, ...]


@dataclass
class Loaded:
    """Stage 1's result: the route, the tile side and, for the ``whole`` route, the decoded image."""

    route: str
    tile: int
    image: object = None  # hazefree.io.ImageData for the whole route
    warnings: list[str] = field(default_factory=list)


@dataclass
class Pending:
    """Stage 2's result: what :func:`save` still has to write (nothing for tiled routes)."""

    loaded: Loaded
    output: object = None  # DehazeOutput of the whole route
    has_transmission: bool = False


def dehaze_file(dehazer, job: Job, options: FileOptions = FileOptions()) -> FileResult:
    """Dehaze ``job.source`` into ``job.output`` (and its transmission map into ``job.transmission``).

    Raises:
        hazefree.io.ImageReadError: the input cannot be read (the message names the file).
        OSError: an output cannot be written (no partial file is left).
        ValueError: e.g. ``dehazer.post`` with a tiled image, which post-processing would need whole.
    """
    return save(job, infer(dehazer, job, load(job, options), options))


# ----------------------------------------------------------------------------------- the stages


def load(job: Job, options: FileOptions) -> Loaded:
    """Stage 1: choose the route from the header; for the ``whole`` route, decode the image."""
    from . import geotiff
    from .io import probe_image, read_image

    path = job.source
    if _is_video(path):  # a whole video is one job: decoded, dehazed and encoded by infer()
        return Loaded("video", 0)
    if geotiff.is_geotiff(path):
        with geotiff.RasterReader(path, options.max_pixels) as reader:
            size = reader.size
        return Loaded("raster", _tile_for(size, options))
    size = probe_image(path)
    tile = 0 if size is None else _tile_for(size, options)
    if tile == 0:
        loaded = Loaded("whole", 0)
        loaded.image = read_image(path, max_pixels=options.max_pixels, warn=loaded.warnings.append)
        return loaded
    route = "raster" if geotiff.is_tiff(path) and _has_rasterio() else "array"
    return Loaded(route, tile)


def infer(dehazer, job: Job, loaded: Loaded, options: FileOptions) -> Pending:
    """Stage 2: run the model. Tiled routes read, dehaze and write here, tile by tile."""
    if loaded.route == "whole":
        return Pending(loaded, dehazer(loaded.image.rgb))
    if loaded.route == "video":
        from .video import VideoOptions, dehaze_video_file

        video_options = options.video or VideoOptions(max_pixels=options.max_pixels)
        video = dehaze_video_file(dehazer, job.source, job.output, video_options, loaded.warnings.append)
        if job.transmission is not None:
            loaded.warnings.append(f"{job.source}: no transmission map is saved for videos")
        return Pending(loaded, None, video.frames > 0)
    if dehazer.post is not None and loaded.tile:
        raise ValueError(
            f"--post {dehazer.post} needs the whole image, and this one is dehazed in "
            f"tiles of {loaded.tile} pixels; use --tile 0 to dehaze it whole"
        )
    if loaded.route == "raster":
        has_t = _dehaze_raster(dehazer, job, loaded, options)
    else:
        has_t = _dehaze_array(dehazer, job, loaded, options)
    return Pending(loaded, None, has_t)


def save(job: Job, pending: Pending) -> FileResult:
    """Stage 3: write what :func:`infer` left to write; report."""
    from .io import write_image

    loaded, out = pending.loaded, pending.output
    has_t = pending.has_transmission
    if out is not None:
        image = loaded.image
        write_image(
            job.output, out.clear, alpha=image.alpha, bit_depth=image.bit_depth, gray=image.gray,
            icc_profile=image.icc_profile,
        )
        t = out.transmission
        has_t = t is not None
        if job.transmission is not None and t is not None:
            if t.shape[1] != 1:  # a per-channel transmission is saved as its mean
                t = t.mean(dim=1, keepdim=True)
            write_image(job.transmission, t, bit_depth=16, gray=True, format="PNG")
    return FileResult(has_t, loaded.tile, tuple(loaded.warnings))


def _is_video(path: Path) -> bool:
    from .video import is_video

    return is_video(path)


def _tile_for(size: tuple[int, int], options: FileOptions) -> int:
    from .tiling import auto_tile

    return auto_tile(*size) if options.tile is None else options.tile


def _has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------- tiled routes


class _TransmissionSink:
    """The transmission map of a tiled image, gathered as 16-bit levels and written as one PNG."""

    def __init__(self, path: Path | None, size: tuple[int, int]) -> None:
        import numpy as np

        self.path = path
        self.levels = None if path is None else np.zeros(size, np.uint16)
        self.seen = False

    def write(self, window, t) -> None:
        from .io import quantize

        if t is None:
            return
        self.seen = True
        if self.levels is not None:
            t = t.mean(dim=1) if t.shape[1] != 1 else t[:, 0]
            rows, cols = slice(window.top, window.top + window.height), slice(window.left, window.left + window.width)
            self.levels[rows, cols] = quantize(t[0].numpy(), 16)

    def close(self) -> None:
        from .io import write_pixels

        if self.levels is not None and self.seen:
            write_pixels(self.path, self.levels[:, :, None], format="PNG")


def _tiler(dehazer, size: tuple[int, int], preview):
    from .tiling import TiledDehazer

    return TiledDehazer(dehazer.model, size, preview.to(dehazer.device), getattr(dehazer, "strength", 1.0))


def _run(dehazer, tiler, read, write, tile: int, size: tuple[int, int]) -> None:
    """Whole (tile 0: one call of the Dehazer, with its post-processing) or tile by tile; results
    reach ``write`` on the CPU."""
    from .tiling import TileResult, Window, run_tiles

    def to_cpu(window, result) -> None:
        t = result.transmission
        write(window, TileResult(result.clear.cpu(), None if t is None else t.cpu()))

    if tile == 0:
        window = Window(0, 0, *size)
        to_cpu(window, dehazer(read(window)))
    else:
        run_tiles(tiler, lambda window: read(window).to(dehazer.device), to_cpu, tile)


def _dehaze_raster(dehazer, job: Job, loaded: Loaded, options: FileOptions) -> bool:
    from .geotiff import RasterReader, RasterWriter
    from .io import atomic_write
    from .tiling import block_mean_preview, preview_factor

    with RasterReader(job.source, options.max_pixels) as reader:
        size = reader.size
        tiler = None
        if loaded.tile:
            preview = block_mean_preview(reader.read_array, *size, preview_factor(*size))
            tiler = _tiler(dehazer, size, preview)
        transmission = _TransmissionSink(job.transmission, size)

        def write_all(tmp: str) -> None:
            with RasterWriter(Path(tmp), reader) as writer:
                def write(window, result):
                    writer.write(window, result)
                    transmission.write(window, result.transmission)

                _run(dehazer, tiler, reader.read, write, loaded.tile, size)

        atomic_write(job.output, write_all)
    transmission.close()
    return transmission.seen


def _dehaze_array(dehazer, job: Job, loaded: Loaded, options: FileOptions) -> bool:
    import numpy as np
    import torch

    from .io import quantize, read_pixels, write_pixels
    from .ops import rgb_to_gray
    from .tiling import block_mean_preview, preview_factor

    raw = read_pixels(job.source, options.max_pixels, warn=loaded.warnings.append)
    pixels = raw.pixels
    colour = 1 if raw.gray else 3
    scale = np.float32(1.0 / (65535.0 if raw.bit_depth == 16 else 255.0))
    size = pixels.shape[:2]

    def read_array(window):
        block = pixels[window.top : window.top + window.height, window.left : window.left + window.width, :colour]
        values = block.astype(np.float32) * scale
        return np.repeat(values, 3, axis=2) if raw.gray else values

    def read(window):
        return torch.from_numpy(read_array(window)).permute(2, 0, 1)[None]

    out = np.empty_like(pixels)
    out[:, :, colour:] = pixels[:, :, colour:]  # alpha passes through exactly
    transmission = _TransmissionSink(job.transmission, size)

    def write(window, result):
        clear = rgb_to_gray(result.clear) if raw.gray else result.clear
        rows, cols = slice(window.top, window.top + window.height), slice(window.left, window.left + window.width)
        out[rows, cols, :colour] = quantize(clear[0].permute(1, 2, 0).numpy(), raw.bit_depth)
        transmission.write(window, result.transmission)

    preview = block_mean_preview(read_array, *size, preview_factor(*size))
    _run(dehazer, _tiler(dehazer, size, preview), read, write, loaded.tile, size)
    icc = raw.icc_profile
    raw = pixels = preview = None  # free the input (also for read_array) before the encoder copies `out`
    write_pixels(job.output, out, icc_profile=icc)
    transmission.close()
    return transmission.seen


# ------------------------------------------------------------------------------------- folders


Outcome = Union[FileResult, Exception]


def run_jobs(
    dehazer, jobs: Iterable[Job], options: FileOptions = FileOptions(), workers: int = 1
) -> Iterator[tuple[Job, Outcome]]:
    """Dehaze ``jobs`` in order, yielding ``(job, FileResult or the exception)`` per job.

    With ``workers`` > 1, decoding (one thread: reads share a lock in :mod:`hazefree.io`), the
    model (this thread) and encoding (``workers`` threads) overlap: up to ``workers`` images are
    decoded ahead and up to ``workers`` wait to be written. The results are those of
    :func:`dehaze_file`, byte for byte.
    """
    if workers <= 1:
        for job in jobs:
            try:
                yield job, dehaze_file(dehazer, job, options)
            except Exception as exc:  # one file's failure is reported and the batch goes on
                yield job, exc
        return
    todo = iter(jobs)
    with ThreadPoolExecutor(1, thread_name_prefix="hazefree-read") as readers, ThreadPoolExecutor(
        workers, thread_name_prefix="hazefree-write"
    ) as writers:
        reads: deque[tuple[Job, Future]] = deque()
        writes: deque[tuple[Job, Union[Future, Exception]]] = deque()

        def read_ahead() -> None:
            while len(reads) < workers:
                job = next(todo, None)
                if job is None:
                    return
                reads.append((job, readers.submit(load, job, options)))

        read_ahead()
        while reads:
            job, loading = reads.popleft()
            read_ahead()
            try:
                pending = infer(dehazer, job, loading.result(), options)
                writes.append((job, writers.submit(save, job, pending)))
            except Exception as exc:
                writes.append((job, exc))
            while writes and (len(writes) > workers or _settled(writes[0][1])):
                yield _outcome(*writes.popleft())
        while writes:
            yield _outcome(*writes.popleft())


def _settled(item: Union[Future, Exception]) -> bool:
    return isinstance(item, Exception) or item.done()


def _outcome(job: Job, item: Union[Future, Exception]) -> tuple[Job, Outcome]:
    if isinstance(item, Exception):
        return job, item
    try:
        return job, item.result()
    except Exception as exc:
        return job, exc
