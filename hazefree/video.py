"""Video dehazing as a stream (issue #26): decode -> dehaze -> encode with PyAV, stabilised in time.

:func:`dehaze_video_file` is the per-file unit (:mod:`hazefree.pipeline` runs it for video inputs,
so ``--workers`` and ``--ray`` use it unchanged); :func:`dehaze_video` is the Python API.

Streaming: one thread demuxes and decodes, the calling thread dehazes, one thread encodes and
muxes; bounded queues between them keep a few frames in memory whatever the clip's length. The
video is H.264 (libx264, ``crf``; 4:2:0, or 4:4:4 for odd sizes so that the size is kept) with
each frame's own timestamp (variable frame rates are kept), the rotation matrix and the colour
tags of the input; audio streams are copied packet for packet. The output is written to a
temporary file and renamed (:func:`hazefree.io.atomic_write`). MP4, M4V, MOV and MKV keep their
container; AVI and WebM are written as MKV (WebM cannot hold H.264, AVI cannot hold exact
timestamps).

Temporal stability (:class:`TemporalDehazer`), for methods with a transmission t and airlight A:

* A_k = m A_{k-1} + (1 - m) A_k^frame (exponential moving average, m = ``airlight_memory``);
* Guided-Pix2Pix's coarse t0 (at the working size, before the guided filter) is blended with the
  previous frame's, warped by optical flow (DIS, OpenCV): t0_k = w T(t0_{k-1}) + (1 - w) t0_k^frame,
  with w = ``t_memory`` (1 - r / ``residual``)_+ where r is the warped previous frame's grey-level
  difference from this frame: a moving object that the flow does not follow gets w = 0 (no ghost);
* both are reset at a shot cut: the total-variation distance between the colour histograms of
  consecutive frames above ``cut_threshold``.

Then t is refined by the guided filter and J recomposed at the Dehazer's strength
(:func:`hazefree.strength.recompose`). Methods without t and A (AOD-Net, ...) run frame by frame.

Errors name the file: unreadable, truncated (fewer frames than the header says, or no index),
no video stream, a codec this FFmpeg cannot decode, zero frames. A packet that cannot be decoded
in the middle of a stream is skipped and reported (as FFmpeg does) and the run goes on; frames the
decoder marks as corrupt (concealed) are kept and reported.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io.formats import _CONTAINERS, VIDEO_EXTENSIONS, is_video, video_output_extension  # noqa: F401 (re-exported)
from .io import DEFAULT_MAX_PIXELS, ImageReadError, atomic_write

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoOptions",
    "VideoResult",
    "VideoReadError",
    "TemporalDehazer",
    "is_video",
    "video_output_extension",
    "dehaze_video",
    "dehaze_video_file",
    "histogram_distance",
]

_QUEUE = 4  # frames between two stages


class VideoReadError(ImageReadError):
    """A video that cannot be read; ``str(err)`` is ``"<path>: <problem>"``."""


@dataclass(frozen=True)
class VideoOptions:
    """How videos are encoded and stabilised.

    Attributes:
        crf: x264 constant rate factor (0 lossless, 17-18 visually lossless, 23 x264's default).
        preset: x264 preset (speed against file size at the same quality).
        stabilize: smooth A and t0 over time (module docstring); False dehazes frame by frame.
        airlight_memory: m of the airlight's moving average.
        t_memory: largest weight of the warped previous t0.
        residual: grey-level difference (0-1) at which the previous t0 gets no weight.
        cut_threshold: histogram distance (0-1) above which a frame starts a new shot.
        max_pixels: refuse frames with more pixels (None: no limit).
        progress: show a frame progress bar on stderr.
    """

    crf: int = 18
    preset: str = "veryfast"
    stabilize: bool = True
    airlight_memory: float = 0.95
    t_memory: float = 0.9
    residual: float = 0.08
    cut_threshold: float = 0.3
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    progress: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        for name in ("airlight_memory", "t_memory", "cut_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.residual > 0:
            raise ValueError(f"residual must be > 0, got {self.residual}")


class VideoResult(NamedTuple):
    """What :func:`dehaze_video_file` did: frames written, packets skipped, shot cuts found,
    frame size (width, height), audio streams copied, and warnings (one line each)."""

    frames: int
    skipped: int
    cuts: int
    size: tuple[int, int]
    audio: int
    warnings: tuple[str, ...]


def histogram_distance(a: Tensor, b: Tensor, bins: int = 32) -> float:
    """Total-variation distance (0-1) between the per-channel histograms of two 1 x 3 x h x w
    images, averaged over channels: 0.5 sum |p_a - p_b|."""
    total = 0.0
    for c in range(a.shape[1]):
        pa = torch.histc(a[:, c], bins, 0.0, 1.0)
        pb = torch.histc(b[:, c], bins, 0.0, 1.0)
        total += 0.5 * (pa / pa.sum() - pb / pb.sum()).abs().sum().item()
    return total / a.shape[1]


# ------------------------------------------------------------------------------- stabilisation


class TemporalDehazer:
    """A :class:`~hazefree.api.Dehazer` applied to consecutive frames with temporal smoothing
    (module docstring). Call it with each 1 x 3 x H x W frame in order; :meth:`reset` at a cut."""

    def __init__(self, dehazer, options: VideoOptions = VideoOptions()) -> None:
        from .models import DarkChannelPrior, GuidedPix2Pix

        self.dehazer, self.options = dehazer, options
        model = dehazer.model
        self.kind = "frame"
        if options.stabilize:
            if isinstance(model, GuidedPix2Pix):
                self.kind = "gp2p"
            elif isinstance(model, DarkChannelPrior):
                self.kind = "dcp"
            elif isinstance(getattr(model, "t_min", None), float):
                self.kind = "generic"
        self.t_min = getattr(model, "t_min", None)
        self.cuts = 0
        self._flow = None
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (a new shot)."""
        self.airlight: Tensor | None = None
        self._t0: Tensor | None = None
        self._gray: np.ndarray | None = None
        self._thumb: Tensor | None = None

    def _airlight(self, a: Tensor) -> Tensor:
        m = self.options.airlight_memory
        self.airlight = a if self.airlight is None else m * self.airlight + (1.0 - m) * a
        return self.airlight

    def _finish(self, hazy: Tensor, t: Tensor, a: Tensor) -> Tensor:
        from .strength import recompose

        return recompose(hazy, t, a, self.t_min, self.dehazer.strength)

    @torch.inference_mode()
    def __call__(self, frame: Tensor) -> Tensor:
        """The dehazed frame (1 x 3 x H x W in [0, 1]) of ``frame`` (same layout)."""
        frame = frame.to(self.dehazer.device, torch.float32)
        if self.kind == "frame":
            return self.dehazer(frame).clear
        thumb = F.adaptive_avg_pool2d(frame, (36, 64))
        if self._thumb is not None and histogram_distance(thumb, self._thumb) > self.options.cut_threshold:
            self.cuts += 1
            self.reset()
        self._thumb = thumb
        model = self.dehazer.model
        if self.kind == "gp2p":
            clear = self._gp2p(model, frame)
        elif self.kind == "dcp":
            a = self._airlight(_estimate_airlight(frame, model.airlight))
            _, t = model.transmission(frame, a)
            clear = self._finish(frame, t, a)
        else:
            out = model(frame)
            clear = self._finish(frame, out.transmission, self._airlight(out.airlight))
        if not torch.isfinite(clear).all():
            raise RuntimeError(f"method {self.dehazer.method!r} produced non-finite pixels")
        post = getattr(self.dehazer, "_post", None)
        return clear if post is None else post(clear)

    def _gp2p(self, model, hazy: Tensor) -> Tensor:
        """Guided-Pix2Pix's forward (eqs. 39-42, :meth:`GuidedPix2Pix.forward`) with A averaged and
        t0 blended with the warped previous t0 before the guided filter."""
        from .ops import fast_guided_filter, guided_filter, rgb_to_gray

        low = model.working_image(hazy)
        a, t0 = model.coarse(hazy, low)
        a = self._airlight(a)
        guide_low = rgb_to_gray(low)
        t0 = self._blend_t0(guide_low, t0)
        if low is hazy:
            t = guided_filter(guide_low, t0, model.radius, model.eps)
        else:
            t = fast_guided_filter(rgb_to_gray(hazy), guide_low, t0, model.radius, model.eps)
        return self._finish(hazy, t.clamp(model.t_min, 1.0), a)

    def _blend_t0(self, gray: Tensor, t0: Tensor) -> Tensor:
        """t0 blended with the previous frame's, warped onto this frame by dense optical flow, where
        the warped previous frame matches this one (module docstring)."""
        import cv2

        g = np.ascontiguousarray((gray[0, 0].cpu().numpy() * 255.0 + 0.5).astype(np.uint8))
        if self._t0 is None or self._t0.shape != t0.shape:
            self._t0, self._gray = t0, g
            return t0
        if self._flow is None:
            self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        flow = self._flow.calc(g, self._gray, None)  # this frame's pixel x is the previous frame's x + flow
        h, w = g.shape
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        prev_t = cv2.remap(self._t0[0, 0].cpu().numpy(), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        prev_g = cv2.remap(self._gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        residual = cv2.blur(np.abs(prev_g.astype(np.float32) - g.astype(np.float32)) / 255.0, (5, 5))
        weight = self.options.t_memory * np.clip(1.0 - residual / self.options.residual, 0.0, 1.0) * inside
        weight = torch.from_numpy(weight).to(t0)[None, None]
        blended = weight * torch.from_numpy(prev_t).to(t0)[None, None] + (1.0 - weight) * t0
        self._t0, self._gray = blended, g
        return blended


def _estimate_airlight(frame: Tensor, method: str) -> Tensor:
    from .physics import estimate_airlight

    return estimate_airlight(frame, method)


# ------------------------------------------------------------------------------------ decoding


def _open_input(av, path: Path):
    try:
        container = av.open(str(path), "r")
    except av.error.FileNotFoundError:
        raise VideoReadError(path, "no such file") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoReadError(path, f"cannot read the video (truncated, damaged or not a video): {exc}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        codec = getattr(stream.codec_context, "name", None) or "unknown"
        raise VideoReadError(path, f"unsupported video codec {codec!r}: this FFmpeg build cannot decode it")
    return container, stream


def _decode(av, path: Path, container, stream, audio, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: ("video", rgb uint8 H x W x 3, frame), ("audio", packet), ("skipped", text),
    then ("end", None) or ("error", exception)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for packet in container.demux(stream, *audio):
            if stop.is_set():
                return
            if packet.stream.type == "audio":
                if packet.dts is not None and not put(("audio", packet)):
                    return
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                where = "" if packet.pts is None or packet.time_base is None else f" at {float(packet.pts * packet.time_base):.3f} s"
                if not put(("skipped", f"undecodable packet{where} skipped ({exc})")):
                    return
                continue
            for frame in frames:
                rgb = frame.to_ndarray(format="rgb24")
                if not put(("video", rgb, frame)):
                    return
        put(("end", None))
    except av.error.FFmpegError as exc:
        put(("error", VideoReadError(path, f"cannot read the video (truncated or damaged): {exc}")))
    except BaseException as exc:  # noqa: BLE001 - passed on to the calling thread
        put(("error", exc))


# ------------------------------------------------------------------------------------ encoding


def _encode(out_container, vstream, astreams: dict, items: queue.Queue, errors: list) -> None:
    """Writer thread: encodes ("video", rgb, pts) and muxes ("audio", packet) until ("end",)."""
    try:
        while True:
            item = items.get()
            if item[0] == "end":
                break
            if item[0] == "audio":
                packet = item[1]
                packet.stream = astreams[packet.stream.index]
                out_container.mux(packet)
                continue
            _, rgb, pts, time_base, colour = item
            frame = _from_rgb(rgb, vstream.codec_context.pix_fmt, colour)
            frame.pts, frame.time_base = pts, time_base
            out_container.mux(vstream.encode(frame))
        out_container.mux(vstream.encode(None))
    except BaseException as exc:  # noqa: BLE001 - passed on to the calling thread
        errors.append(exc)
        while items.get()[0] != "end":  # drain, so that the producer never blocks
            pass


def _from_rgb(rgb: np.ndarray, pix_fmt: str, colour: dict):
    import av

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(format=pix_fmt, dst_colorspace=colour["colorspace"], dst_color_range=colour["color_range"])


def _colour(frame) -> dict:
    """The matrix and range to convert back with (BT.601 limited range when the input says nothing,
    which is also what decoding to RGB assumed)."""
    import av

    cs = frame.colorspace
    rng = frame.color_range
    if int(cs) in (0, 2):  # RGB / unspecified
        cs = av.video.reformatter.Colorspace.ITU601
    if int(rng) == 0:
        rng = av.video.reformatter.ColorRange.MPEG
    return {"colorspace": cs, "color_range": rng}


# --------------------------------------------------------------------------------- the pipeline


def dehaze_video_file(
    dehazer, source, output, options: VideoOptions = VideoOptions(), warn: Callable[[str], None] | None = None
) -> VideoResult:
    """Dehaze the video ``source`` into ``output`` (written atomically) with ``dehazer``.

    Raises:
        VideoReadError: the input cannot be used (the message names the file).
        OSError: the output cannot be written (no partial file is left).
    """
    try:
        import av
    except ImportError:
        raise VideoReadError(source, "videos need PyAV: pip install 'hazefree[video]'") from None
    source, output = Path(source), Path(output)
    container, stream = _open_input(av, source)
    warnings: list[str] = []

    def note(text: str) -> None:
        warnings.append(text)
        if warn is not None:
            warn(f"{source}: {text}")

    try:
        width, height = stream.codec_context.width, stream.codec_context.height
        if options.max_pixels and width * height > options.max_pixels:
            raise VideoReadError(source, f"{width} x {height} frames are more than the limit of {options.max_pixels:,} pixels")
        audio = list(container.streams.audio)
        dropped = [s for s in container.streams if s.type not in ("video", "audio")] + list(container.streams.video[1:])
        if dropped:
            note(f"{len(dropped)} stream(s) other than the first video and the audio are not copied")
        declared = stream.frames
        muxer = _CONTAINERS.get(output.suffix.lower(), (None, "mp4"))[1]
        result: dict = {}

        def write(tmp: str) -> None:
            result.update(_stream(av, source, container, stream, audio, tmp, muxer, dehazer, options, note))

        atomic_write(output, write)
    finally:
        container.close()
    frames = result["frames"]
    if declared and frames + result["skipped"] < declared:
        # written, then removed: a truncated input gives no output (atomic: complete or nothing)
        output.unlink(missing_ok=True)
        raise VideoReadError(source, f"truncated: {frames} of the {declared} frames its header declares could be read")
    return VideoResult(frames, result["skipped"], result["cuts"], (width, height), len(audio), tuple(warnings))


def _stream(av, source, container, stream, audio, tmp, muxer, dehazer, options, note) -> dict:
    from tqdm import tqdm

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(_QUEUE)
    reader = threading.Thread(
        target=_decode, args=(av, source, container, stream, audio, decoded, stop), name="hazefree-decode", daemon=True
    )
    reader.start()
    out = None
    writer = None
    to_write: queue.Queue = queue.Queue(_QUEUE)
    errors: list = []
    frames = skipped = corrupt = 0
    temporal = TemporalDehazer(dehazer, options)
    pending_audio = []
    bar = tqdm(total=stream.frames or None, unit="frame", disable=not options.progress, dynamic_ncols=True, leave=False)
    try:
        while True:
            item = decoded.get()
            kind = item[0]
            if kind == "error":
                raise item[1]
            if kind == "end":
                break
            if kind == "skipped":
                skipped += 1
                if skipped <= 3:
                    note(item[1])
                continue
            if kind == "audio":
                if writer is None:
                    pending_audio.append(item)  # the header waits for the first frame's rotation
                else:
                    _put(to_write, item, errors)
                continue
            _, rgb, frame = item
            if out is None:
                out, vstream, astreams = _open_output(av, tmp, muxer, stream, audio, frame, options)
                colour = _colour(frame)
                writer = threading.Thread(
                    target=_encode, args=(out, vstream, astreams, to_write, errors), name="hazefree-encode", daemon=True
                )
                writer.start()
                for waiting in pending_audio:
                    _put(to_write, waiting, errors)
                pending_audio = []
            corrupt += bool(frame.is_corrupt)
            image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255.0)
            clear = temporal(image)
            levels = clear[0].permute(1, 2, 0).mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
            _put(to_write, ("video", np.ascontiguousarray(levels), frame.pts if frame.pts is not None else frames,
                            frame.time_base or stream.time_base, colour), errors)
            frames += 1
            bar.update()
        if out is None:
            raise VideoReadError(source, "no video frames: the stream is empty")
    finally:
        bar.close()
        stop.set()
        if writer is not None:
            to_write.put(("end",))
            writer.join()
        if out is not None:
            out.close()
        reader.join(timeout=10)
    if errors:
        raise errors[0]
    if skipped > 3:
        note(f"{skipped} undecodable packets skipped in all")
    if corrupt:
        note(f"{corrupt} frame(s) marked corrupt by the decoder (concealed, kept)")
    return {"frames": frames, "skipped": skipped, "cuts": temporal.cuts}


def _put(items: queue.Queue, item, errors: list) -> None:
    while True:
        if errors:
            raise errors[0]
        try:
            items.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _open_output(av, tmp: str, muxer: str, stream, audio, first, options: VideoOptions):
    """The output container with the H.264 stream (input's time base, rate, colour tags, rotation)
    and a copy of each audio stream."""
    out = av.open(tmp, "w", format=muxer)
    width, height = first.width, first.height
    rate = stream.average_rate or stream.guessed_rate or 25
    vstream = out.add_stream("libx264", rate=rate)
    vstream.width, vstream.height = width, height
    vstream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    vstream.time_base = stream.time_base
    vstream.codec_context.time_base = stream.time_base
    vstream.options = {"crf": str(options.crf), "preset": options.preset}
    colour = _colour(first)
    vstream.codec_context.colorspace = colour["colorspace"]
    vstream.codec_context.color_range = colour["color_range"]
    for name in ("color_primaries", "color_trc"):
        value = getattr(first, name, None)
        if value is not None and int(value) != 2:
            try:
                setattr(vstream.codec_context, name, value)
            except (AttributeError, TypeError, ValueError):
                pass
    rotation = first.rotation
    if rotation:
        vstream.set_display_rotation(rotation)
    astreams = {}
    for a in audio:
        astreams[a.index] = out.add_stream_from_template(a)
    return out, vstream, astreams


# ------------------------------------------------------------------------------------------ API


def dehaze_video(
    src,
    dst,
    method: str | None = None,
    strength: float = 1.0,
    airlight: str | None = None,
    crf: int = 18,
    stabilize: bool = True,
    progress: bool = False,
) -> VideoResult:
    """Dehaze the video file ``src`` into ``dst`` (a file, or an existing folder to write
    ``<name><ext>`` into) with ``method`` at ``strength`` (see :class:`hazefree.Dehazer`).

    Raises:
        VideoReadError: ``src`` cannot be used; ValueError: ``dst`` is ``src``.
    """
    from .api import Dehazer

    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        dst = dst / f"{src.stem}{video_output_extension(src) if is_video(src) else '.mp4'}"
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"refusing to overwrite the input {src}")
    dehazer = Dehazer(method, airlight, strength=strength)
    return dehaze_video_file(dehazer, src, dst, VideoOptions(crf=crf, stabilize=stabilize, progress=progress))
