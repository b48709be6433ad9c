"""kronlib.widgets: slider figures with a live and a static face."""

import re

import ipywidgets
import pytest
from matplotlib.figure import Figure

from kronlib.widgets import SliderFigure, figure_bytes, widget_mode


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
        ("live", {"text/plain", "application/vnd.jupyter.widget-view+json"}),
        ("both", {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"}),
    ],
)
def test_mimebundle_follows_the_mode(monkeypatch, mode, keys):
    monkeypatch.setenv("KRONLIB_WIDGETS", mode)
    assert widget_mode() == mode
    assert set(SliderFigure(_draw, {"a": [1]})._repr_mimebundle_()) == keys


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
