"""The ``hazefree`` command line.

Subcommands are registered by small ``_add_<name>(subparsers)`` functions; each sets
``func=<callable(args) -> int>`` as a parser default, which :func:`main` calls. The ``train``
and ``eval`` subcommands come from :func:`hazefree.training.add_train_parser` and
:func:`hazefree.evaluation.add_eval_parser` (same ``func`` convention).

Examples:
    hazefree dehaze photo.jpg -o out/
    hazefree dehaze photos/ -o out/ --method dcp --save-transmission
    hazefree dehaze photos/ -o photos/ --suffix _dehazed
    hazefree dehaze photos/ -o out/ --post retinex
    hazefree dehaze photos/ -o out/ --workers 2
    hazefree dehaze mosaic.tif -o out/ --max-pixels 0      # GeoTIFF, by windows and tiles
    hazefree eval --method dcp --data ../shared/data/sots_indoor,../shared/data/rtts --grid grid.png
    hazefree models
    hazefree serve --port 8000
    hazefree export guided-pix2pix --format onnx -o guided-pix2pix.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from .frontend import NO_TRANSMISSION as _NO_TRANSMISSION
from .frontend import UsageError
from .frontend import failure as _failure
from .frontend import load_dehazer as _load_dehazer
from .frontend import message as _message
from .frontend import report as _report
from .pipeline import Job as _Job

__all__ = ["main", "build_parser"]

# Exit statuses: 0 all done, 1 some files failed, 2 bad usage (nothing or not everything attempted).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; return its status instead
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = getattr(args, "debug", False)
    try:
        status = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as exc:
        # Bad arguments, unknown method, unusable weights (CheckpointError), invalid images: the
        # user's to fix, so one line without a traceback (unless --debug).
        if debug:
            traceback.print_exc()
        print(f"error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for details)"
        print(f"error: {type(exc).__name__}: {_message(exc)}{hint}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if status is None else int(status)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hazefree", description="Haze, fog and thin-cloud removal for images."
    )
    parser.add_argument("--version", action="version", version=f"hazefree {__version__}")
    _add_debug(parser)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_dehaze(subparsers)
    _add_models(subparsers)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_serve(subparsers)
    _add_export(subparsers)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS as default so that a subcommand's unset --debug does not reset `hazefree --debug ...`.
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors"
    )


# ---------------------------------------------------------------------------------------- dehaze


def _add_dehaze(subparsers: argparse._SubParsersAction) -> None:
    from .physics import AIRLIGHT_METHODS

    p = subparsers.add_parser(
        "dehaze",
        help="dehaze image files and folders",
        description=(
            "Dehaze image files and folders (PNG, JPEG, TIFF, WebP, BMP, GIF; folders are scanned "
            "recursively). Results keep the input's format, size, bit depth, gray/colour and alpha, "
            "and mirror the input's folder structure under OUTDIR; GIF inputs are written as PNG. "
            "GeoTIFFs keep their georeferencing, nodata and extra bands (needs rasterio). "
            "Input files are never overwritten."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)"
    )
    p.add_argument(
        "--method",
        metavar="NAME|FILE",
        help="model name (see `hazefree models`) or a weights file (.safetensors, .pt, .pth); "
        "default: the shipped learned model, or dcp when none is shipped",
    )
    p.add_argument(
        "--airlight",
        choices=AIRLIGHT_METHODS,
        help="override the method's airlight estimator: A is this estimator's, a learned airlight head "
        "bypassed (refused for methods without an airlight, e.g. aod-net)",
    )
    p.add_argument(
        "--post",
        choices=("rescale", "retinex"),
        help="post-process results as in Guided-Pix2Pix (Ma et al. 2021): rescale = per-image min-max "
        "stretch (GP2P-Rescale), retinex = multi-scale Retinex, eqs. 47-50 (GP2P-Retinex)",
    )
    p.add_argument(
        "--strength",
        type=_strength,
        default=1.0,
        metavar="S",
        help="scale the haze's optical depth, t' = t^S: 1 (default) the method's own result, 0 the input, "
        "above 1 removes more; for methods with a transmission and airlight (dcp, guided-pix2pix, dehazenet)",
    )
    p.add_argument(
        "--crf",
        type=_non_negative_int,
        default=18,
        metavar="N",
        help="videos: H.264 quality, 0 (lossless) to 51; default 18, visually lossless (docs/video.md)",
    )
    p.add_argument(
        "--save-transmission",
        action="store_true",
        help="also write <stem>_transmission.png (16-bit gray) beside each output",
    )
    p.add_argument("--suffix", default="", help="append S to output file names (e.g. _dehazed)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing outputs (never inputs)")
    existing.add_argument("--skip-existing", action="store_true", help="skip inputs whose output exists")
    _add_max_pixels(p)
    p.add_argument(
        "--tile",
        type=_non_negative_int,
        metavar="N",
        help="dehaze large images in N x N tiles with bounded memory (0: whole); default: whole up to "
        "16.8 MP, else tiles of about 2048 (see docs/performance-scale.md)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="overlap decoding, the model and encoding over a folder, with up to N images decoded "
        "ahead and N being written (default 1: one image at a time); results are identical",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the files as tasks on a Ray cluster at ADDRESS (e.g. ray://head:10001 or auto), or on a "
        "new local Ray instance without ADDRESS; inputs and outputs must be on storage every node sees "
        "(docs/deployment.md; needs pip install 'hazefree[ray]')",
    )
    _add_debug(p)
    p.set_defaults(func=_run_dehaze)


def _add_max_pixels(p: argparse.ArgumentParser) -> None:
    from .io import DEFAULT_MAX_PIXELS

    p.add_argument(
        "--max-pixels",
        type=_non_negative_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images with more than N pixels (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)",
    )


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _video_options(args: argparse.Namespace, progress: bool):
    from .video import VideoOptions

    if getattr(args, "crf", 18) > 51:
        raise UsageError(f"--crf {args.crf}: must be at most 51")
    return VideoOptions(crf=getattr(args, "crf", 18), max_pixels=args.max_pixels or None, progress=progress)


def _strength(text: str) -> float:
    from .strength import StrengthError, check_strength

    try:
        return check_strength(float(text))
    except (ValueError, StrengthError):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    try:
        value = float(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"must be a non-negative whole number, got {text!r}")
    return int(value)


def _run_dehaze(args: argparse.Namespace) -> int:
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder")
    if any(sep in args.suffix for sep in {"/", os.sep}):
        raise UsageError(f"--suffix {args.suffix!r}: must not contain a path separator")

    # The method first, so that a bad --method is reported before anything else.
    dehazer = _load_dehazer(args.method, args.airlight, args.post, getattr(args, "strength", 1.0))
    default_note = "" if args.method else " (default)"
    post_note = f", post-processing: {args.post}" if args.post else ""
    print(f"method: {dehazer.method}{default_note}{post_note}", flush=True)

    jobs, failed = _plan_jobs(args, out_dir)
    _check_plan(jobs, args)
    skipped = 0
    if args.skip_existing:
        kept = [job for job in jobs if not any(t is not None and t.exists() for t in job.targets)]
        skipped = len(jobs) - len(kept)
        jobs = kept
    if getattr(args, "ray", None) is not None:
        from .distributed import process_on_ray

        done, errors = process_on_ray(jobs, dehazer, args)
    else:
        done, errors = _process(jobs, dehazer, args)
    failed += errors
    print(f"{done} dehazed, {failed} failed, {skipped} skipped")
    return EXIT_FAILED if failed else EXIT_OK


def _plan_jobs(args: argparse.Namespace, out_dir: Path) -> tuple[list[_Job], int]:
    """One job per input image (duplicates dropped); the count of inputs that gave no images."""
    from .io import ImageReadError, find_images, output_path_for, transmission_path_for

    jobs: list[_Job] = []
    failed = 0
    seen: set[Path] = set()
    for given in args.inputs:
        try:
            found = find_images([given], exclude=_nested_output(out_dir, Path(given)))
        except ImageReadError as exc:
            _report(f"error: {exc}")
            failed += 1
            continue
        for source, root in found:
            if source.resolve() in seen:
                continue
            seen.add(source.resolve())
            output = output_path_for(source, root, out_dir, args.suffix)
            transmission = transmission_path_for(output) if args.save_transmission else None
            jobs.append(_Job(source, output, transmission))
    return jobs, failed


def _process(jobs: list[_Job], dehazer, args: argparse.Namespace) -> tuple[int, int]:
    """Dehaze every job, reporting each failure on one line; return (done, failed)."""
    from tqdm import tqdm

    from .pipeline import FileOptions, run_jobs

    debug = getattr(args, "debug", False)
    options = FileOptions(max_pixels=args.max_pixels or None, tile=getattr(args, "tile", None), video=_video_options(args, True))
    done = failed = 0
    no_transmission = False
    bar = tqdm(total=len(jobs), unit="image", disable=len(jobs) <= 1, file=sys.stderr, dynamic_ncols=True)
    for job, outcome in run_jobs(dehazer, jobs, options, workers=getattr(args, "workers", 1)):
        bar.update()
        if not isinstance(outcome, Exception):
            for text in outcome.warnings:
                _report(f"warning: {text}")
            no_transmission |= job.transmission is not None and not outcome.has_transmission
            done += 1
            continue
        exc = outcome  # any one file's failure is reported and the batch goes on
        failed += 1
        if debug:
            bar.clear()
            traceback.print_exception(exc)
        _report(_failure(job, exc))
    bar.close()
    if no_transmission:
        _report(_NO_TRANSMISSION.format(method=dehazer.method))
    return done, failed


def _check_plan(jobs: list[_Job], args: argparse.Namespace) -> None:
    """Refuse (UsageError) to write over an input, to write two results to one file, or to replace
    existing outputs without --overwrite / --skip-existing."""
    # Inputs are identified by (device, inode) so that another spelling of the same file (a
    # symlink, a case-insensitive file system, a hard link) is recognised as well.
    input_ids = {}
    for job in jobs:
        st = job.source.stat()
        input_ids[(st.st_dev, st.st_ino)] = job.source
    owners: dict[Path, Path] = {}
    existing: list[Path] = []
    for job in jobs:
        for target in job.targets:
            key = Path(os.path.abspath(target))
            if key in owners:
                raise UsageError(
                    f"{owners[key]} and {job.source} would both be written to {target}; "
                    "dehaze them in separate runs or rename one"
                )
            owners[key] = job.source
            try:
                st = target.stat()
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in input_ids:
                hint = (
                    "use --suffix or another -o"
                    if not args.suffix
                    else "it may be the result of an earlier run with the same --suffix; use another -o"
                )
                raise UsageError(
                    f"refusing to overwrite input {input_ids[(st.st_dev, st.st_ino)]} with the result "
                    f"for {job.source}; {hint}"
                )
            existing.append(target)
    if existing and not (args.overwrite or args.skip_existing):
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(
            f"output {existing[0]}{more} already exists; "
            "use --overwrite to replace or --skip-existing to skip"
        )


def _nested_output(out_dir: Path, given: Path) -> list[Path]:
    """``[out_dir]`` if it lies strictly inside the input folder ``given``: results of an earlier
    run there are not inputs (else each rerun would dehaze them again, one level deeper)."""
    if not (out_dir.is_dir() and given.is_dir()):
        return []
    out, root = out_dir.resolve(), given.resolve()
    return [out_dir] if out != root and out.is_relative_to(root) else []


# ---------------------------------------------------------------------------------------- models


def _add_models(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the available models",
        description="List the models, their parameter count and whether weights ship with hazefree.",
    )
    _add_debug(p)
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    import torch

    from . import models

    rows = [("NAME", "PARAMETERS", "WEIGHTS", "DESCRIPTION")]
    for name in models.available():
        # Built on the meta device: parameters are counted without allocating or initialising them.
        with torch.device("meta"):
            count = models.count_parameters(models.MODELS.build(name))
        shipped = "yes" if models.has_pretrained(name) else "no"
        rows.append((name, f"{count:,}", shipped, models.MODELS.get(name).summary))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, count, shipped, summary in rows:
        print(f"{name:<{widths[0]}}  {count:>{widths[1]}}  {shipped:<{widths[2]}}  {summary}".rstrip())
    return EXIT_OK


# ------------------------------------------------------------------------------ train and eval


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from .training import add_train_parser

    add_train_parser(subparsers)


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    from .evaluation import add_eval_parser

    add_eval_parser(subparsers)


# ----------------------------------------------------------------------------------------- serve


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web page: drop photos, compare before/after, download the results",
        description=(
            "Serve a web page where photos are dropped, dehazed with a chosen method and compared "
            "before/after, with the transmission map, the haze density and a full-size download "
            "(same reading, checks and writing as `hazefree dehaze`). Needs the web extra: "
            'pip install "hazefree[web]". The page has no login: keep the default host unless '
            "every machine that can reach the port may use it."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_non_negative_int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument(
        "--max-upload",
        type=_non_negative_int,
        default=50,
        metavar="MB",
        help="refuse uploads larger than MB megabytes (default 50)",
    )
    _add_max_pixels(p)
    _add_debug(p)
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from .web.server import ServeConfig, WebDependencyError, serve

    if args.port > 65535:
        raise UsageError(f"--port {args.port}: must be at most 65535")
    if args.max_upload < 1:
        raise UsageError("--max-upload must be at least 1 (MB)")
    config = ServeConfig(max_upload=args.max_upload * 2**20, max_pixels=args.max_pixels or None)
    if args.host not in {"127.0.0.1", "localhost", "::1"}:
        print(f"warning: listening on {args.host}: anyone who can reach this port can use the page", file=sys.stderr)
    try:
        serve(args.host, args.port, config)
    except WebDependencyError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or _message(exc)}") from None
    return EXIT_OK


# ---------------------------------------------------------------------------------------- export


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX",
        description="Export a model to an ONNX graph with dynamic height and width (see docs/deployment.md; "
        "needs pip install 'hazefree[onnx]').",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="model name or weights file (default: the default model)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format (default: onnx)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    _add_debug(p)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    if Path(args.output).is_dir():
        raise UsageError(f"-o {args.output}: is a folder; give the file to write")
    _load_dehazer(args.model, None)  # a bad model name is reported as for dehaze, before the slow export
    try:
        info = export_onnx(args.model, args.output)
    except ModuleNotFoundError as exc:  # the onnx extra is not installed
        raise UsageError(_message(exc)) from None
    airlight = ""
    if info.airlight_method:
        airlight = f"; the caller computes airlight with {info.airlight_method!r}"
    elif info.airlight_estimates:
        airlight = f"; the caller computes airlight_estimates with {', '.join(info.airlight_estimates)}"
    print(f"{info.path}: {info.method}, inputs {', '.join(info.inputs)}, outputs {', '.join(info.outputs)}{airlight}")
    return EXIT_OK
