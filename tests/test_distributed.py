"""`hazefree dehaze --ray` (hazefree/distributed.py) on a local Ray instance with 2 CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SHARED_DATA
from PIL import Image

from hazefree import cli

PHOTOS = SHARED_DATA / "real_hazy_classic" / "hazy"

pytestmark = pytest.mark.skipif(not PHOTOS.is_dir(), reason="../shared/data is not available")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=True)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def folder(tmp_path) -> Path:
    """Four real hazy photos, made small (one in a subfolder), and one file that is not an image."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for i, path in enumerate(sorted(PHOTOS.iterdir())[:4]):
        image = Image.open(path).convert("RGB")
        image.thumbnail((72, 72))
        image.save(root / ("sub" if i == 3 else "") / f"{path.stem}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ray_run_equals_single_process_run(ray_local, folder, tmp_path, capsys):
    options = ("--save-transmission",)  # the default model, with its transmission maps
    code, out, err = _run(capsys, "dehaze", str(folder), "-o", str(tmp_path / "local"), *options)
    assert code == 1 and "4 dehazed, 1 failed, 0 skipped" in out
    code, out, err = _run(capsys, "dehaze", str(folder), "-o", str(tmp_path / "ray"), *options, "--ray")
    assert code == 1, err
    assert "4 dehazed, 1 failed, 0 skipped" in out
    assert f"error: {folder / 'broken.jpg'}: " in err
    local, distributed = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert len(local) == 8  # 4 results + 4 transmission maps
    assert distributed == local  # byte for byte

    # Resumable: nothing left to do but the broken file, which fails again (and is named again).
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*")}
    code, out, err = _run(capsys, "dehaze", str(folder), "-o", str(tmp_path / "ray"), *options, "--ray", "--skip-existing")
    assert code == 1
    assert "0 dehazed, 1 failed, 4 skipped" in out
    assert "broken.jpg" in err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*")} == stamps


def test_ray_all_good_exits_zero_and_honours_options(ray_local, folder, tmp_path, capsys):
    (folder / "broken.jpg").unlink()
    code, out, err = _run(
        capsys, "dehaze", str(folder / "sub"), "-o", str(tmp_path / "out"), "--method", "dcp", "--suffix", "_x", "--ray"
    )
    assert code == 0, err
    assert "1 dehazed, 0 failed, 0 skipped" in out
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{next((folder / 'sub').iterdir()).stem}_x.png"]


def test_ray_address_swallowing_an_input_is_a_usage_error(folder, tmp_path, capsys):
    # `--ray` takes an optional value: here it took the first input folder as the address.
    code, out, err = _run(capsys, "dehaze", "--ray", str(folder), str(folder / "sub"), "-o", str(tmp_path / "o"))
    assert code == 2
    assert "--ray took" in err and "--ray=ADDRESS" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.png"))
