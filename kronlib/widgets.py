"""Slider-driven figures that work both live in Jupyter and in the static HTML book.

A :class:`SliderFigure` wraps a function ``draw(**params) -> Figure`` and the values each parameter
may take. Displayed in a notebook it offers

* a live ipywidgets UI (sliders, and a play button for animations) when a kernel is attached: a
  frame is drawn when a slider first reaches it, never before, and the picture keeps one size
  across the control's frames (it only grows, the first time a larger frame shows); the display
  also carries the first picture as a plain image, the fallback of any front end without the
  widget's model (a notebook reopened after its kernel stopped, a static viewer);
* a self-contained HTML/JavaScript version with every frame precomputed (and padded to one size),
  so a reader of the rendered book can move the same sliders without a kernel.

Which of the two a display carries is set by the environment variable ``KRONLIB_WIDGETS``:
``live`` (default: the widget and its fallback picture, nothing precomputed), ``static`` (what the
book build uses: it has no kernel to talk to) or ``both``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["SliderFigure", "widget_mode"]

_MODES = ("live", "static", "both")


def widget_mode() -> str:
    """The display mode set by ``KRONLIB_WIDGETS``: ``live`` (default), ``static`` or ``both``."""
    mode = os.environ.get("KRONLIB_WIDGETS", "live").strip().lower() or "live"
    if mode not in _MODES:
        raise ValueError(f"KRONLIB_WIDGETS must be one of {list(_MODES)}, got {mode!r}")
    return mode


_FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}


def figure_bytes(fig: Figure, dpi: int, image_format: str = "png") -> bytes:
    """Render a figure to PNG or JPEG bytes, the same bytes on every run."""
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {list(_FORMATS)}, got {image_format!r}")
    buffer = io.BytesIO()
    if image_format == "png":
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    else:
        fig.savefig(buffer, format="jpeg", dpi=dpi, pil_kwargs={"quality": 85})
    return buffer.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels of PNG or JPEG bytes (read from the header only)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


def pad_image(data: bytes, size: tuple[int, int], image_format: str = "png") -> bytes:
    """The picture on a white canvas of ``size`` (centred across, at the top); as is if it fits.

    Args:
        data: PNG or JPEG bytes no larger than ``size``.
        size: ``(width, height)`` of the canvas in pixels.
        image_format: ``"png"`` or ``"jpeg"``, the format of ``data`` and of the result.
    """
    from PIL import Image

    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {list(_FORMATS)}, got {image_format!r}")
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if (width, height) == tuple(size):
            return data
        if width > size[0] or height > size[1]:
            raise ValueError(f"a {width}×{height} picture does not fit a canvas of {size}")
        canvas = Image.new("RGB", tuple(size), "white")
        picture = image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image
        mask = picture if picture.mode == "RGBA" else None
        canvas.paste(picture.convert("RGB"), ((size[0] - width) // 2, 0), mask)
    buffer = io.BytesIO()
    if image_format == "png":
        canvas.save(buffer, format="png")
    else:
        canvas.save(buffer, format="jpeg", quality=85)
    return buffer.getvalue()


class SliderFigure:
    """A figure controlled by one or more sliders, live in Jupyter and static in HTML.

    Args:
        draw: ``draw(**params)`` returns a new :class:`matplotlib.figure.Figure` for one choice of
            the parameters. Build it with ``Figure(...)`` (not ``pyplot``) so nothing else shows.
        controls: parameter name -> the values its slider steps through (in order).
        initial: starting value per parameter (default: each control's first value).
        labels: parameter name -> text shown beside its slider (default: the name).
        play: add a play button that steps the first control (an animation).
        interval_ms: time between frames when playing.
        dpi: resolution of the rendered frames.
        image_format: ``"png"`` (sharp lines) or ``"jpeg"`` (photos: frames several times
            smaller, which matters since the static page embeds every one).
        max_frames: refuse grids of more frames than this (each static frame is embedded).

    Example:
        >>> def draw(k):
        ...     fig = Figure(figsize=(2, 2)); fig.add_subplot().plot(range(k)); return fig
        >>> view = SliderFigure(draw, {"k": [2, 3, 4]})
        >>> view.num_frames
        3

    """

    def __init__(
        self,
        draw: Callable[..., Figure],
        controls: Mapping[str, Sequence[Any]],
        *,
        initial: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        play: bool = False,
        interval_ms: int = 250,
        dpi: int = 72,
        image_format: str = "png",
        max_frames: int = 400,
    ) -> None:
        if image_format not in _FORMATS:
            raise ValueError(f"image_format must be one of {list(_FORMATS)}, got {image_format!r}")
        if not controls:
            raise ValueError("controls must name at least one parameter, got an empty mapping")
        self._draw = draw
        self._names = list(controls)
        self._values = [list(values) for values in controls.values()]
        for name, values in zip(self._names, self._values, strict=True):
            if not values:
                raise ValueError(f"controls[{name!r}] must hold at least one value, got none")
        self.num_frames = 1
        for values in self._values:
            self.num_frames *= len(values)
        if self.num_frames > max_frames:
            raise ValueError(
                f"controls span {self.num_frames} frames, more than max_frames={max_frames}: "
                "offer fewer values per slider or raise max_frames"
            )
        self._labels = {name: (labels or {}).get(name, name) for name in self._names}
        start = dict(initial or {})
        unknown = set(start) - set(self._names)
        if unknown:
            raise ValueError(f"initial names unknown parameters {sorted(unknown)}")
        self._start_index = []
        for name, values in zip(self._names, self._values, strict=True):
            value = start.get(name, values[0])
            if value not in values:
                raise ValueError(f"initial[{name!r}] = {value!r} is not among {values}")
            self._start_index.append(values.index(value))
        self._play = play
        self._interval_ms = interval_ms
        self._dpi = dpi
        self._format = image_format
        self._cache: dict[tuple[int, ...], bytes] = {}

    # -- rendering ---------------------------------------------------------------------------
    def params(self, index: Sequence[int]) -> dict[str, Any]:
        """The parameter values at a tuple of slider positions."""
        pairs = zip(self._names, self._values, index, strict=True)
        return {name: values[i] for name, values, i in pairs}

    def frame(self, index: Sequence[int]) -> bytes:
        """Encoded bytes of the figure at a tuple of slider positions (rendered once)."""
        key = tuple(int(i) for i in index)
        if key not in self._cache:
            fig = self._draw(**self.params(key))
            if not isinstance(fig, Figure):
                raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__}")
            self._cache[key] = figure_bytes(fig, self._dpi, self._format)
        return self._cache[key]

    def frames(self) -> list[bytes]:
        """Every frame, in row-major order of the slider positions (the last control fastest)."""
        grid = itertools.product(*(range(len(values)) for values in self._values))
        return [self.frame(index) for index in grid]

    # -- static HTML ---------------------------------------------------------------------------
    def static_html(self) -> str:
        """A self-contained ``<div>`` with sliders and every frame; works without a kernel."""
        frames = self.frames()
        sizes = [image_size(data) for data in frames]
        canvas = (max(w for w, _ in sizes), max(h for _, h in sizes))
        uris = [
            f"data:{_FORMATS[self._format]};base64,"
            + base64.b64encode(pad_image(data, canvas, self._format)).decode("ascii")
            for data in frames
        ]
        uid = "kronlib-" + hashlib.sha1("".join(uris).encode()).hexdigest()[:12]
        start = 0
        for values, i in zip(self._values, self._start_index, strict=True):
            start = start * len(values) + i
        rows = []
        for k, (name, values) in enumerate(zip(self._names, self._values, strict=True)):
            i = self._start_index[k]
            rows.append(
                f'<label class="kronlib-control">{html.escape(self._labels[name])} '
                f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="{i}" '
                f'data-axis="{k}" aria-label="{html.escape(self._labels[name])}"> '
                f"<output>{html.escape(str(values[i]))}</output></label>"
            )
        if self._play:
            rows.append('<button type="button" class="kronlib-play">▶ play</button>')
        script_data = json.dumps(
            {
                "frames": uris,
                "labels": [[str(v) for v in values] for values in self._values],
                "interval": self._interval_ms,
            }
        )
        return _STATIC_TEMPLATE.format(
            uid=uid,
            controls="\n".join(rows),
            src=uris[start],
            data=script_data,
        )

    # -- live widget ---------------------------------------------------------------------------
    def widget(self) -> Any:
        """The live ipywidgets UI: one slider per control (and a play button if asked)."""
        import ipywidgets as w

        first = self.frame(self._start_index)
        box = image_size(first)
        image = w.Image(
            value=first,
            format=self._format,
            layout=w.Layout(
                width=f"{box[0]}px",
                height=f"{box[1]}px",
                max_width="100%",
                object_fit="scale-down",
                object_position="center top",
            ),
        )
        sliders = [
            w.SelectionSlider(
                options=[(str(v), i) for i, v in enumerate(values)],
                value=self._start_index[k],
                description=self._labels[name],
                continuous_update=True,
                style={"description_width": "initial"},
                layout=w.Layout(width="420px"),
            )
            for k, (name, values) in enumerate(zip(self._names, self._values, strict=True))
        ]

        def refresh(_change: Any = None) -> None:
            # the picture's area keeps the first frame's size: the page never jumps. Draw
            # functions give every frame one size (as the static book pads them to); a larger
            # one would be scaled down to fit, a smaller one sits at the top, centred
            image.value = self.frame([slider.value for slider in sliders])

        for slider in sliders:
            slider.observe(refresh, names="value")
        controls: list[Any] = list(sliders)
        if self._play:
            player = w.Play(
                min=0,
                max=len(self._values[0]) - 1,
                value=self._start_index[0],
                interval=self._interval_ms,
            )
            w.jslink((player, "value"), (sliders[0], "index"))
            controls.insert(0, player)
        return w.VBox([w.HBox(controls, layout=w.Layout(flex_flow="row wrap")), image])

    # -- display protocol ----------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        mode = widget_mode()
        bundle: dict[str, Any] = {}
        if mode in ("both", "live"):
            bundle.update(self.widget()._repr_mimebundle_(include=include, exclude=exclude))
            # the first picture, for a front end without the widget's model (see kronlib.lab)
            first = self.frame(self._start_index)
            bundle[_FORMATS[self._format]] = base64.b64encode(first).decode("ascii")
        if mode in ("both", "static"):
            bundle["text/html"] = self.static_html()
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}: {len(values)}" for name, values in zip(self._names, self._values, strict=True)
        )
        return f"SliderFigure({sizes}; {self.num_frames} frames)"


_STATIC_TEMPLATE = """<div class="kronlib-slider" id="{uid}">
<style>
#{uid} .kronlib-controls {{display:flex; flex-wrap:wrap; gap:0.4em 1.5em; align-items:center;
  font-family:sans-serif; font-size:0.9em; margin-bottom:0.3em}}
#{uid} input[type=range] {{vertical-align:middle; width:14em}}
#{uid} output {{display:inline-block; min-width:3em; font-weight:bold}}
#{uid} img {{max-width:100%; height:auto}}
</style>
<div class="kronlib-controls">
{controls}
</div>
<img class="kronlib-frame" alt="figure controlled by the sliders above" src="{src}">
<script>
(function () {{
  var root = document.getElementById("{uid}");
  var data = {data};
  var inputs = root.querySelectorAll("input[type=range]");
  var outputs = root.querySelectorAll("output");
  var img = root.querySelector("img.kronlib-frame");
  function show() {{
    var index = 0;
    for (var k = 0; k < inputs.length; k++) {{
      var position = parseInt(inputs[k].value, 10);
      index = index * data.labels[k].length + position;
      outputs[k].textContent = data.labels[k][position];
    }}
    img.src = data.frames[index];
  }}
  for (var k = 0; k < inputs.length; k++) {{ inputs[k].addEventListener("input", show); }}
  var button = root.querySelector("button.kronlib-play");
  if (button) {{
    var timer = null;
    button.addEventListener("click", function () {{
      if (timer) {{
        clearInterval(timer); timer = null; button.textContent = "\\u25B6 play"; return;
      }}
      button.textContent = "\\u25AE\\u25AE pause";
      timer = setInterval(function () {{
        var first = inputs[0];
        first.value = (parseInt(first.value, 10) + 1) % data.labels[0].length;
        show();
      }}, data.interval);
    }});
  }}
}})();
</script>
</div>"""
