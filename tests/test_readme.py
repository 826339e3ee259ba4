"""The README's quick start works on a fresh clone: its first command's input ships in the repository.

.ci/run runs the README's first bash block line by line; these tests check what that block needs
without installing anything: the photo it dehazes is in the repository (not in ../shared), small,
attributed, readable, and `hazefree dehaze` on it writes a result of its size.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from hazefree import cli
from hazefree.io import read_image

REPO = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    """Command lines of the README's first ```bash block (what .ci/run executes)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```bash\n(.*?)^```", text, re.M | re.S)
    assert block, "README.md has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def first_dehaze_input() -> tuple[str, str]:
    """(input, output folder) of the `hazefree dehaze` call in the README's first command."""
    first = quickstart_commands()[0]
    for part in first.split("&&"):
        words = shlex.split(part)
        if words[:2] == ["hazefree", "dehaze"]:
            return words[2], words[words.index("-o") + 1]
    raise AssertionError(f"the README's first command does not run hazefree dehaze: {first}")


def test_quickstart_is_install_dehaze_then_tests():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "pip install -e ." in commands[0] and "hazefree dehaze" in commands[0]
    assert 'pip install -e ".[test]"' in commands[1] and commands[1].endswith("python -m pytest -q")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "README.md" in ci and "pytest" not in ci  # CI takes its commands from the README


def test_first_command_input_ships_in_the_repository(tmp_path, capsys):
    given, _ = first_dehaze_input()
    assert not Path(given).is_absolute() and ".." not in Path(given).parts, given
    sample = REPO / given
    assert sample.is_file(), f"{given} (the README's first command) is not in the repository"
    assert sample.stat().st_size <= 300 * 1024
    attribution = (sample.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert f"`{sample.name}`" in attribution and "licence" in attribution.lower()
    listed = subprocess.run(["git", "ls-files", "--error-unmatch", given], cwd=REPO, capture_output=True)
    assert listed.returncode == 0 or not (REPO / ".git").exists(), f"{given} is not committed"

    assert cli.main(["dehaze", str(sample), "-o", str(tmp_path), "--method", "dcp"]) == 0
    capsys.readouterr()
    assert read_image(tmp_path / sample.name).size == read_image(sample).size


def test_every_sample_is_small_and_attributed():
    samples = REPO / "hazefree" / "samples"
    attribution = (samples / "ATTRIBUTION.md").read_text(encoding="utf-8")
    photos = sorted(p for p in samples.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    assert 1 <= len(photos) <= 3
    for photo in photos:
        assert photo.stat().st_size <= 300 * 1024, photo
        assert f"`{photo.name}`" in attribution, f"{photo.name} has no attribution"
