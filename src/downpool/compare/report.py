"""The scores as a table (plain text or markdown), CSV or JSON.

One image gives its own rows; several give one row per method, the mean
over the images (:func:`mean_scores`).  The best value of each column is
marked as it is shown (:func:`best_marks`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Sequence

import numpy as np

from ..messages import one_line
from .scores import ImageComparison, Score

__all__ = ["DECIMALS", "mean_scores", "best_marks", "psnr_text", "format_table", "format_csv",
           "format_json"]


def mean_scores(comparisons: Sequence[ImageComparison]) -> list[Score]:
    """One row per method: SSIM, PSNR and seconds averaged over the images.

    Rows are matched by :attr:`Score.label`; a PSNR of ``inf`` on any image
    makes the mean ``inf``.  The ``image`` field says how many images were
    averaged, and ``size`` is that of the first image.

    Parameters
    ----------
    comparisons : sequence of ImageComparison
        The images, all compared with the same methods.

    Returns
    -------
    list of Score
        One per row label, in the order the rows first appear.
    """
    groups: dict[str, list[Score]] = {}
    for comparison in comparisons:
        for s in comparison.scores:
            groups.setdefault(s.label, []).append(s)
    means = []
    for rows in groups.values():
        first = rows[0]
        means.append(Score(
            f"mean of {len(rows)} images", first.method, first.params, first.size,
            float(np.mean([r.ssim for r in rows])), float(np.mean([r.psnr for r in rows])),
            float(np.mean([r.seconds for r in rows])), first.baseline, first.reference,
        ))
    return means


#: Decimals shown for each column, in tables and on the montage.
DECIMALS = {"ssim": 4, "psnr": 2, "seconds": 4}


def best_marks(scores: Sequence[Score]) -> list[dict[str, bool]]:
    """Which values are the best of their column: highest SSIM and PSNR, lowest seconds.

    Values are compared as they are shown (rounded to ``DECIMALS``), so that
    two values that print alike are both marked or neither.  The reference
    row (``Score.reference``) is never best.

    Parameters
    ----------
    scores : sequence of Score
        The rows of one table (or of one image's montage block).

    Returns
    -------
    list of dict of str to bool
        Per row, ``{"ssim": ..., "psnr": ..., "seconds": ...}``: whether
        that value is the best of its column.
    """
    def shown(s: Score, column: str) -> float:
        value = getattr(s, column)
        return value if math.isinf(value) else round(value, DECIMALS[column])

    eligible = [s for s in scores if not s.reference]
    best = {
        "ssim": max((shown(s, "ssim") for s in eligible), default=None),
        "psnr": max((shown(s, "psnr") for s in eligible), default=None),
        "seconds": min((shown(s, "seconds") for s in eligible), default=None),
    }
    return [{column: (not s.reference and shown(s, column) == best[column]) for column in best}
            for s in scores]


def _describe(comparisons: Sequence[ImageComparison], kernel_size: int | None,
              scale: float | None, upsample: str, against: str) -> str:
    """One line saying what was compared, and how."""
    geometry = f"scale {scale}" if scale is not None else f"k={kernel_size or 2}"
    if against == "original":
        how = f"upsampled back ({upsample}) and compared with the original"
    else:
        how = "compared with Pillow's LANCZOS downscale (the reference)"
    if len(comparisons) == 1:
        c = comparisons[0]
        (h, w), (oh, ow) = c.shape[:2], c.scores[0].size
        what = f"{one_line(c.image)}: {h}x{w} -> {oh}x{ow}"
    else:
        what = f"mean over {len(comparisons)} images"
    return f"{what}, {geometry}, {how}"


def psnr_text(psnr: float) -> str:
    """PSNR as shown in tables and on the montage.

    Parameters
    ----------
    psnr : float
        In dB.

    Returns
    -------
    str
        Two decimals (``"31.26"``), or ``"inf"`` for an exact match.
    """
    return "inf" if math.isinf(psnr) else f"{psnr:.2f}"


def format_table(comparisons: Sequence[ImageComparison], *, markdown: bool = False,
                 kernel_size: int | None = None, scale: float | None = None,
                 upsample: str = "bicubic", against: str = "original") -> str:
    """The human-readable table: per method SSIM, PSNR and seconds, best values marked.

    One image gives its own rows; several give the mean over the images
    (:func:`mean_scores`).  The geometry and protocol arguments only go into
    the heading.  Plain text marks the best value of a column with ``*``,
    markdown makes it bold.

    Parameters
    ----------
    comparisons : sequence of ImageComparison
        At least one image, all compared with the same methods.
    markdown : bool
        A markdown table instead of aligned plain text.
    kernel_size : int, optional
        The kernel the comparisons were made with (default 2 when ``scale``
        is not given); for the heading.
    scale : float, optional
        The scale they were made with; for the heading.
    upsample : str
        The upsampling filter; for the heading.
    against : {"original", "reference"}
        What the outputs were compared with; for the heading.

    Returns
    -------
    str
        A heading line, the table and, in plain text, a legend; ending in a
        newline.
    """
    rows = comparisons[0].scores if len(comparisons) == 1 else mean_scores(comparisons)
    marks = best_marks(rows)
    heading = _describe(comparisons, kernel_size, scale, upsample, against)
    table = []
    for s, mark in zip(rows, marks):
        kind = "reference" if s.reference else ("baseline" if s.baseline else "")
        cells = [s.method, s.params_text, f"{s.ssim:.4f}", psnr_text(s.psnr), f"{s.seconds:.4f}"]
        for i, col in ((2, "ssim"), (3, "psnr"), (4, "seconds")):
            if mark[col]:
                cells[i] = f"**{cells[i]}**" if markdown else cells[i] + "*"
        table.append(cells + [kind])
    header = ["method", "parameters", "SSIM", "PSNR (dB)", "seconds", ""]
    if markdown:
        lines = [f"*{heading}*", "", "| " + " | ".join(header[:-1]) + " |",
                 "|---|---|--:|--:|--:|"]
        for cells in table:
            method = cells[0] + (f" ({cells[5]})" if cells[5] else "")
            params = f"`{cells[1]}`" if cells[1] else ""
            lines.append(f"| {method} | {params} | " + " | ".join(cells[2:5]) + " |")
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    aligned = []
    for cells in [header, *table]:
        parts = [cells[i].ljust(widths[i]) if i < 2 else cells[i].rjust(widths[i] + 1)
                 for i in range(5)]
        aligned.append("  ".join(parts) + ("  " + cells[5] if cells[5] else ""))
    return "\n".join([heading, *aligned, "* best in its column"]) + "\n"


def _row_dicts(comparisons: Sequence[ImageComparison]) -> list[dict]:
    return [
        {"image": s.image, "method": s.method, "parameters": dict(s.params),
         "height": s.size[0], "width": s.size[1], "ssim": s.ssim, "psnr": s.psnr,
         "seconds": s.seconds, "baseline": s.baseline, "reference": s.reference}
        for c in comparisons for s in c.scores
    ]


def format_csv(comparisons: Sequence[ImageComparison]) -> str:
    """Per-image rows as CSV.

    Columns: ``image, method, parameters, height, width, ssim, psnr, seconds,
    baseline, reference``; ``parameters`` is ``name=value`` words separated by
    spaces, PSNR of an exact match is ``inf``, booleans are ``true``/``false``.

    Parameters
    ----------
    comparisons : sequence of ImageComparison
        The images; each gives one row per method and baseline.

    Returns
    -------
    str
        A header line, then the rows; lines end in ``"\n"``.
    """
    buffer = io.StringIO()
    rows = _row_dicts(comparisons)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "method", "parameters", "height", "width", "ssim", "psnr",
                     "seconds", "baseline", "reference"])
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in r["parameters"].items())
        writer.writerow([r["image"], r["method"], params, r["height"], r["width"],
                         repr(r["ssim"]), "inf" if math.isinf(r["psnr"]) else repr(r["psnr"]),
                         repr(r["seconds"]), str(r["baseline"]).lower(),
                         str(r["reference"]).lower()])
    return buffer.getvalue()


def format_json(comparisons: Sequence[ImageComparison], *, kernel_size: int | None = None,
                scale: float | None = None, upsample: str = "bicubic",
                against: str = "original", failed: Sequence[tuple[str, str]] = ()) -> str:
    """Per-image rows and the protocol as a JSON document.

    Schema:

        {"against": "original" | "reference",
         "upsample": filter name, or null under "reference",
         "kernel_size": int or null, "scale": float or null,
         "rows": [{"image": str, "method": str, "parameters": {name: value},
                   "height": int, "width": int, "ssim": float,
                   "psnr": float or null (null: exact match, PSNR inf),
                   "seconds": float, "baseline": bool, "reference": bool}],
         "failed": [{"image": str, "error": str}]}

    Parameters
    ----------
    comparisons : sequence of ImageComparison
        The images; each gives one row per method and baseline.
    kernel_size : int, optional
        The kernel the comparisons were made with (default 2 when ``scale``
        is not given).
    scale : float, optional
        The scale they were made with.
    upsample : str
        The upsampling filter (shown as null under ``against="reference"``).
    against : {"original", "reference"}
        What the outputs were compared with.
    failed : sequence of (str, str)
        The images that could not be compared, and why.

    Returns
    -------
    str
        The document, indented by 2, ending in a newline.
    """
    rows = _row_dicts(comparisons)
    for r in rows:
        if math.isinf(r["psnr"]):
            r["psnr"] = None  # JSON has no infinity
    document = {
        "against": against,
        "upsample": upsample if against == "original" else None,
        "kernel_size": None if scale is not None else (kernel_size or 2),
        "scale": scale,
        "rows": rows,
        "failed": [{"image": image, "error": error} for image, error in failed],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"
