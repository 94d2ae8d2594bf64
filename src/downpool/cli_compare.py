"""``downpool compare``: SSIM/PSNR tables and a montage of what each method keeps.

The measuring is :mod:`downpool.compare`; this module reads the files, runs
the comparison per image, reports bad files and prints the result.  Nothing
here imports Numba, Pillow or scikit-image at module level, so that
``downpool --help`` stays fast: they load inside the command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from .cli import check_params_used, memory_limit_option, method_param_options, pop_method_params
from .io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from .messages import caught, fold, one_line
from .methods import METHODS, resolve_params

__all__ = ["compare"]

EXIT_FAILED = 1

FORMATS = ("table", "markdown", "csv", "json")



class _Refused(Exception):
    """An image is refused before it is decoded (its memory): the message says why."""


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; hidden names left out."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _cause(exc: BaseException) -> str:
    """A one-line reason why a file could not be compared."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or an unsupported or corrupt one (Pillow cannot identify it)"
    if isinstance(exc, IsADirectoryError):
        return "is a folder"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = " ".join(str(exc).split())
    # A decoder's RuntimeError (Pillow's AVIF plugin: "Failed to decode frame 0")
    # is the file's fault, as shrink says too.
    if isinstance(exc, (_Refused, OSError, ValueError, TypeError, RuntimeError)):
        return text or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {text}"


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _say(message: str, bar: Any) -> None:
    """A line on stderr, above the progress bar where there is one; control characters
    (a newline in a file name) escaped, so that it stays one line.  Where stderr is gone
    (closed: ``2>&-``), the line is lost and the work goes on."""
    message = one_line(message)
    try:
        if bar is not None:
            bar.write(message, file=sys.stderr)
        else:
            click.echo(message, err=True)
    except (OSError, ValueError, AttributeError):  # AttributeError: sys.stderr is None
        pass


def _progress_bar(total: int, quiet: bool) -> Any:
    """A tqdm bar on stderr for several images, when stderr is a terminal; else None."""
    if quiet or total < 2 or not _stderr_is_terminal():
        return None
    from tqdm import tqdm

    # No monitor thread: it could redraw the bar while an image's C-level
    # messages are being caught (downpool.messages.caught).
    tqdm.monitor_interval = 0
    return tqdm(total=total, file=sys.stderr, unit="image", dynamic_ncols=True, leave=False)


def _fail(message: str) -> None:
    """Refuse the whole command, before any image is measured: one line, exit 1."""
    _say(f"downpool: error: {message}", None)
    sys.exit(EXIT_FAILED)


def _check_memory(header: Any, limit: int | None, is_auto: bool, methods: list[str],
                  settings: dict, keep_outputs: bool) -> None:
    """Refuse an image whose comparison would need more memory than it may take,
    from its header, before its pixels are decoded."""
    if limit is None:
        return
    from .compare import memory_needed

    need = memory_needed(header, methods, keep_outputs=keep_outputs, **settings)
    if need <= limit:
        return
    from .memory import format_bytes, over_the_limit

    raise _Refused(f"{header.width}x{header.height} image needs about {format_bytes(need)} of "
                   f"memory to compare, {over_the_limit(limit, is_auto)}")


def _check_montage_target(montage_path: str, files: list[str], walked: set[str],
                          overwrite: bool) -> list[str]:
    """The inputs to compare, once the montage is known to replace none of them.

    As ``shrink`` treats its outputs: the montage never replaces an input (the
    same file by another spelling, a symbolic or a hard link included); a file
    that a folder walk found at the montage's path is taken as an earlier
    run's montage and left out; an existing file is replaced only with
    ``--overwrite``.  A FIFO or a character device (``/dev/null``) is written
    into, not replaced.  Refusals end the command before any image is measured.
    """
    from .files import output_is_stream

    target = os.path.realpath(montage_path)
    exists = os.path.exists(montage_path)
    kept = []
    for file in files:
        same = os.path.realpath(file) == target
        if not same and exists and not output_is_stream(montage_path):
            try:
                same = os.path.samefile(file, montage_path)
            except OSError:  # an input that is not there is reported as it is read
                same = False
        if not same:
            kept.append(file)
        elif file in walked:
            _say(f"downpool: note: {file} is where the montage goes: not compared", None)
        else:
            _fail(f"{montage_path}: the montage would overwrite the input {file}")
    if (os.path.lexists(montage_path) and not output_is_stream(montage_path)
            and not overwrite):
        _fail(f"{montage_path}: the montage's file exists (use --overwrite to replace it)")
    return kept


def _compare_one(file: str, methods: list[str], given: dict, settings: dict,
                 keep_outputs: bool, max_pixels: int | None, check: Any,
                 max_read_bytes: int | None = None,
                 ) -> tuple[Any, Any, str | None, tuple[str, ...], int]:
    """Read and compare one image: (comparison, montage cells, error, warnings, frames).

    What Python warnings and C libraries (libtiff) say meanwhile is caught
    and folded into the image's error or warnings (:func:`downpool.messages.fold`).
    """
    from .compare import compare_image, montage_cells
    from .io import open_image

    result = cells = error = None
    frames = 1
    with caught() as words:
        try:
            # A pipe is read into memory: no more of it than --max-memory.
            with open_image(file, max_pixels=max_pixels, before_decode=check,
                            max_read_bytes=max_read_bytes) as source:
                frames = source.n_frames
                loaded = source.read()
            pixels, has_alpha = loaded.pixels, loaded.has_alpha
            del loaded  # the metadata; the pixels go on to compare_image
            result = compare_image(pixels, methods, has_alpha=has_alpha, name=file,
                                   params=given, keep_outputs=keep_outputs, **settings)
            del pixels
            if keep_outputs:
                cells = montage_cells(result)
                # Keep the scores, not every full-size output, across a folder.
                result.original, result.outputs = None, {}
        except Exception as exc:  # noqa: BLE001  (any failure costs this file only)
            result = cells = None
            error = _cause(exc)
    error, warnings = fold(error, words.messages, words.native)
    return result, cells, error, warnings, frames


def _write_output(text: str) -> str | None:
    """Write ``text`` on stdout; the cause where it cannot be written (``> /dev/full``).

    A file name that is not valid in the locale's encoding (bytes that are not
    UTF-8) is written as the bytes it has, as ``ls`` does, else escaped: it
    never stops the table.
    """
    try:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            sys.stdout.write(text)
        else:
            encoding = sys.stdout.encoding or "utf-8"
            try:
                data = text.encode(encoding, "surrogateescape")
            except UnicodeEncodeError:
                data = text.encode(encoding, "backslashreplace")
            sys.stdout.flush()
            buffer.write(data)
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        # What is left in the buffer could not be written at exit either:
        # stdout becomes /dev/null, so that Python's own flush stays quiet.
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass
        return _cause(exc)
    return None


def _parse_methods(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    from .compare import parse_methods  # imported here: keeps NumPy out of `--help`

    try:
        return parse_methods(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _check_montage_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Checked before any image is measured, so that a typo costs nothing.
    if value is None:
        return None
    folder = os.path.dirname(os.path.abspath(value)) or "."
    if os.path.isdir(value):
        raise click.BadParameter(one_line(f"{value} is a folder; give a file name such as "
                                          "montage.png"))
    if not os.path.isdir(folder):
        raise click.BadParameter(one_line(f"folder {folder} does not exist"))
    from .compare import montage_format  # here, not at import: keeps NumPy out of `--help`

    try:
        montage_format(value)
    except ValueError as exc:
        raise click.BadParameter(one_line(str(exc))) from None
    return value


@click.command("compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER...")
# A window wider than any image (2**31 - 1) is refused as usage: beyond 64 bits the
# window plan cannot be built (it was an "internal error: OverflowError").
@click.option("-k", "--kernel-size", "kernel_size", type=click.IntRange(min=1, max=2**31 - 1),
              help="Pool KxK windows; every method's output is ceil(H/K) x ceil(W/K). "
                   "[default: 2 when --scale is not given]")
@click.option("--scale", type=click.FloatRange(0, 1, min_open=True),
              help="Scale factor in (0, 1] for every method: output = round(size x F).")
@click.option("--methods", "methods", default="all", show_default=True, callback=_parse_methods,
              metavar="all|M1,M2,...",
              help=f"Methods to compare: 'all' or a comma-separated list of {', '.join(METHODS)}. "
                   "The pillow-box and pillow-lanczos baselines are always added.")
@method_param_options
@click.option("--upsample", type=click.Choice(["nearest", "bilinear", "bicubic", "lanczos"]),
              default="bicubic", show_default=True,
              help="Pillow filter that takes each output back to the original's size "
                   "(--against original).")
@click.option("--against", type=click.Choice(["original", "reference"]), default="original",
              show_default=True,
              help="Compare the upsampled output with the original image, or the output "
                   "with Pillow's LANCZOS downscale of the original.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table and markdown: one row per method (the mean over images when there "
                   "are several); csv and json: one row per image and method.")
@click.option("--montage", "montage_path", metavar="FILE", callback=_check_montage_path,
              help="Also write a picture showing, per method, the most detailed region of each "
                   "image as it comes out, enlarged with nearest neighbour; its format follows "
                   "the extension (.png, .jpg, .webp, .tif).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --montage file (never an input).")
@click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS,
              show_default=True, help="Refuse images with more pixels than this (0: no limit).")
@click.option("--max-memory", "max_memory", metavar="SIZE|auto", default="auto",
              show_default=True,
              help="Refuse images that would need more memory than this to compare (e.g. 4G, "
                   "500M; 0: no limit).  auto: the memory the system has left at the start.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def compare(inputs: tuple[str, ...], kernel_size: int | None, scale: float | None,
            methods: list[str], upsample: str, against: str, fmt: str,
            montage_path: str | None, overwrite: bool, max_pixels: int, max_memory: str,
            quiet: bool, **kwargs: Any) -> None:
    """Measure what each method keeps of your images: SSIM, PSNR and time.

    \b
    Protocol, per image X (floats in [0, 1], alpha composited on white):
    - each method downscales X to Y; Pillow's BOX and LANCZOS resizes to
      the same size are added as baselines (pillow-box, pillow-lanczos);
    - --against original (default): Y is upsampled back to X's size with
      --upsample (Pillow, on float data, aligned with the pooling grid)
      and compared with X;
    - --against reference: Y is compared with Pillow's LANCZOS downscale
      of X to Y's size (that is the pillow-lanczos row itself, shown as
      the reference and never marked best);
    - SSIM: skimage.metrics.structural_similarity(data_range=1,
      channel_axis=-1 for colour); PSNR: peak_signal_noise_ratio
      (data_range=1); an exact match has PSNR inf (null in json);
    - seconds: the faster of two downscale calls (no compile time).
    The best value of each column is marked (* or bold).  A uniform image
    is kept exactly by every method: SSIM 1, PSNR inf.  A bad file, or one
    over --max-pixels or --max-memory (checked on its header, before it is
    decoded), is reported and skipped.  The montage never replaces an input,
    nor an existing file without --overwrite.
    Exit status: 0, 1 some file failed, 2 usage error.

    \b
    downpool compare photo.png -k 4
    downpool compare photos/ --methods avg,softpool,dpid --format markdown
    downpool compare photo.png --against reference --montage what_it_keeps.png
    """
    given = pop_method_params(kwargs)
    specs = [METHODS[name] for name in methods]
    check_params_used(specs, given)
    for spec in specs:
        try:
            resolve_params(spec, {k: v for k, v in given.items() if k in spec.params})
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if kernel_size is not None and scale is not None:
        raise click.UsageError("give one of -k and --scale, not both")

    memory_limit, memory_is_auto = memory_limit_option(max_memory)  # a bad value: usage error

    files: list[str] = []
    walked: set[str] = set()
    unread: list[tuple[str, str]] = []  # folders that cannot be listed
    for given_path in inputs:
        # os.path.isdir, not Path.is_dir: a name too long for the system is an
        # input that cannot be read (said below), not a traceback.
        if os.path.isdir(given_path):
            try:
                found = _images_in(Path(given_path))
            except OSError as exc:
                unread.append((given_path, f"cannot read this folder: {_cause(exc)}"))
                _say(f"downpool: error: {given_path}: {unread[-1][1]}", None)
                continue
            if not found:
                _say(f"downpool: warning: no image files in folder {given_path}", None)
            files.extend(str(p) for p in found)
            walked.update(str(p) for p in found)
        else:
            files.append(given_path)
    if montage_path:
        files = _check_montage_target(montage_path, files, walked, overwrite)

    # The heavy imports, only now that the arguments are sound.
    from .compare import format_csv, format_json, format_table, montage, save_montage

    settings = dict(kernel_size=kernel_size, scale=scale, upsample=upsample, against=against)
    keep_outputs = bool(montage_path)

    def check(header: Any) -> None:
        _check_memory(header, memory_limit, memory_is_auto, methods, settings, keep_outputs)

    comparisons = []
    cells = []
    failed: list[tuple[str, str]] = list(unread)
    bar = _progress_bar(len(files), quiet)
    try:
        for file in files:
            result, image_cells, error, warnings, frames = _compare_one(
                file, methods, given, settings, keep_outputs, max_pixels or None, check,
                memory_limit)
            for warning in warnings:
                _say(f"downpool: warning: {file}: {warning}", bar)
            if error is not None:
                failed.append((file, error))
                _say(f"downpool: error: {file}: {error}", bar)
            else:
                if frames > 1:
                    _say(f"downpool: note: {file} has {frames} frames: compared on the first "
                         f"alone", bar)
                comparisons.append(result)
                if image_cells is not None:
                    cells.append(image_cells)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()

    text = None
    if fmt == "json":
        text = format_json(comparisons, failed=failed, **settings)
    elif comparisons:
        if fmt == "csv":
            text = format_csv(comparisons)
        else:
            text = format_table(comparisons, markdown=fmt == "markdown", **settings)
    unwritten = _write_output(text) if text else None
    if unwritten is not None:
        failed.append(("standard output", f"cannot write the {fmt}: {unwritten}"))
        _say(f"downpool: error: {failed[-1][0]}: {failed[-1][1]}", None)

    if montage_path and cells:
        error = None
        with caught() as words:
            try:
                save_montage(montage(cells), montage_path, replace=overwrite)
            except FileExistsError:
                error = "the montage's file appeared meanwhile (use --overwrite to replace it)"
            except (OSError, ValueError) as exc:
                error = _cause(exc)
        error, warnings = fold(error, words.messages, words.native)
        for warning in warnings:
            _say(f"downpool: warning: {montage_path}: {warning}", None)
        if error is not None:
            failed.append((montage_path, error))
            _say(f"downpool: error: {montage_path}: {error}", None)

    if len(files) + len(unread) > 1:
        # Each failure was reported as it happened; list them again where a
        # long table may have scrolled them away.
        for file, cause in failed:
            _say(f"downpool: failed: {file}: {cause}", None)
    if failed or not files:
        sys.exit(EXIT_FAILED)
