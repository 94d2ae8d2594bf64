"""Measure what each downscaling method keeps of an image: SSIM and PSNR.

The array-level logic behind ``downpool compare``, one module per job:

- :mod:`downpool.compare.scores`: the protocol; each method's output scored
  with SSIM and PSNR (:func:`compare_image`);
- :mod:`downpool.compare.report`: the scores as a table, markdown, CSV or JSON;
- :mod:`downpool.compare.drawing`: the montage, a picture of what each
  method keeps of each image's most detailed region;
- :mod:`downpool.compare.memory`: the memory a comparison takes, estimated
  from a file's header before it is decoded.

Examples
--------
>>> import numpy as np
>>> from downpool.compare import compare_image, format_csv
>>> img = np.random.default_rng(0).random((32, 32, 3))
>>> result = compare_image(img, "avg,softpool", kernel_size=2)
>>> format_csv([result]).splitlines()[0]
'image,method,parameters,height,width,ssim,psnr,seconds,baseline,reference'
"""

from .drawing import (CROP_SIDE, GAP, LABEL_HEIGHT, MONTAGE_COLUMNS, TILE_SIDE, MontageCell,
                      detail_window, montage, montage_cells, montage_format, montage_size,
                      save_montage)
from .memory import memory_needed
from .report import (DECIMALS, best_marks, format_csv, format_json, format_table, mean_scores,
                     psnr_text)
from .scores import (AGAINST, BASELINES, SSIM_WINDOW, STRIP_VALUES, UPSAMPLE_FILTERS,
                     WHOLE_IMAGE_VALUES, ImageComparison, Score, compare_image, parse_methods,
                     resize_float, ssim_psnr, to_unit_float)

__all__ = [
    # scores
    "UPSAMPLE_FILTERS", "AGAINST", "BASELINES", "SSIM_WINDOW", "WHOLE_IMAGE_VALUES",
    "STRIP_VALUES", "Score", "ImageComparison", "to_unit_float", "resize_float", "ssim_psnr",
    "parse_methods", "compare_image",
    # report
    "DECIMALS", "mean_scores", "best_marks", "psnr_text", "format_table", "format_csv",
    "format_json",
    # montage
    "MONTAGE_COLUMNS", "TILE_SIDE", "CROP_SIDE", "LABEL_HEIGHT", "GAP", "MontageCell",
    "detail_window", "montage_size", "montage_cells", "montage", "save_montage",
    "montage_format",
    # memory
    "memory_needed",
]
