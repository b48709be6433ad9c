"""The book's figures. Every function returns a new :class:`matplotlib.figure.Figure`.

Figures are built without ``pyplot`` (see :class:`NotebookFigure`), so that slider frames can be
rendered from them without also showing up in the notebook.
"""

from kronlib.viz.base import (
    NotebookFigure,
    add_colorbar,
    image_grid,
    integer_ticks,
    mosaic,
    shape_text,
    show,
    signed_bound,
    to_display,
)
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
    budget_figure,
    colour_factors_figure,
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
    pruned_kernels_figure,
    spectra_figure,
)
from kronlib.viz.tables import markdown_table
from kronlib.viz.virtual import (
    SIGNED_CMAP,
    channel_mosaic,
    effective_kernels_figure,
    layer_grid,
    layer_view_figure,
    templates_figure,
)

__all__ = [
    "SIGNED_CMAP",
    "NotebookFigure",
    "Panel",
    "add_colorbar",
    "budget_figure",
    "channel_mosaic",
    "colour_factors_figure",
    "composed_kernel_figure",
    "depth_width_figure",
    "distributions_figure",
    "effective_kernels_figure",
    "factor_shapes_figure",
    "filters_figure",
    "image_grid",
    "integer_ticks",
    "intervals_figure",
    "layer_grid",
    "layer_spectrum_figure",
    "layer_view_figure",
    "markdown_table",
    "matrix_pattern_figure",
    "modes_figure",
    "mosaic",
    "overview_figure",
    "path_terms_figure",
    "pipeline_figure",
    "pruned_kernels_figure",
    "pruning_figure",
    "radius_figure",
    "rank_figure",
    "rearrangement_figure",
    "shape_text",
    "show",
    "signed_bound",
    "spectra_figure",
    "templates_figure",
    "terms_figure",
    "to_display",
]
