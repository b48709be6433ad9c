"""kronlib.widgets: slider figures with a live and a static face."""

import base64
import re

import ipywidgets
import pytest
from matplotlib.figure import Figure

from kronlib.widgets import SliderFigure, figure_bytes, image_size, pad_image, widget_mode


def _draw(a, b="x"):
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title(f"{a}{b}")
    return fig


def test_frames_follow_row_major_slider_order():
    view = SliderFigure(_draw, {"a": [1, 2, 3], "b": ["x", "y"]})
    assert view.num_frames == 6
    frames = view.frames()
    assert len(frames) == 6 and len(set(frames)) == 6
    # frame index = position(a) * len(b) + position(b): the order the page's script uses
    assert frames[1 * 2 + 1] == figure_bytes(_draw(2, "y"), 72)


def test_static_html_embeds_every_frame_and_one_slider_per_control():
    view = SliderFigure(_draw, {"a": [1, 2], "b": ["x", "y", "z"]}, initial={"a": 2, "b": "z"})
    page = view.static_html()
    assert page.count("data:image/png;base64,") == 6 + 1  # the frames, plus the initial <img>
    assert len(re.findall(r'<input type="range"', page)) == 2
    assert 'value="1"' in page and 'value="2"' in page  # the initial positions
    assert "<script>" in page and "<button" not in page


def test_static_html_is_deterministic():
    first = SliderFigure(_draw, {"a": [1, 2]}).static_html()
    assert first == SliderFigure(_draw, {"a": [1, 2]}).static_html()


def test_play_button_and_jpeg_frames():
    view = SliderFigure(_draw, {"a": [1, 2]}, play=True, image_format="jpeg")
    page = view.static_html()
    assert "<button" in page and "data:image/jpeg;base64," in page


def test_live_widget_has_sliders_and_updates_the_image():
    view = SliderFigure(_draw, {"a": [1, 2, 3]}, play=True)
    box = view.widget()
    controls, image = box.children
    player, slider = controls.children
    assert isinstance(player, ipywidgets.Play) and isinstance(slider, ipywidgets.SelectionSlider)
    before = image.value
    slider.value = 2
    assert image.value != before and image.value == view.frame([2])


@pytest.mark.parametrize(
    ("mode", "keys"),
    [
        ("static", {"text/plain", "text/html"}),
        ("live", {"text/plain", "image/png", "application/vnd.jupyter.widget-view+json"}),
        (
            "both",
            {"text/plain", "text/html", "image/png", "application/vnd.jupyter.widget-view+json"},
        ),
    ],
)
def test_mimebundle_follows_the_mode(monkeypatch, mode, keys):
    monkeypatch.setenv("KRONLIB_WIDGETS", mode)
    assert widget_mode() == mode
    assert set(SliderFigure(_draw, {"a": [1]})._repr_mimebundle_()) == keys


def test_live_is_the_default_and_precomputes_nothing(monkeypatch):
    monkeypatch.delenv("KRONLIB_WIDGETS", raising=False)
    assert widget_mode() == "live"
    drawn = []

    def draw(a):
        drawn.append(a)
        return _draw(a)

    view = SliderFigure(draw, {"a": [1, 2, 3, 4]}, initial={"a": 3})
    bundle = view._repr_mimebundle_()
    assert drawn == [3]  # only the picture shown
    assert "text/html" not in bundle
    assert base64.b64decode(bundle["image/png"]) == view.frame([2])


def _sized(a):
    return Figure(figsize=(1 + a, 1 + 2 * a))


def test_live_picture_keeps_its_size_across_frames():
    box = SliderFigure(_sized, {"a": [0, 1]}).widget()
    slider, image = box.children[0].children[0], box.children[1]
    assert (image.layout.width, image.layout.height) == ("72px", "72px")
    assert image.layout.object_fit == "scale-down"
    slider.value = 1  # a larger frame is scaled down into the same area: nothing jumps
    assert (image.layout.width, image.layout.height) == ("72px", "72px")
    assert image.value == SliderFigure(_sized, {"a": [0, 1]}).frame([1])
    slider.value = 0
    assert (image.layout.width, image.layout.height) == ("72px", "72px")


def test_every_layer_of_a_layer_control_has_one_size():
    """Chapter 5's controls step through layers on one grid of tiles (viz.layer_grid)."""
    import torch

    from kronlib.models import LENET5_LAYERS, LeNet5
    from kronlib.viz import effective_kernels_figure, layer_grid
    from kronlib.widgets import figure_bytes, image_size

    torch.manual_seed(0)
    model, x = LeNet5().eval(), torch.rand(1, 32, 32)
    grid = layer_grid(model, x, list(LENET5_LAYERS), ncols=15)
    assert grid == (8, 15)  # fc1's 120 units in rows of 15
    sizes = {
        image_size(
            figure_bytes(effective_kernels_figure(model, x, layer, label="L", grid=grid), 40)
        )
        for layer in LENET5_LAYERS
    }
    assert len(sizes) == 1
    with pytest.raises(ValueError, match="no room for 120 channels"):
        effective_kernels_figure(model, x, "fc1", label="L", grid=(2, 15))
    with pytest.raises(ValueError, match="no layer \\['conv9'\\]"):
        layer_grid(model, x, ["conv9"], ncols=15)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="ncols must be a positive int"):
            layer_grid(model, x, ["conv1"], ncols=bad)


def test_counting_a_layers_channels_changes_nothing():
    import torch

    from kronlib.models import DeepCNN
    from kronlib.viz import layer_grid

    torch.manual_seed(0)
    model = DeepCNN().train()
    model.conv1.eval()  # mixed modes come back as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(1, 32, 32)
    x_before = x.clone()
    assert layer_grid(model, x, ["pool1", "fc"], ncols=16) == (1, 16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and not model.conv1.training and model.bn1.training
    assert torch.equal(x, x_before)


def test_static_frames_share_one_size():
    page = SliderFigure(_sized, {"a": [0, 1, 2]}).static_html()
    sizes = {
        image_size(base64.b64decode(data))
        for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    }
    assert sizes == {(216, 360)}


def test_pad_image_centres_across_and_refuses_what_does_not_fit():
    small = figure_bytes(_sized(0), 72)
    for fmt in ("png", "jpeg"):
        data = figure_bytes(_sized(0), 72, fmt)
        assert image_size(pad_image(data, (100, 90), fmt)) == (100, 90)
    assert pad_image(small, (72, 72)) == small
    with pytest.raises(ValueError, match="does not fit"):
        pad_image(small, (50, 90))


def test_bad_arguments(monkeypatch):
    with pytest.raises(ValueError, match="controls must name at least one parameter"):
        SliderFigure(_draw, {})
    with pytest.raises(ValueError, match=r"controls\['a'\] must hold at least one value"):
        SliderFigure(_draw, {"a": []})
    with pytest.raises(ValueError, match="controls span 6 frames, more than max_frames=5"):
        SliderFigure(_draw, {"a": [1, 2, 3], "b": [1, 2]}, max_frames=5)
    with pytest.raises(ValueError, match=r"initial\['a'\] = 9 is not among \[1, 2\]"):
        SliderFigure(_draw, {"a": [1, 2]}, initial={"a": 9})
    with pytest.raises(ValueError, match=r"initial names unknown parameters \['c'\]"):
        SliderFigure(_draw, {"a": [1, 2]}, initial={"c": 1})
    with pytest.raises(ValueError, match="image_format must be one of"):
        SliderFigure(_draw, {"a": [1]}, image_format="gif")
    with pytest.raises(TypeError, match="draw must return a matplotlib Figure, got str"):
        SliderFigure(lambda a: "nope", {"a": [1]}).frames()
    monkeypatch.setenv("KRONLIB_WIDGETS", "sometimes")
    with pytest.raises(ValueError, match="KRONLIB_WIDGETS must be one of"):
        widget_mode()
