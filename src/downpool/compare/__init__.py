"""Measure what each downscaling method keeps of an image: SSIM and PSNR.

The protocol and the scoring are in :mod:`downpool.compare.scores`.
"""

from .scores import (AGAINST, BASELINES, UPSAMPLE_FILTERS, ImageComparison, Score, best_marks,
                     compare_image, format_csv, format_json, format_table, mean_scores,
                     memory_needed, montage, montage_cells, montage_format, montage_size,
                     parse_methods, resize_float, save_montage, to_unit_float)

__all__ = [
    "UPSAMPLE_FILTERS", "AGAINST", "BASELINES", "Score", "ImageComparison",
    "to_unit_float", "resize_float", "parse_methods", "compare_image", "mean_scores",
    "best_marks", "format_table", "format_csv", "format_json", "montage_cells", "montage",
    "montage_size", "save_montage", "montage_format", "memory_needed",
]
