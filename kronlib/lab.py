"""The notebooks live in JupyterLab (``make lab``), without outputs ever reaching the repository.

JupyterLab saves what a reader ran: megabytes of pictures, and widget displays that only a
running kernel can draw ("Error displaying widget: model not found" once it is gone). Here
saving splits a notebook in two:

* the notebook itself, as the repository keeps it: no outputs, no execution counts, no evaluated
  inline expressions, no widget state (:func:`strip_outputs`), so ``git diff`` shows only what the
  reader edited;
* its outputs, set aside in ``.ipynb_checkpoints/<name>-outputs.ipynb`` beside it (ignored by
  git), with every widget display replaced by its last picture (:func:`static_fallbacks`).

Opening a notebook puts the set-aside outputs back on the cells whose source has not changed
since (:func:`merge_outputs`), so a reopened chapter shows its figures, its numbers and the last
picture of each control as plain images until it runs again.

Opening a chapter also adds what only the book's Sphinx knew (:func:`with_lab_cells`): a first
cell of MyST front matter that numbers its figures from the book's number for its first figure
(``kronlib.prose.figure_numbers``), and below each code cell whose figure has a myst-nb caption,
that caption as a ``{figure}`` with the figure's name, so ``jupyterlab-myst`` numbers it and
resolves ``{numref}`` to it as the book does. These cells are marked in their metadata and left
out when the notebook is saved (:func:`without_lab_cells`).

:class:`OutputsAsideContentsManager` does this inside the Jupyter server; :func:`main` (``python
-m kronlib.lab``, what ``make lab`` runs) starts JupyterLab with it, with MyST rendering, widget
state saved at each save (so the last pictures are known), no network calls, and prints the URL
to open.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "OutputsAsideContentsManager",
    "aside_path",
    "keep_kernelspec",
    "main",
    "merge_outputs",
    "static_fallbacks",
    "strip_outputs",
    "with_lab_cells",
    "without_lab_cells",
]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_CELL_KEYS_DROPPED = ("execution", "user_expressions", "trusted")
_IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
# metadata key of the cells that exist only in JupyterLab (never saved)
LAB_ONLY = "kronlib_lab_only"


def aside_path(notebook: str | os.PathLike) -> Path:
    """Where the outputs of ``notebook`` are kept: ``.ipynb_checkpoints/<name>-outputs.ipynb``."""
    path = Path(notebook)
    return path.parent / ".ipynb_checkpoints" / f"{path.stem}-outputs.ipynb"


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def strip_outputs(notebook: dict) -> dict:
    """A copy of ``notebook`` (nbformat 4 JSON) as the repository keeps it.

    Code cells lose their outputs and execution counts; every cell loses the metadata a session
    adds (``execution`` timings, ``user_expressions`` of MyST inline expressions, ``trusted``);
    the notebook loses its saved widget state, and its ``language_info`` keeps only the name.
    Everything else (sources, ids, tags, other metadata) is kept as it is.
    """
    clean = copy.deepcopy(notebook)
    for cell in clean.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        metadata = cell.get("metadata", {})
        for key in _CELL_KEYS_DROPPED:
            metadata.pop(key, None)
    metadata = clean.get("metadata", {})
    metadata.pop("widgets", None)
    info = metadata.get("language_info")
    if isinstance(info, dict) and "name" in info:
        metadata["language_info"] = {"name": info["name"]}
    return clean


def keep_kernelspec(notebook: dict, previous: dict | None) -> dict:
    """``notebook`` with the kernelspec of ``previous`` (the file as it was) for the same kernel.

    JupyterLab rewrites a notebook's kernelspec from the running kernel ("Python 3" becomes
    "Python 3 (ipykernel)"): a change nobody made, kept out of the file.
    """
    if not previous:
        return notebook
    old = previous.get("metadata", {}).get("kernelspec")
    new = notebook.get("metadata", {}).get("kernelspec")
    if isinstance(old, dict) and isinstance(new, dict) and old.get("name") == new.get("name"):
        notebook = {**notebook, "metadata": {**notebook["metadata"], "kernelspec": old}}
    return notebook


def _widget_states(notebook: dict) -> dict[str, dict]:
    saved = notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {})
    return saved.get("state", {}) if isinstance(saved, dict) else {}


def _last_picture(model_id: str, states: dict[str, dict]) -> tuple[str, str] | None:
    """``(mime type, base64 data)`` of the first image widget inside widget ``model_id``."""
    seen: set[str] = set()
    pending = [model_id]
    while pending:
        current = pending.pop(0)
        if current in seen or current not in states:
            continue
        seen.add(current)
        model = states[current]
        state = model.get("state", {})
        if model.get("model_name") == "ImageModel":
            buffers = [b for b in model.get("buffers", []) if b.get("path") == ["value"]]
            data = buffers[0].get("data") if buffers else state.get("value")
            fmt = _IMAGE_FORMATS.get(str(state.get("format", "png")).lower())
            if isinstance(data, str) and data and fmt:
                return fmt, data
            continue
        for child in state.get("children", []) or []:
            if isinstance(child, str) and child.startswith("IPY_MODEL_"):
                pending.append(child[len("IPY_MODEL_") :])
    return None


def static_fallbacks(notebook: dict) -> dict:
    """A copy of ``notebook`` whose widget displays are plain pictures.

    A display that holds a widget view (a :class:`kronlib.widgets.SliderFigure`, for one) keeps
    its other representations and loses the view, which needs the kernel's model. Its picture
    becomes the widget's last one when the notebook's saved widget state has it (JupyterLab with
    ``saveState``, as :func:`main` sets up), else stays the first one the display carried. The
    saved widget state itself is dropped: it is only read here.
    """
    states = _widget_states(notebook)
    result = copy.deepcopy(notebook)
    result.get("metadata", {}).pop("widgets", None)
    for cell in result.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data")
            if not isinstance(data, dict) or WIDGET_VIEW not in data:
                continue
            view = data.pop(WIDGET_VIEW)
            model_id = view.get("model_id") if isinstance(view, dict) else None
            picture = _last_picture(model_id, states) if model_id else None
            if picture is not None:
                mime, encoded = picture
                for other in _IMAGE_FORMATS.values():
                    data.pop(other, None)
                data[mime] = encoded
            if not any(key.startswith("image/") or key == "text/html" for key in data):
                data["text/plain"] = "(a control: run the cell to use it)"
    return result


def merge_outputs(notebook: dict, aside: dict) -> dict:
    """A copy of ``notebook`` with the outputs of ``aside`` on every cell that is unchanged.

    Cells are matched by id (by position when a notebook has no ids) and must have the same type
    and the same source: an edited cell gets nothing back, as if it had not run.
    """
    result = copy.deepcopy(notebook)
    cells = aside.get("cells", [])
    by_id = {cell.get("id"): cell for cell in cells if cell.get("id")}
    for index, cell in enumerate(result.get("cells", [])):
        old = by_id.get(cell.get("id")) if cell.get("id") else None
        if old is None and not cell.get("id") and index < len(cells):
            old = cells[index]
        if old is None or old.get("cell_type") != cell.get("cell_type"):
            continue
        if _source(old) != _source(cell):
            continue
        if cell.get("cell_type") == "code":
            cell["outputs"] = copy.deepcopy(old.get("outputs", []))
            cell["execution_count"] = old.get("execution_count")
        expressions = old.get("metadata", {}).get("user_expressions")
        if expressions:
            cell.setdefault("metadata", {})["user_expressions"] = copy.deepcopy(expressions)
    return result


def _lab_cell(cell_id: str, source: str) -> dict:
    return {
        "cell_type": "markdown",
        "id": cell_id,
        # JupyterLab keeps these cells as they are: they are not the reader's to edit
        "metadata": {LAB_ONLY: True, "editable": False, "deletable": False},
        "source": source,
    }


def _cell_id(text: str) -> str:
    return "lab-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:60]


def with_lab_cells(notebook: dict, first_figure: int | None = None) -> dict:
    """A copy of ``notebook`` with the cells that give JupyterLab the book's figures.

    * First, MyST front matter (hidden by ``jupyterlab-myst``): figures numbered from
      ``first_figure`` (the book's number of this page's first figure; 1 when ``None``), and
      display equations unnumbered, as in the book.
    * After each code cell whose myst-nb figure the book numbers
      (``kronlib.prose.caption_figure``), its caption as a ``{figure}`` directive carrying the
      figure's name: ``Figure N: caption`` under the picture, and ``{numref}`` resolves to it.

    Each added cell is marked ``metadata.kronlib_lab_only`` (see :func:`without_lab_cells`).
    """
    from kronlib.prose import caption_figure

    result = copy.deepcopy(without_lab_cells(notebook))
    start = 1 if first_figure is None else int(first_figure)
    front = f"---\nnumbering:\n  figure:\n    start: {start}\n  equation: false\n---\n"
    cells = [_lab_cell("lab-front-matter", front)]
    for index, cell in enumerate(result.get("cells", [])):
        cells.append(cell)
        figure = caption_figure(cell)
        if figure is None:
            continue
        name = figure.get("name")
        fence = "````" if "```" in figure["caption"] else "```"
        label = f":name: {name}\n" if name else ""
        source = f"{fence}{{figure}}\n{label}\n{figure['caption'].strip()}\n{fence}"
        cells.append(_lab_cell(_cell_id(f"caption-{name or index}"), source))
    result["cells"] = cells
    return result


def without_lab_cells(notebook: dict) -> dict:
    """A copy of ``notebook`` without the cells :func:`with_lab_cells` added."""
    result = copy.deepcopy(notebook)
    result["cells"] = [
        cell for cell in result.get("cells", []) if not cell.get("metadata", {}).get(LAB_ONLY)
    ]
    return result


def first_figure_number(notebook_path: str | os.PathLike) -> int | None:
    """The book's number of the first figure of ``notebook_path``.

    ``None`` for a notebook that is not a page of the book's ``_toc.yml`` (or when no book is
    found above it).
    """
    from kronlib.prose import book_root, figure_numbers

    path = Path(notebook_path).resolve()
    try:
        root = book_root(path.parent)
        page = path.relative_to(root).with_suffix("").as_posix()
        return figure_numbers(root).first.get(page)
    except (OSError, ValueError):
        return None


def _manager_base() -> type:
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    return AsyncLargeFileManager


class OutputsAsideContentsManager(_manager_base()):  # type: ignore[misc]
    """Jupyter contents manager: notebooks saved without outputs, outputs kept aside.

    Select it with ``--ServerApp.contents_manager_class=kronlib.lab.OutputsAsideContentsManager``.
    Files other than notebooks are handled as by Jupyter's default manager.
    """

    async def save(self, model: dict, path: str = "") -> dict:
        """Write the notebook without outputs; its outputs, with static fallbacks, aside."""
        if model.get("type") == "notebook" and isinstance(model.get("content"), dict):
            content = without_lab_cells(model["content"])
            os_path = Path(self._get_os_path(path.strip("/")))
            try:
                previous = json.loads(os_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            target = aside_path(os_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                json.dumps(static_fallbacks(content), indent=1, sort_keys=True, ensure_ascii=False),
                encoding="utf-8",
            )
            model = {**model, "content": keep_kernelspec(strip_outputs(content), previous)}
        return await super().save(model, path)

    async def get(self, path: str, content: bool = True, type: str | None = None, **kwargs: Any):
        """The notebook as on disk, with the outputs set aside for its unchanged cells.

        A page of the book also gets its figure captions and numbering (:func:`with_lab_cells`).
        """
        model = await super().get(path, content=content, type=type, **kwargs)
        if model.get("type") == "notebook" and content and model.get("content") is not None:
            import nbformat

            os_path = self._get_os_path(path.strip("/"))
            target = aside_path(os_path)
            if target.is_file():
                try:
                    aside = json.loads(target.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    aside = None
                if not isinstance(aside, dict):
                    self.log.warning("kronlib.lab: unreadable outputs in %s, ignored", target)
                else:
                    model["content"] = nbformat.from_dict(merge_outputs(model["content"], aside))
            first = first_figure_number(os_path)
            if first is not None:  # a page of the book (a scratch notebook is left as it is)
                model["content"] = nbformat.from_dict(with_lab_cells(model["content"], first))
        return model


# -- the launcher (make lab) -------------------------------------------------------------------

LAB_SETTINGS = {
    # saved widget state tells which picture each control showed last (static_fallbacks)
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
    # every cell in the page: find-in-page and the browser test see the whole chapter
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    # offline: no news, no update checks
    "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False, "fetchNews": "false"},
}


# jupyterlab-myst draws inline expressions one line high (for spark-lines); a figure pasted into a
# {figure} directive (the book's {glue:figure}) is shown at its own size instead
LAB_CSS = """.myst figure p .lm-Widget img { height: auto; transform: none; }
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lab_command(
    root: Path, port: int, state: Path, *, token: str = "", extra: tuple[str, ...] = ()
) -> list[str]:
    """The ``jupyter lab`` command line of ``make lab`` (the browser test starts the same).

    Args:
        root: the folder served (``book/``).
        port: the port on 127.0.0.1.
        state: where JupyterLab's settings, workspaces and custom CSS for this clone go.
        token: the access token (``""``: none, for a test on loopback).
        extra: further command-line options.
    """
    settings, custom = state / "settings", state / "config" / "custom"
    for folder in (settings, custom):
        folder.mkdir(parents=True, exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(LAB_SETTINGS, indent=1), encoding="utf-8")
    (custom / "custom.css").write_text(LAB_CSS, encoding="utf-8")
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.password=",
        "--ServerApp.contents_manager_class=kronlib.lab.OutputsAsideContentsManager",
        f"--LabApp.app_settings_dir={settings}",
        f"--LabApp.user_settings_dir={state / 'user-settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        "--LabApp.extension_manager=readonly",
        "--LabApp.custom_css=True",  # <JUPYTER_CONFIG_DIR>/custom/custom.css: lab_environment
        "--LabApp.news_url=",
        *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        *extra,
    ]


def lab_environment(state: Path) -> dict[str, str]:
    """The server's environment: live widgets (frames drawn on demand), Jupyter's config here.

    Jupyter's configuration folder is ``state/config`` (where :func:`lab_command` puts the custom
    stylesheet), so this clone's JupyterLab depends on no configuration elsewhere on the machine.
    """
    env = dict(os.environ)
    env["KRONLIB_WIDGETS"] = "live"
    env["JUPYTER_CONFIG_DIR"] = str(state / "config")
    return env


def main(argv: list[str] | None = None) -> int:
    """Start JupyterLab on the book's notebooks and print the URL to open."""
    parser = argparse.ArgumentParser(description="JupyterLab on the book's notebooks")
    parser.add_argument("--root", type=Path, default=Path("book"), help="folder to serve")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--open", default="01_image_factorization.ipynb", help="page to open")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    port = args.port or free_port()
    token = base64.urlsafe_b64encode(os.urandom(18)).decode("ascii")
    state = root.parent / ".lab"
    command = lab_command(root, port, state, token=token)
    url = f"http://127.0.0.1:{port}/lab/tree/{args.open}?token={token}"
    print(f">> JupyterLab on {root} (Ctrl-C to stop)", flush=True)
    print(f">> open {url}", flush=True)
    try:
        return subprocess.call(command, env=lab_environment(state))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
