"""kronlib.viz: every figure builds, with the titles the chapter relies on."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from kronlib import nkp
from kronlib.viz import (
    factor_shapes_figure,
    image_grid,
    markdown_table,
    modes_figure,
    overview_figure,
    rank_figure,
    rearrangement_figure,
    to_display,
)

IMAGE = torch.rand(24, 36, generator=torch.Generator().manual_seed(0))


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_to_display_scales_into_unit_interval():
    shown = to_display(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]))
    assert shown.min() == 0.0 and shown.max() == 1.0
    assert np.all(to_display(torch.zeros(3, 3)) == 0.5)
    # non-negative images keep zero black and their channel ratios (hue)
    tint = to_display(torch.tensor([[[1.0, 2.0, 4.0]]]))
    assert tint.tolist() == [[[0.25, 0.5, 1.0]]]


def test_rearrangement_figure_blacks_out_moved_blocks():
    fig = rearrangement_figure(IMAGE, (6, 6), moved=5)
    assert isinstance(fig, Figure)
    assert "5 blocks moved" in _titles(fig)[0] and "24×36" in _titles(fig)[1]
    left = fig.axes[0].images[0].get_array()
    assert np.all(left[:6, :30] == 0) and np.any(left[6:] != 0)


def test_factor_shapes_figure_titles_multiply_to_the_image():
    fig = factor_shapes_figure(IMAGE, (4, 6))
    assert _titles(fig)[:3] == ["B: 4×6", "C: 6×6", "B ⊗ C: 24×36"]


def test_rank_modes_and_error_figures():
    fac = nkp(IMAGE, (4, 6), rank=5)
    assert "relative error" in _titles(rank_figure(fac, 3, max_rank=5))[0]
    assert len(modes_figure(fac, 3).axes) == 12 + 9  # 12 panels, a colour bar per factor and term
    colour = torch.rand(8, 8, 3, generator=torch.Generator().manual_seed(1))
    # colour in C: only the grey B factors get colour bars
    assert len(modes_figure(nkp(colour, (2, 2), rank=2, color="C"), 2).axes) == 8 + 2
    assert len(image_grid([IMAGE, IMAGE, IMAGE], ["a", "b", "c"], ncols=2).axes) == 4


def test_figures_display_themselves_as_png():
    png = factor_shapes_figure(IMAGE, (4, 6))._repr_png_()
    assert png.startswith(b"\x89PNG")


def test_pipeline_and_matrix_pattern_figures():
    from kronlib.viz import Panel, matrix_pattern_figure, pipeline_figure

    kernel = IMAGE[:3, :3] - 0.5
    fig = pipeline_figure(
        [[("x", IMAGE), "∗", Panel("w", kernel, signed=True), "=", ("y", IMAGE)], [("z", IMAGE)]],
        title="t",
    )
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["x", "w", "y", "z"]
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert images[1].get_cmap().name == "RdBu_r" and images[0].get_cmap().name == "gray"
    pattern = matrix_pattern_figure(torch.eye(6), 2, 3)
    assert "16.7% non-zero" in pattern.axes[0].get_title()


def test_composed_kernel_figure_names_the_regime():
    from kronlib.viz import composed_kernel_figure

    w1, w2 = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3)
    titles = [composed_kernel_figure(w1, w2, s).axes[2].get_title() for s in (2, 3, 4)]
    assert "overlap" in titles[0] and "W2 ⊗ W1" in titles[1] and "gaps" in titles[2]
    assert "9×9" in titles[1]


def test_markdown_table():
    table = markdown_table(["a", "b"], [(1, 2.5), ("x", None)])
    assert table.data.splitlines() == ["| a | b |", "|:---|:---|", "| 1 | 2.5 |", "| x | None |"]
    # numeric columns are right-aligned, text columns left-aligned
    table = markdown_table(["layer", "error", "share"], [("conv1", "1.2e-07", "1,024 (15%)")])
    assert table.data.splitlines()[1] == "|:---|---:|---:|"
    assert markdown_table(["n"], [("−0.5",), ("14×14",)]).data.splitlines()[1] == "|---:|"
    with pytest.raises(ValueError, match="each row must have 2 cells, got 1"):
        markdown_table(["a", "b"], [(1,)])


def test_overview_figure_draws_the_kronecker_kernel_and_every_template():
    w1, w2 = torch.randn(4, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    templates = torch.randn(10, 1, 32, 32)
    fig = overview_figure(w1[None, None], w2, templates, templates_title="ten templates")
    kernel_axes = [ax for ax in fig.axes if ax.get_title().startswith("W2 ⊗ W1")]
    assert len(kernel_axes) == 1 and "12×12" in kernel_axes[0].get_title()
    drawn = kernel_axes[0].images[0].get_array()
    assert np.allclose(drawn, torch.kron(w2, w1).numpy())
    assert [ax.get_title() for ax in fig.axes if ax.images][-10:] == [str(k) for k in range(10)]
    assert [sub.get_suptitle() for sub in fig.subfigs][1] == "ten templates"


def test_overview_figure_refuses_what_it_cannot_draw():
    w = torch.randn(3, 3)
    with pytest.raises(ValueError, match="w1 must be one 2-D kernel"):
        overview_figure(torch.randn(2, 1, 3, 3), w, torch.randn(10, 8, 8))
    with pytest.raises(ValueError, match="templates must be"):
        overview_figure(w, w, torch.randn(8, 8))
    with pytest.raises(ValueError, match="one title per template"):
        overview_figure(w, w, torch.randn(3, 8, 8), labels=["a", "b"])


def test_signed_maps_share_one_zero_centred_scale_with_a_colour_bar():
    from kronlib.viz import SIGNED_CMAP, filters_figure, image_grid, signed_bound

    a, b = torch.tensor([[-1.0, 2.0]]), torch.tensor([[0.5, -4.0]])
    assert signed_bound(a, b) == 4.0 and signed_bound(torch.zeros(2, 2)) == 1.0
    fig = image_grid([a, b], ["a", "b"], signed=True, shared_scale=True)
    images = [ax.images[0] for ax in fig.axes if ax.images and ax.get_title()]
    assert all(im.get_clim() == (-4.0, 4.0) for im in images)
    assert all(im.get_cmap().name == SIGNED_CMAP for im in images)
    assert len(fig.axes) == 3  # two panels and one colour bar
    fig = image_grid([a, b], ["a", "b"], signed=[False, True])
    assert len(fig.axes) == 3  # the signed panel has its own colour bar
    fig = filters_figure(torch.stack([a, b]), ["a", "b"], ncols=2)
    assert {ax.images[0].get_clim() for ax in fig.axes if ax.images} == {(-4.0, 4.0)}
    with pytest.raises(ValueError, match="one flag per image"):
        image_grid([a, b], signed=[True])


def test_index_axes_have_integer_ticks():
    from kronlib.spectral import layer_svd
    from kronlib.viz import layer_spectrum_figure, spectra_figure

    fig = spectra_figure({"s": torch.tensor([3.0, 2.0, 1.0, 0.5])})
    ticks = fig.axes[0].get_xticks()
    assert np.allclose(ticks, np.round(ticks))
    fig = layer_spectrum_figure({"w": layer_svd(torch.randn(8, 1, 3, 3))})
    for ax in fig.axes:
        assert np.allclose(ax.get_xticks(), np.round(ax.get_xticks()))


def test_depth_figure_draws_kernels_on_one_pixel_scale():
    from kronlib.viz import depth_width_figure

    kernels = [torch.randn(3, 3), torch.randn(9, 9), torch.randn(27, 27)]
    fig = depth_width_figure(kernels, {1: torch.tensor([1.0, 0.0])})
    panels = [ax for ax in fig.axes if ax.get_title().startswith("depth")]
    spans = [abs(ax.get_xlim()[1] - ax.get_xlim()[0]) for ax in panels]
    assert np.allclose(spans, 27)
    assert "$k^L" in fig.subfigs[0].get_suptitle()  # mathtext, not a literal "k^L"


def test_budget_and_colour_factor_figures():
    from kronlib.kron import errors_at_budget, nkp
    from kronlib.viz import budget_figure, colour_factors_figure

    image = torch.rand(16, 16)
    points = errors_at_budget(image, [(2, 2), (4, 4), (8, 8)], [40, 100])
    fig = budget_figure(points, (16, 16))
    assert fig.axes[0].get_xlabel().startswith("side of the block C")
    colour = torch.rand(8, 8, 3)
    fig = colour_factors_figure(
        {"in B": nkp(colour, (4, 4), color="B"), "in C": nkp(colour, (4, 4), color="C")},
        notes={"in C": "neutral"},
    )
    assert any("neutral" in ax.get_title() for ax in fig.axes)
    assert any("contrast stretched" in ax.get_title() for ax in fig.axes)


def test_pruned_kernels_figure_outlines_each_window_twice():
    from kronlib.viz import pruned_kernels_figure

    kernels = [torch.randn(8, 8), torch.randn(8, 8)]
    fig = pruned_kernels_figure(torch.rand(8, 8), kernels, [(0, 0, 5, 5), (2, 2, 6, 6)], ["a", "b"])
    assert len(fig.axes[0].patches) == 2
    assert [len(ax.patches) for ax in fig.axes[1:] if ax.get_title()] == [1, 1]


def test_composed_kernel_titles_read_as_sentences():
    from kronlib.viz import composed_kernel_figure

    w = torch.randn(1, 1, 3, 3)
    titles = [composed_kernel_figure(w, w, s).axes[2].get_title() for s in (2, 3, 4)]
    assert titles[2].endswith("the copies of W1 leave gaps")
    assert titles[0].endswith("the copies of W1 overlap")


def test_mosaic_tiles_maps_with_zero_gaps():
    from kronlib.viz import mosaic

    maps = torch.arange(1.0, 5.0)[:, None, None].expand(4, 2, 3)
    tiled = mosaic(maps, ncols=2)
    assert tiled.shape == (5, 7)
    assert torch.equal(tiled[:2, :3], torch.ones(2, 3)) and torch.equal(
        tiled[3:, 4:], 4 * torch.ones(2, 3)
    )
    assert float(tiled[2].abs().sum()) == 0 and float(tiled[:, 3].abs().sum()) == 0
    with pytest.raises(ValueError, match="stack must be"):
        mosaic(torch.ones(2, 2))
