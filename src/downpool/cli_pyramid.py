"""``downpool pyramid``: an image file or a zarr array to an OME-Zarr multiscale pyramid.

Level 0 of an image file is written as libvips (or Pillow) decodes it, a band
of rows at a time (:func:`downpool.io.open_image`), so that a gigapixel TIFF
never sits in memory; each further level is ``kernel_size=2`` of the level
written before it, computed by Dask chunk by chunk (:mod:`downpool.dask`).
The zarr folder is made under a temporary name beside the output (a name
:func:`downpool.files.remove_stale_temporaries` knows) and put in place when
every level is written.

What it replaces, with ``--overwrite``, is only what is recognisably a
pyramid (:func:`pyramid_kind`), and never a folder that holds an input or
the current folder.  Its limits are ``shrink``'s: ``--max-pixels`` (per image,
zarr array or page of a stack) and ``--max-memory`` (:func:`memory_needed`).
Every fault is one line, ``downpool: error: FILE: CAUSE``, with the Python
warnings and C libraries' lines (libtiff) of the run folded into it or
printed as ``downpool: warning: FILE: ...`` (:mod:`downpool.messages`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import click

from .cli import command_params, memory_limit_option, method_choice, method_param_options
from .io import DEFAULT_MAX_PIXELS
from .messages import caught, fold, one_line
from .methods import get_method

__all__ = ["pyramid", "pyramid_kind", "memory_needed"]

EXIT_FAILED = 1


#: About how many bytes of rows each band of a decoded image file holds.
BAND_BYTES = 1 << 20

#: The files of a folder that make a stack of pages.
STACK_EXTENSIONS = (".tif", ".tiff")


class _Fault(Exception):
    """A one-line error about ``path`` (the input, the output or a page)."""

    def __init__(self, path: Any, cause: str) -> None:
        super().__init__(cause)
        self.path = os.fspath(path)
        self.cause = cause


def _say(message: str) -> None:
    try:
        click.echo(one_line(message), err=True)
    except (OSError, ValueError, AttributeError):  # stderr closed: the job is done all the same
        pass


def _fail(message: str) -> None:
    _say(f"downpool: error: {message}")
    sys.exit(EXIT_FAILED)


@click.command("pyramid", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="INPUT")
@click.option("-o", "--output", "out", required=True, metavar="OUT.zarr",
              help="The OME-Zarr (NGFF 0.4) folder to write.")
@click.option("-m", "--method", type=method_choice(), default="avg", show_default=True,
              help="Pooling method of each level (mode: a label pyramid).")
@click.option("--levels", type=click.IntRange(min=1),
              help="Levels to write, level 0 (full size) included.")
@click.option("--min-size", "min_size", type=click.IntRange(min=1), metavar="PX",
              help="Halve until the smaller side is at most PX.  [default: --chunks]")
@click.option("--chunks", type=click.IntRange(min=16), default=512, show_default=True,
              help="Side of the stored chunks (at most the level's own sides).")
@method_param_options
@click.option("--linear", is_flag=True, help="Pool in linear light (decode sRGB, pool, encode).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing OUT, where it is an OME-Zarr pyramid that holds no "
                   "input (nothing else is ever replaced).")
@click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS,
              show_default=True,
              help="Refuse images, zarr arrays and pages of a stack with more pixels than this "
                   "(0: no limit).")
@click.option("--max-memory", "max_memory", metavar="SIZE|auto", default="auto",
              show_default=True,
              help="Refuse inputs that would need more memory than this to write the pyramid "
                   "(e.g. 4G, 500M; 0: no limit).  auto: the memory the system has left at the "
                   "start.")
def pyramid(source: str, out: str, method: str, levels: int | None, min_size: int | None,
            chunks: int, linear: bool, overwrite: bool, max_pixels: int, max_memory: str,
            **kwargs: Any) -> None:
    """Write an image pyramid as OME-Zarr (NGFF 0.4) for napari and ome-zarr-py.

    \b
    INPUT is an image file (PNG, JPEG, TIFF, WebP ...; read a band of rows
    at a time where libvips can), a zarr array of (H, W) or (H, W, C), or a
    folder of TIFF pages (a stack, in name order: axes z, y, x, each page
    pooled on its own).  Each level halves the one above with the chosen
    method (-k 2).

    \b
    downpool pyramid slide.tif -o slide.zarr --method dpid
    downpool pyramid labels.png -o labels.zarr --method mode --levels 4
    """
    spec, params = command_params(method, kwargs)
    if levels is not None and min_size is not None:
        raise click.UsageError("give one of --levels and --min-size")
    if spec.labels and linear:
        raise click.UsageError(f"--linear does not apply to {method}: it pools labels")
    memory, memory_is_auto = memory_limit_option(max_memory)
    try:
        from . import dask as dd

        dd._dask_array()
        dd._zarr()
    except ImportError as exc:
        _fail(str(exc))
    started = time.perf_counter()
    settings = _Settings(method=method, levels=levels, min_size=min_size, chunks=chunks,
                         linear=linear, params=params, max_pixels=max_pixels or None,
                         max_memory=memory, memory_is_auto=memory_is_auto)
    made, error, removed = None, None, []
    with caught() as words:
        try:
            made, removed = _run(Path(source), out, overwrite, settings)
        except _Fault as fault:
            error = (fault.path, fault.cause)
        except Exception as exc:  # noqa: BLE001 - one line, whatever it was
            error = (source, _describe(exc, source))
    cause, warnings = fold(None if error is None else error[1], words.messages, words.native)
    if removed:
        _say(f"downpool: removed {len(removed)} "
             f"{'temporaries' if len(removed) > 1 else 'temporary'} left by a run that was "
             f"killed (in {os.path.dirname(removed[0])})")
    for warning in warnings:
        _say(f"downpool: warning: {source}: {warning}")
    if error is not None:
        _fail(f"{error[0]}: {cause}")
    sizes = ", ".join(f"{shape[1]}x{shape[0]}" for shape in made)
    _say(f"downpool: wrote {out}: {len(made)} levels ({sizes}) in "
         f"{time.perf_counter() - started:.1f} s")


@dataclasses.dataclass
class _Settings:
    method: str
    levels: int | None
    min_size: int | None
    chunks: int
    linear: bool
    params: dict[str, Any]
    max_pixels: int | None
    max_memory: int | None
    memory_is_auto: bool


def _describe(exc: BaseException, own: Any = None) -> str:
    """A one-line cause for ``exc``, without the file name where it is ``own``'s."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.strerror:
        name = os.fspath(exc.filename) if exc.filename is not None else None
        return exc.strerror if name in (None, own and os.fspath(own)) else f"{name}: {exc.strerror}"
    text = " ".join(str(exc).split())
    if isinstance(exc, (OSError, ValueError, TypeError, RuntimeError, SyntaxError, EOFError)):
        return text or type(exc).__name__
    # Not a fault of the input: say what it was, so that it can be reported.
    return f"internal error: {type(exc).__name__}: {text}"


# --- the run ----------------------------------------------------------------------


def _run(source: Path, out: str, overwrite: bool, settings: _Settings,
         ) -> tuple[list[tuple], list[str]]:
    """Check the output, write the pyramid under a temporary name, put it in place."""
    from .files import remove_stale_temporaries

    if not os.path.lexists(source):
        raise _Fault(source, "no such file or folder")
    target = _output_path(out)
    existed = _check_output(source, target, out, overwrite)
    new_folders = []  # made for the output, removed again if it fails
    folder = target.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        new_folders.append(folder)
        folder = folder.parent
    done = False
    try:
        try:
            os.makedirs(target.parent, exist_ok=True)
        except OSError as exc:
            raise _Fault(out, f"cannot create its folder {target.parent}: "
                              f"{exc.strerror or exc}") from None
        _check_name_length(target, out)
        removed = remove_stale_temporaries(target.parent)
        made = _write_in_place(source, target, out, overwrite or existed, settings)
        done = True
    finally:
        if not done:
            for folder in new_folders:  # deepest first; each only where it is empty
                try:
                    os.rmdir(folder)
                except OSError:
                    break
    return made, removed


def _write_in_place(source: Path, target: Path, out: str, overwrite: bool,
                    settings: _Settings) -> list[tuple]:
    from .files import temp_file_name

    temporary = Path(temp_file_name(str(target)))
    try:
        try:
            os.mkdir(temporary)
        except OSError as exc:
            raise _Fault(out, f"cannot write in {target.parent}: {exc.strerror or exc}") from None
        try:
            made = _write(source, temporary, settings)
        except OSError as exc:  # a fault in the temporary folder is said of the output
            name = os.fspath(exc.filename) if exc.filename is not None else ""
            if exc.strerror and name.startswith(os.fspath(temporary)):
                raise _Fault(out, f"cannot write it: {exc.strerror}") from None
            raise
        if os.path.lexists(target):  # another run may have made it meanwhile
            _check_output(source, target, out, overwrite)
        try:
            _put_in_place(temporary, target)
        except OSError as exc:
            raise _Fault(out, f"cannot put it in place: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return made


def _check_name_length(target: Path, out: str) -> None:
    """Refuse, before any work, a name longer than the file system takes (the temporary's
    is cut short to fit, the rename to it would fail at the end)."""
    try:
        limit = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(os.fsencode(target.name))
    if limit and limit > 0 and size > limit:
        raise _Fault(out, f"its name is {size} bytes long, more than the {limit} that a name "
                          "may have in this folder")


def _output_path(out: str) -> Path:
    """``out`` as its real folder and its own name (a symbolic link there stays one)."""
    given = Path(out)
    if given.name in ("", ".", ".."):  # ".", "..", "a/..", "/": a folder that exists
        return Path(os.path.realpath(given))
    return Path(os.path.realpath(given.parent or ".")) / given.name


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both absolute and normalised)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def _spellings(path: Path) -> set[str]:
    """``path`` as written (made absolute), through its folder's links, and through all."""
    absolute = os.path.abspath(path)
    return {absolute, os.path.realpath(path),
            os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))}


def _check_output(source: Path, target: Path, out: str, overwrite: bool) -> bool:
    """Refuse an output that is, or holds, an input or the current folder, or that exists
    and is not a pyramid (or, without ``overwrite``, at all).  Whether it exists."""
    real = os.path.realpath(target)
    here = os.path.realpath(os.getcwd())
    if _inside(here, real):
        what = "the current folder" if real == here else "a folder that holds the current folder"
        raise _Fault(out, f"is {what}; not replaced (give the pyramid a name of its own, "
                          "such as -o image.zarr)")
    outputs = _spellings(target)
    inputs = _spellings(source)
    if outputs & inputs:
        raise _Fault(out, "is the input; choose another output")
    if any(_inside(given, output) for given in inputs for output in outputs):
        raise _Fault(out, f"holds the input {source}; not replaced")
    if _is_zarr_array(source) and any(_inside(output, given) for given in inputs
                                      for output in outputs):
        raise _Fault(out, f"is inside the input zarr array {source}; choose another output")
    if not os.path.lexists(target):
        return False
    kind = pyramid_kind(target)
    if kind is None or kind == "ome-tiff":
        raise _Fault(out, _not_replaced(target, kind))
    if not overwrite:
        raise _Fault(out, f"exists, an OME-Zarr {kind} pyramid (use --overwrite to replace it)")
    return True


def _not_replaced(target: Path, kind: str | None) -> str:
    """Why ``target``, which exists, is not replaced even with --overwrite."""
    if os.path.islink(target):
        return ("is a symbolic link; not replaced (give the folder it points to, or another "
                "name)")
    if kind == "ome-tiff":
        return ("is an OME-TIFF file; not replaced, even with --overwrite: pyramid writes "
                "an OME-Zarr folder, and puts no folder in a file's place")
    if target.is_dir():
        return ("exists and is not an OME-Zarr pyramid (a folder without multiscales "
                "metadata); not replaced, even with --overwrite")
    if target.is_file():
        return ("exists and is a file, not an OME-Zarr pyramid; not replaced, even with "
                "--overwrite")
    return "exists and is not a folder or file; not replaced"


def _json(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read(1 << 24))
    except (OSError, ValueError):
        return None


def pyramid_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is, of the pyramids downpool writes or will write: ``"0.4"`` (a zarr
    format 2 group whose ``.zattrs`` hold ``multiscales``, NGFF 0.4), ``"0.5"`` (a zarr
    format 3 group whose ``zarr.json`` holds ``attributes.ome.multiscales``, NGFF 0.5),
    ``"ome-tiff"`` (a TIFF file whose first ImageDescription is OME-XML), or None: anything
    else, a symbolic link included."""
    path = Path(path)
    if os.path.islink(path):
        return None
    if path.is_dir():
        attributes = _json(path / ".zattrs")
        if ((path / ".zgroup").is_file() and isinstance(attributes, dict)
                and _multiscales(attributes.get("multiscales"))):
            return "0.4"
        node = _json(path / "zarr.json")
        if isinstance(node, dict) and node.get("node_type") == "group":
            ome = (node.get("attributes") or {}).get("ome") if isinstance(
                node.get("attributes"), dict) else None
            if isinstance(ome, dict) and _multiscales(ome.get("multiscales")):
                return "0.5"
        return None
    if path.is_file() and _is_ome_tiff(path):
        return "ome-tiff"
    return None


def _first_dataset(path: Path) -> str | None:
    """The path of the first level of the pyramid at ``path``, if it is one."""
    kind = pyramid_kind(path)
    if kind == "0.4":
        scales = _json(path / ".zattrs")["multiscales"]
    elif kind == "0.5":
        scales = _json(path / "zarr.json")["attributes"]["ome"]["multiscales"]
    else:
        return None
    datasets = scales[0]["datasets"]
    first = datasets[0].get("path") if datasets and isinstance(datasets[0], dict) else None
    return first if isinstance(first, str) else None


def _multiscales(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("datasets"), list) for m in value))


def _is_ome_tiff(path: Path) -> bool:
    """A TIFF file whose first ImageDescription (tag 270) is OME-XML."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
                return False
        from PIL import Image

        with Image.open(path) as image:
            description = image.tag_v2.get(270) if hasattr(image, "tag_v2") else None
    except Exception:  # noqa: BLE001 - not a TIFF Pillow reads: not an OME-TIFF
        return False
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    return isinstance(description, str) and "<OME" in description


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """Linux's renameat2(2); False where the system or the file system lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if call(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(target))


def _put_in_place(temporary: Path, target: Path) -> None:
    """Rename the finished folder to ``target``: an old pyramid there (checked before) is
    swapped with it in one step where the system can (renameat2), so that ``target`` is
    always the old pyramid or the new one, then removed under the temporary name."""
    if not os.path.lexists(target):
        if not _renameat2(temporary, target, _RENAME_NOREPLACE):
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "it appeared meanwhile", os.fspath(target))
            os.rename(temporary, target)
        return
    if _renameat2(temporary, target, _RENAME_EXCHANGE):
        return  # the old pyramid now has the temporary name, which the caller removes
    from .files import temp_file_name

    old = Path(temp_file_name(os.fspath(target)))
    os.rename(target, old)
    try:
        os.rename(temporary, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- the inputs -------------------------------------------------------------------


def _is_zarr_array(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / ".zarray").is_file():
        return True
    node = _json(path / "zarr.json")
    return isinstance(node, dict) and node.get("node_type") == "array"


def _is_zarr_group(path: Path) -> bool:
    if not path.is_dir():
        return False
    node = _json(path / "zarr.json")
    return (path / ".zgroup").is_file() or (isinstance(node, dict)
                                            and node.get("node_type") == "group")


def _dask_workers() -> int:
    """The threads Dask's default scheduler runs tasks on."""
    import dask
    from dask.system import CPU_COUNT

    return int(dask.config.get("num_workers", None) or CPU_COUNT or 1)


def _level_bytes(shape: Sequence[int], itemsize: int) -> int:
    return math.prod(int(n) for n in shape) * itemsize


def _chunk_bytes(hw: tuple[int, int], channels: int, itemsize: int, chunks: int) -> int:
    return min(chunks, hw[0]) * min(chunks, hw[1]) * channels * itemsize


def memory_needed(shape: Sequence[int], itemsize: int, sizes: Sequence[tuple[int, int]],
                  chunks: int, *, first: int, has_alpha: bool = False, linear: bool = False,
                  workers: int = 1, pages: int = 1) -> int:
    """Bytes that writing a pyramid of (H, W[, C]) ``shape`` (a page's, for a stack) takes,
    beyond the process itself (Python, NumPy, Numba, Dask: :data:`downpool.memory.PROCESS_BASE_BYTES`).

    The sum of its two phases (what level 0 took is mostly kept by the allocator
    while the levels are made, so the peaks add up):

    - ``first``, level 0, as the caller works it out for its input: for an
      image file or each page of a stack, :func:`_first_bytes` (the decoder,
      a band of rows, five times a row of chunks); for a zarr array, which
      Dask copies, twice per Dask thread the input chunks one output chunk
      meets and two output chunks;
    - the largest further level, made by Dask (:func:`downpool.dask.downscale`):
      per task, the tile of about :data:`downpool.api.STRIP_BYTES` it reads,
      joined, what :func:`downpool.api.working_bytes` says pooling it takes, and
      two output chunks (the pieces of a chunk waiting for its other tiles, and
      the chunk stored); and the stored chunks the tiles meet, each decoded
      whole, but never more than the level's chunks all together (of its
      ``pages`` pages, for a stack).  Dask runs
      ``workers`` tasks at once and readies about one more: ``workers + 1``.

    Levels are ``sizes`` (:func:`downpool.dask.pyramid_levels`); a stored chunk
    is at most ``chunks`` on a side and never larger than its level.  Against
    peak resident memory less a run's start-up, measured on 6000x6000 RGB
    inputs (PNG streamed, BMP decoded whole, a zarr array, stacks of 3000x3000
    TIFF pages; ``--chunks`` 512 to 4096, avg and dpid, 2 CPUs), the estimate
    was 1.3 to 2.4 times the peak.
    """
    from .api import STRIP_BYTES, working_bytes

    channels = int(shape[2]) if len(shape) == 3 else 1
    pixel = channels * itemsize
    side = max(1, math.isqrt(max(1, STRIP_BYTES // pixel)))
    tasks = workers + 1
    worst = 0
    for (h, w), (out_h, out_w) in zip(sizes, sizes[1:]):
        ch, cw = min(chunks, h), min(chunks, w)
        tile_h, tile_w = min(h, side + 1), min(w, side + 1)
        cover = (min(-(-tile_h // ch) + 1, -(-h // ch)) * min(-(-tile_w // cw) + 1, -(-w // cw))
                 * ch * cw * pixel)
        every_chunk = pages * -(-h // ch) * -(-w // cw) * ch * cw * pixel
        tile = tile_h * tile_w * pixel
        work = working_bytes((tile_h, tile_w, channels), itemsize,
                             (-(-tile_h // 2), -(-tile_w // 2)), has_alpha=has_alpha,
                             linear=linear)
        out_chunk = _chunk_bytes((out_h, out_w), channels, itemsize, chunks)
        worst = max(worst, min(tasks * cover, every_chunk)
                    + tasks * (tile + work + 2 * out_chunk))
    return int(first) + worst


def _check_limits(source: Path, shape: Sequence[int], itemsize: int, settings: _Settings,
                  first: int, has_alpha: bool, what: str, sizes: Sequence[tuple[int, int]],
                  pages: int = 1) -> None:
    """Refuse ``source`` (pixels of (H, W[, C]) ``shape``: an image, a zarr array or a page)
    whose pyramid would need more than --max-memory.  (--max-pixels is checked before:
    by :func:`downpool.io.open_image` for a file, by :func:`_write_zarr` for an array.)"""
    from .memory import format_bytes, over_the_limit

    h, w = int(shape[0]), int(shape[1])
    if settings.max_memory is None:
        return
    need = memory_needed(shape, itemsize, sizes, settings.chunks, first=first,
                         has_alpha=has_alpha, linear=settings.linear, workers=_dask_workers(),
                         pages=pages)
    if need <= settings.max_memory:
        return
    limit = over_the_limit(settings.max_memory, settings.memory_is_auto,
                           advice=("use a smaller --chunks",))
    raise _Fault(source, f"a pyramid of this {w}x{h} {what} with --chunks {settings.chunks} "
                         f"needs about {format_bytes(need)} of memory, {limit}")


def _write(source: Path, store: Path, settings: _Settings) -> list[tuple]:
    """Write the pyramid of ``source`` into the folder ``store``; the levels' shapes."""
    if _is_zarr_array(source):
        return _write_zarr(source, store, settings)
    if _is_zarr_group(source):
        first = _first_dataset(source)
        hint = f" (a pyramid: give one of its arrays, such as {source / first})" if first else ""
        raise _Fault(source, f"is a zarr group, not an array{hint}")
    if source.is_dir():
        return _write_stack(source, store, settings)
    return _write_image(source, store, settings)


def _write_zarr(source: Path, store: Path, settings: _Settings) -> list[tuple]:
    import dask.array as da

    from . import dask as dd

    array = da.from_zarr(str(source))
    if array.ndim not in (2, 3):
        raise _Fault(source, f"is a {array.ndim}-D zarr array of shape {tuple(array.shape)}; "
                             "pyramid takes (H, W) or (H, W, C)")
    if 0 in array.shape:
        raise _Fault(source, f"is an empty zarr array of shape {tuple(array.shape)}")
    from .core import check_dtype

    try:
        check_dtype(array.dtype, labels=get_method(settings.method).labels)
    except TypeError as exc:
        raise _Fault(source, str(exc)) from None
    sizes = dd.pyramid_levels(array.shape, settings.levels, settings.min_size, settings.chunks)
    itemsize = array.dtype.itemsize
    channels = array.shape[2] if array.ndim == 3 else 1
    # Level 0 is the input rechunked: each output chunk reads the input chunks it meets.
    in_h, in_w = (int(max(array.chunks[0])), int(max(array.chunks[1])))
    ch, cw = min(settings.chunks, sizes[0][0]), min(settings.chunks, sizes[0][1])
    cover = (min(-(-ch // in_h) + 1, len(array.chunks[0]))
             * min(-(-cw // in_w) + 1, len(array.chunks[1])) * in_h * in_w)
    first = 2 * _dask_workers() * (cover + 2 * ch * cw) * channels * itemsize
    h, w = array.shape[:2]
    if settings.max_pixels is not None and h * w > settings.max_pixels:
        raise _Fault(source, f"zarr array is {w}x{h} = {w * h:,} pixels, above the limit of "
                             f"{settings.max_pixels:,} (raise it with --max-pixels)")
    _check_limits(source, array.shape, itemsize, settings, first, False, "zarr array", sizes)
    made = dd.pyramid(array, settings.method, levels=settings.levels, min_size=settings.min_size,
                      chunks=settings.chunks, linear=settings.linear, store=str(store),
                      name=source.stem, **settings.params)
    return [level.shape for level in made]


def _first_bytes(header: Any, chunks: int) -> int:
    """What writing level 0 of an image file (or a page) with this header holds: the
    decoder's own buffer; one band of rows, three times (libvips' region, the bytes fetched
    from it, their copy) or, decoded whole by Pillow, the image; and five times a row of
    chunks (the bands held, joined, and zarr's channel-first copies and encoded chunks,
    several chunks at once)."""
    row = header.width * header.channels * header.bytes_per_sample
    image = header.height * row
    held = 3 * min(image, BAND_BYTES) if header.streamed else image
    return header.decoded_bytes + held + 5 * min(chunks, header.height) * row


def _header_shape(header: Any) -> tuple[int, ...]:
    return (header.height, header.width) + ((header.channels,) if header.channels > 1 else ())


def _check_header(path: Path, header: Any, settings: _Settings, what: str,
                  pages: int = 1) -> None:
    from . import dask as dd

    shape = _header_shape(header)
    sizes = dd.pyramid_levels(shape, settings.levels, settings.min_size, settings.chunks)
    _check_limits(path, shape, header.bytes_per_sample, settings,
                  _first_bytes(header, settings.chunks),
                  header.has_alpha and not get_method(settings.method).labels, what, sizes,
                  pages)


def _rows(image: Any) -> tuple[tuple[int, ...], Any, bool, Any]:
    """An opened image file's shape, dtype, alpha, and its bands of rows."""
    import numpy as np

    if image.shape is None:  # decoded whole by Pillow: its shape comes with the pixels
        loaded = image.read()
        pixels = loaded.pixels
        return pixels.shape, pixels.dtype, loaded.has_alpha, iter([pixels])
    row_bytes = max(1, int(np.dtype(image.dtype).itemsize * math.prod(image.shape[1:])))
    return (tuple(image.shape), np.dtype(image.dtype), image.has_alpha,
            image.bands(max(1, BAND_BYTES // row_bytes)))


def _write_image(source: Path, store: Path, settings: _Settings) -> list[tuple]:
    from . import dask as dd
    from .io import open_image

    labels = get_method(settings.method).labels
    # A pipe is read into memory: no more of it than --max-memory.
    with open_image(source, max_pixels=settings.max_pixels,
                    before_decode=lambda header: _check_header(source, header, settings, "image"),
                    max_read_bytes=settings.max_memory) as image:
        shape, dtype, has_alpha, rows = _rows(image)
        sizes = dd.pyramid_levels(shape, settings.levels, settings.min_size, settings.chunks)
        options = dict(has_alpha=has_alpha and not labels, linear=settings.linear,
                       **settings.params)
        writer = dd.NgffWriter(str(store), shape, dtype, len(sizes), settings.chunks,
                               settings.method, source.stem, options)
        level = writer.write_rows(0, shape, rows)
    made = [level]
    for _ in sizes[1:]:
        made.append(writer.write(len(made), dd.downscale(made[-1], settings.method,
                                                         kernel_size=2, **options)))
    return [level.shape for level in made]


def _write_stack(source: Path, store: Path, settings: _Settings) -> list[tuple]:
    """Level 0 a page at a time, in name order, each a band of rows at a time as an image
    file is; then each level by Dask, each page halved on its own."""
    import dask.array as da

    from . import dask as dd

    labels = get_method(settings.method).labels
    pages, shape, dtype, has_alpha = _stack_pages(source, settings)
    stack_shape = (len(pages), *shape)
    sizes = dd.pyramid_levels(shape, settings.levels, settings.min_size, settings.chunks)
    options = dict(has_alpha=has_alpha and not labels, linear=settings.linear,
                   **settings.params)
    writer = dd.NgffWriter(str(store), stack_shape, dtype, len(sizes), settings.chunks,
                           settings.method, source.name, options, stack=True)
    made = [writer.write_pages(0, stack_shape, _page_rows(pages, shape, dtype, settings))]
    for _ in sizes[1:]:
        level = made[-1]
        made.append(writer.write(len(made), da.stack([
            dd.downscale(level[z], settings.method, kernel_size=2, **options)
            for z in range(level.shape[0])])))
    return [level.shape[1:] for level in made]


def _stack_pages(folder: Path, settings: _Settings) -> tuple[list[Path], tuple, Any, bool]:
    """The folder's TIFF files, in name order, their (H, W[, C]) shape and dtype, and whether
    they have alpha, from their headers.  Every page must have the first one's shape and
    dtype, and be within the limits."""
    import numpy as np

    from .io import open_image

    try:
        pages = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in STACK_EXTENSIONS and not p.name.startswith("."))
    except OSError as exc:
        raise _Fault(folder, f"cannot read this folder: {exc.strerror or exc}") from None
    if not pages:
        raise _Fault(folder, "is a folder with no TIFF pages (.tif, .tiff) to stack")
    shape = dtype = None
    has_alpha = False
    for page in pages:
        try:
            with open_image(page, max_pixels=settings.max_pixels,
                            before_decode=lambda header, page=page: _check_header(
                                page, header, settings, "page", len(pages))) as image:
                header = image.header
        except _Fault:
            raise
        except Exception as exc:  # noqa: BLE001 - the page's own line
            raise _Fault(page, _describe(exc, page)) from None
        found = (_header_shape(header),
                 np.dtype(np.uint16 if header.bytes_per_sample == 2 else np.uint8))
        if shape is None:
            (shape, dtype), has_alpha = found, header.has_alpha
        elif found != (shape, dtype):
            raise _Fault(folder, f"page {page.name} is {found[0]} {found[1]}, the first page "
                                 f"{pages[0].name} {shape} {dtype}: a stack's pages must agree")
    return pages, shape, dtype, has_alpha


def _page_rows(pages: list[Path], shape: tuple, dtype: Any, settings: _Settings) -> Any:
    """Each page's bands of rows in turn, opened when the writer comes to it; a fault is
    said with the page's name."""
    from .io import open_image

    for page in pages:
        try:
            with open_image(page, max_pixels=settings.max_pixels) as image:
                found, found_dtype, _, rows = _rows(image)
                if (tuple(found), found_dtype) != (tuple(shape), dtype):
                    raise _Fault(page, f"decodes as {found} {found_dtype}, not {shape} {dtype} "
                                       "as its header said")
                yield _named(page, rows)
        except _Fault:
            raise
        except Exception as exc:  # noqa: BLE001 - said with the page's name
            raise _Fault(page, _describe(exc, page)) from None


def _named(page: Path, rows: Any) -> Any:
    try:
        yield from rows
    except _Fault:
        raise
    except Exception as exc:  # noqa: BLE001 - said with the page's name
        raise _Fault(page, _describe(exc, page)) from None
