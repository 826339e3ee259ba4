"""Videos (issue #26): hazefree dehaze clip.mp4, streaming, timestamps, audio, errors, flicker."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]')")

from hazefree import Dehazer, cli  # noqa: E402
from hazefree.flicker import frame_flicker, make_pan, pan_flicker  # noqa: E402
from hazefree.physics import add_haze  # noqa: E402
from hazefree.video import TemporalDehazer, VideoOptions, dehaze_video, dehaze_video_file  # noqa: E402


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A hazy H x W x 3 uint8 scene: texture behind haze that thickens to the right (hazefree.physics)."""
    g = torch.Generator().manual_seed(seed)
    clear = torch.nn.functional.interpolate(torch.rand(1, 3, h // 16, w // 16, generator=g), size=(h, w), mode="bicubic")
    clear = (clear + 0.1 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)
    t = torch.linspace(0.85, 0.3, w).view(1, 1, 1, w).expand(1, 1, h, w)
    hazy = add_haze(clear, t, torch.tensor([0.8, 0.82, 0.85]))
    return (hazy[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def make_clip(path: Path, n: int = 20, w: int = 96, h: int = 64, vfr: bool = False, rotate: int = 0,
              audio: bool = True, fmt: str | None = None) -> Path:
    """H.264 frames of a panning hazy scene (ms timestamps; every other frame 80 ms apart with
    ``vfr``), AAC audio, an optional display rotation."""
    scene = _scene(h, w + 2 * n)
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        if rotate:
            vs.set_display_rotation(rotate)
        a = out.add_stream("aac", rate=48000) if audio else None
        if a is not None:
            a.layout = "mono"
        t = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[:, 2 * i : 2 * i + w]), format="rgb24")
            frame.pts = t
            t += 80 if vfr and i % 2 else 40
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if a is not None:
            samples = n * 40 * 48
            for start in range(0, samples, 1024):
                m = min(1024, samples - start)
                wave = (0.3 * np.sin(np.arange(start, start + m) * 0.05))[None].astype(np.float32)
                af = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, start
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        rate, codec = v.average_rate, v.codec_context.name  # PyAV >= 18.1 refuses a closed container's streams
        audio = [bytes(p) for s in c.streams.audio for p in c.demux(s) if p.size]
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return {
            "pts": [float(f.pts * f.time_base) for f in frames], "size": (frames[0].width, frames[0].height),
            "rotation": frames[0].rotation, "rate": rate, "audio": audio, "codec": codec,
            "rgb": [f.to_ndarray(format="rgb24") for f in frames],
        }


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "cfr": make_clip(root / "cfr.mp4"),
        "vfr": make_clip(root / "vfr.mov", vfr=True, rotate=90),
        "mkv": make_clip(root / "clip.webm.mkv", fmt="matroska"),
    }


def test_cli_keeps_frames_timestamps_size_rotation_and_audio(capsys, clips, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clips["cfr"].read_bytes())
    (folder / "b.mov").write_bytes(clips["vfr"].read_bytes())
    Image.fromarray(_scene(40, 48)).save(folder / "photo.png")
    code = cli.main(["dehaze", str(folder), "-o", str(tmp_path / "out"), "--method", "dcp", "--crf", "20"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (tmp_path / "out" / "photo.png").is_file()  # a folder mixing photos and videos
    for name, source in (("a.mp4", clips["cfr"]), ("b.mov", clips["vfr"])):
        got, want = _probe(tmp_path / "out" / name), _probe(source)
        assert got["codec"] == "h264"
        assert len(got["pts"]) == len(want["pts"]) == 20
        assert got["pts"] == pytest.approx(want["pts"], abs=1e-3)  # variable frame rate kept
        assert got["size"] == want["size"] and got["rotation"] == want["rotation"]
        assert got["audio"] == want["audio"] and len(got["audio"]) > 10  # copied packet for packet
        diff = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(got["rgb"], want["rgb"])])
        assert diff > 5  # dehazed
    assert _probe(tmp_path / "out" / "b.mov")["rotation"] == 90


def test_strength_zero_returns_the_frames(clips, tmp_path):
    out = dehaze_video(clips["cfr"], tmp_path, method="dcp", strength=0.0, crf=0)
    assert out.frames == 20 and out.audio == 1 and out.size == (96, 64)
    got, want = _probe(tmp_path / "cfr.mp4")["rgb"], _probe(clips["cfr"])["rgb"]
    # the reference: what swscale's RGB -> YUV 4:2:0 -> RGB alone loses on these frames (about
    # 1.3 grey levels on this noisy scene, mostly 1 level low); S = 0 must add nothing to it
    roundtrip = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
                 for f in want]
    floor = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(roundtrip, want)])
    assert np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(got, want)]) < floor + 0.1


def test_webm_and_avi_are_written_as_mkv(capsys, clips, tmp_path):
    source = tmp_path / "clip.webm"
    source.write_bytes(clips["mkv"].read_bytes())  # H.264 in Matroska named .webm: read by content
    assert cli.main(["dehaze", str(source), "-o", str(tmp_path / "out"), "--method", "dcp"]) == 0
    assert len(_probe(tmp_path / "out" / "clip.mkv")["pts"]) == 20


@pytest.mark.parametrize("method", ["dcp", "guided-pix2pix"])
def test_first_frame_is_the_dehazer_s_own_result(method):
    frame = torch.from_numpy(_scene(64, 96)).permute(2, 0, 1)[None].float() / 255
    dehazer = Dehazer(method)
    got = TemporalDehazer(dehazer)(frame)
    torch.testing.assert_close(got, dehazer(frame).clear, rtol=0, atol=1e-5)


def test_cut_resets_and_strength_applies():
    dehazer = Dehazer("dcp", strength=1.5)
    temporal = TemporalDehazer(dehazer)
    a = torch.from_numpy(_scene(64, 96, seed=1)).permute(2, 0, 1)[None].float() / 255
    b = 1.0 - a  # another shot: every histogram moves
    temporal(a)
    assert temporal.cuts == 0
    got = temporal(b)
    assert temporal.cuts == 1
    torch.testing.assert_close(got, dehazer(b).clear, rtol=0, atol=1e-5)  # no memory of shot a


def test_errors_name_the_file(capsys, clips, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clips["cfr"].read_bytes()[: clips["cfr"].stat().st_size // 2])
    empty = tmp_path / "empty.mkv"
    with av.open(str(empty), "w") as out:  # a video stream without a single frame, beside audio
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "mono"
        for start in range(0, 48000, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, start
            out.mux(a.encode(af))
        out.mux(a.encode(None))
    text = tmp_path / "notes.mkv"
    text.write_text("not a video")
    out_dir = tmp_path / "out"
    for path, problem in ((cut, "truncated"), (empty, "no video frames"), (text, "cannot read the video")):
        code = cli.main(["dehaze", str(path), "-o", str(out_dir), "--method", "dcp"])
        err = capsys.readouterr().err
        assert code == 1 and f"{path}: " in err and problem in err and "Traceback" not in err, err
        assert not out_dir.exists() or not any(out_dir.iterdir())  # no partial output


def test_memory_does_not_grow_with_the_clip(tmp_path):
    """Peak RSS for 40 and 400 frames of the same clip, each in a fresh process."""
    script = (
        "import resource, sys\n"
        "from hazefree.video import dehaze_video\n"
        "dehaze_video(sys.argv[1], sys.argv[2], method='dcp')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    peaks = []
    for n in (40, 400):
        clip = make_clip(tmp_path / f"long{n}.mp4", n=n, w=64, h=48, audio=True)
        run = subprocess.run([sys.executable, "-c", script, str(clip), str(tmp_path / f"o{n}.mp4")],
                             capture_output=True, text=True, check=True)
        peaks.append(int(run.stdout.split()[-1]) / 1024)  # MB
        assert len(_probe(tmp_path / f"o{n}.mp4")["pts"]) == n
    assert peaks[1] - peaks[0] < 15, peaks


def test_stabilised_pan_flickers_less(tmp_path):
    """The flicker measure (hazefree.flicker) on a small self-made pan: stabilised DCP and default
    flicker less than frame by frame."""
    scene = _scene(180, 320 + 4 * 11, seed=5)
    pan = make_pan(scene, tmp_path / "pan.mp4", (320, 180), 12, 4)
    floor = pan_flicker(pan, 4)
    assert floor.local < 0.05 and floor.pairs == 11  # a lossless pan: the overlap repeats exactly
    results = {}
    for method in ("dcp", "guided-pix2pix"):
        for stabilize in (False, True):
            out = tmp_path / f"{method}-{stabilize}.mp4"
            dehaze_video_file(Dehazer(method), pan, out, VideoOptions(crf=0, stabilize=stabilize))
            results[method, stabilize] = pan_flicker(out, 4)
    # measured: default 2.25 / 2.37 frame by frame, 0.74 / 0.72 stabilised; DCP 0.20 / 0.19 both
    # (this scene's airlight does not move)
    stable, single = results["guided-pix2pix", True], results["guided-pix2pix", False]
    assert stable.global_ <= 0.5 * single.global_ and stable.local <= 0.5 * single.local, results
    assert results["dcp", True].global_ <= min(0.3, results["dcp", False].global_ + 0.02), results
    assert results["dcp", True].local <= results["dcp", False].local + 0.02, results


def test_frame_flicker_against_a_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    b = np.roll(a, -2, axis=1)
    b[:, -2:] = 0
    assert frame_flicker(a, b, 2) == (0.0, 0.0)
    b2 = b.astype(np.int16).copy()
    b2[:16, :16] += 3  # one block (of 2 x 2 in the 32 x 46 overlap -> 2 x 2 blocks) brighter by 3
    g, l = frame_flicker(a, np.clip(b2, 0, 255).astype(np.uint8), 2)
    grey = lambda x: x.astype(float).mean(axis=2)  # noqa: E731
    ov_a, ov_b = grey(a)[:, 2:], grey(np.clip(b2, 0, 255).astype(np.uint8))[:, :46]
    assert g == pytest.approx(abs(ov_a.mean() - ov_b.mean()))
    assert l == pytest.approx(np.mean([abs(ov_a[i:i + 16, j:j + 16].mean() - ov_b[i:i + 16, j:j + 16].mean())
                                       for i in (0, 16) for j in (0, 16)]))
