"""The book's figures. Every function returns a new :class:`matplotlib.figure.Figure`.

Figures are built without ``pyplot`` (see :class:`NotebookFigure`), so that slider frames can be
rendered from them without also showing up in the notebook.
"""

from kronlib.viz.base import NotebookFigure, image_grid, shape_text, show, to_display
from kronlib.viz.convolution import (
    composed_kernel_figure,
    matrix_pattern_figure,
    pipeline_figure,
)
from kronlib.viz.factorization import (
    error_curve_figure,
    factor_shapes_figure,
    modes_figure,
    rank_figure,
    rearrangement_figure,
)

__all__ = [
    "NotebookFigure",
    "composed_kernel_figure",
    "error_curve_figure",
    "factor_shapes_figure",
    "image_grid",
    "matrix_pattern_figure",
    "modes_figure",
    "pipeline_figure",
    "rank_figure",
    "rearrangement_figure",
    "shape_text",
    "show",
    "to_display",
]
