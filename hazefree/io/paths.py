"""Finding image files in folders and naming the files results go to."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from .formats import _EXTENSION_FORMATS, IMAGE_EXTENSIONS, ImageReadError, PathLike, is_video, video_output_extension


def find_images(
    paths: Iterable[PathLike], recursive: bool = True, exclude: Sequence[PathLike] = ()
) -> list[tuple[Path, Path]]:
    """Image files named by ``paths`` (files or folders), as (file, root) pairs.

    A file is taken as given, whatever its extension, with its parent folder as root. A folder is
    its root: it is scanned (recursively unless ``recursive=False``) for files with an image
    extension (:data:`IMAGE_EXTENSIONS`, any case), sorted; hidden files and folders (a name
    starting with ".") and anything under ``exclude`` are skipped. Duplicates keep the first entry.

    Raises:
        ImageReadError: a path does not exist, or a folder holds no image files.
    """
    excluded = [Path(p).resolve() for p in exclude]
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            candidates = p.rglob("*") if recursive else p.iterdir()
            files = sorted(
                f
                for f in candidates
                if (f.suffix.lower() in IMAGE_EXTENSIONS or is_video(f))
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.is_file()
                and not any(f.resolve().is_relative_to(x) for x in excluded)
            )
            if not files:
                where = "in this folder or below" if recursive else "in this folder"
                looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
                raise ImageReadError(p, f"no image files {where} (looked for {looked_for})")
            pairs = [(f, p) for f in files]
        elif p.exists():
            pairs = [(p, p.parent)]
        else:
            raise ImageReadError(p, "no such file or directory")
        for f, root in pairs:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append((f, root))
    return found


def output_extension(input_path: PathLike) -> str:
    """Extension of the output for ``input_path``: its own, except GIF and unknown ones -> ".png"."""
    suffix = Path(input_path).suffix
    if is_video(input_path):
        return video_output_extension(input_path)
    fmt = _EXTENSION_FORMATS.get(suffix.lower())
    return suffix if fmt is not None and fmt != "GIF" else ".png"


def output_path_for(input_path: PathLike, input_root: PathLike, out_dir: PathLike, suffix: str = "") -> Path:
    """Where the result for ``input_path`` goes: its path relative to ``input_root``, under ``out_dir``.

    The name gets ``suffix`` before the extension; the extension is kept, except that GIF (a
    palette format) and unknown extensions become ".png".

    Example:
        >>> output_path_for("in/a/b.gif", "in", "out", "_clear")
        PosixPath('out/a/b_clear.png')
    """
    input_path = Path(input_path)
    try:
        relative = input_path.relative_to(input_root)
    except ValueError:
        relative = Path(input_path.name)
    return Path(out_dir) / relative.parent / f"{relative.stem}{suffix}{output_extension(input_path)}"


def transmission_path_for(output_path: PathLike) -> Path:
    """``<stem>_transmission.png`` beside an output image."""
    output_path = Path(output_path)
    return output_path.with_name(f"{output_path.stem}_transmission.png")
