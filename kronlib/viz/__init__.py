"""The book's figures. Every function returns a new :class:`matplotlib.figure.Figure`.

Figures are built without ``pyplot`` (see :class:`NotebookFigure`), so that slider frames can be
rendered from them without also showing up in the notebook.
"""

from kronlib.viz.base import NotebookFigure, image_grid, shape_text, show, to_display
from kronlib.viz.convolution import (
    Panel,
    composed_kernel_figure,
    matrix_pattern_figure,
    pipeline_figure,
)
from kronlib.viz.experiments import (
    distributions_figure,
    intervals_figure,
    path_terms_figure,
    pruning_figure,
    radius_figure,
    terms_figure,
)
from kronlib.viz.factorization import (
    factor_shapes_figure,
    modes_figure,
    rank_figure,
    rearrangement_figure,
)
from kronlib.viz.overview import overview_figure
from kronlib.viz.spectral import (
    depth_width_figure,
    filters_figure,
    layer_spectrum_figure,
    spectra_figure,
)
from kronlib.viz.tables import markdown_table
from kronlib.viz.virtual import (
    SIGNED_CMAP,
    channel_mosaic,
    effective_kernels_figure,
    layer_view_figure,
    templates_figure,
)

__all__ = [
    "SIGNED_CMAP",
    "NotebookFigure",
    "Panel",
    "channel_mosaic",
    "composed_kernel_figure",
    "depth_width_figure",
    "distributions_figure",
    "effective_kernels_figure",
    "factor_shapes_figure",
    "filters_figure",
    "image_grid",
    "intervals_figure",
    "layer_spectrum_figure",
    "layer_view_figure",
    "markdown_table",
    "matrix_pattern_figure",
    "modes_figure",
    "overview_figure",
    "path_terms_figure",
    "pipeline_figure",
    "pruning_figure",
    "radius_figure",
    "rank_figure",
    "rearrangement_figure",
    "shape_text",
    "show",
    "spectra_figure",
    "templates_figure",
    "terms_figure",
    "to_display",
]
