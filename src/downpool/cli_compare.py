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

from .cli import check_params_used, method_param_options, pop_method_params
from .io import IMAGE_EXTENSIONS
from .methods import METHODS, resolve_params

__all__ = ["compare"]

EXIT_FAILED = 1

FORMATS = ("table", "markdown", "csv", "json")


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
    if isinstance(exc, (OSError, ValueError, TypeError)):
        return text or type(exc).__name__
    return f"internal error: {type(exc).__name__}: {text}"


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _say(message: str, bar: Any) -> None:
    """A line on stderr, above the progress bar where there is one."""
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        click.echo(message, err=True)


def _progress_bar(total: int, quiet: bool) -> Any:
    """A tqdm bar on stderr for several images, when stderr is a terminal; else None."""
    if quiet or total < 2 or not _stderr_is_terminal():
        return None
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="image", dynamic_ncols=True, leave=False)


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
        raise click.BadParameter(f"{value} is a folder; give a file name such as montage.png")
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder} does not exist")
    from .compare import montage_format  # here, not at import: keeps NumPy out of `--help`

    try:
        montage_format(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER...")
@click.option("-k", "--kernel-size", "kernel_size", type=click.IntRange(min=1),
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def compare(inputs: tuple[str, ...], kernel_size: int | None, scale: float | None,
            methods: list[str], upsample: str, against: str, fmt: str,
            montage_path: str | None, quiet: bool, **kwargs: Any) -> None:
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
    The best value of each column is marked (* or bold).  A bad file is
    reported and skipped.  Exit status: 0, 1 some file failed, 2 usage error.

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

    files: list[str] = []
    for given_path in inputs:
        path = Path(given_path)
        if path.is_dir():
            found = _images_in(path)
            if not found:
                click.echo(f"downpool: warning: no image files in folder {given_path}", err=True)
            files.extend(str(p) for p in found)
        else:
            files.append(given_path)

    # The heavy imports, only now that the arguments are sound.
    from .compare import (compare_image, format_csv, format_json, format_table, montage,
                          montage_cells, save_montage)
    from .io import open_image

    settings = dict(kernel_size=kernel_size, scale=scale, upsample=upsample, against=against)
    comparisons = []
    cells = []
    failed: list[tuple[str, str]] = []
    bar = _progress_bar(len(files), quiet)
    try:
        for file in files:
            try:
                with open_image(file) as source:
                    frames = source.n_frames
                    loaded = source.read()
                if frames > 1:
                    _say(f"downpool: note: {file} has {frames} frames: compared on the first "
                         f"alone", bar)
                result = compare_image(loaded.pixels, methods, has_alpha=loaded.has_alpha,
                                       name=file, params=given, keep_outputs=bool(montage_path),
                                       **settings)
                if montage_path:
                    cells.append(montage_cells(result))
                    # Keep the scores, not every full-size output, across a folder.
                    result.original, result.outputs = None, {}
                comparisons.append(result)
            except Exception as exc:  # noqa: BLE001  (any failure costs this file only)
                failed.append((file, _cause(exc)))
                _say(f"downpool: error: {file}: {failed[-1][1]}", bar)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()

    if fmt == "json":
        click.echo(format_json(comparisons, failed=failed, **settings), nl=False)
    elif comparisons:
        if fmt == "csv":
            click.echo(format_csv(comparisons), nl=False)
        else:
            click.echo(format_table(comparisons, markdown=fmt == "markdown", **settings), nl=False)

    if montage_path and cells:
        try:
            save_montage(montage(cells), montage_path)
        except (OSError, ValueError) as exc:
            failed.append((montage_path, _cause(exc)))
            click.echo(f"downpool: error: {montage_path}: {failed[-1][1]}", err=True)

    if len(files) > 1:
        # Each failure was reported as it happened; list them again where a
        # long table may have scrolled them away.
        for file, cause in failed:
            click.echo(f"downpool: failed: {file}: {cause}", err=True)
    if failed or not files:
        sys.exit(EXIT_FAILED)
