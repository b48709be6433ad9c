"""kronlib.lab: notebooks saved without outputs, outputs kept aside with static fallbacks."""

import asyncio
import base64
import json

import nbformat
import pytest

from kronlib.lab import (
    LAB_ONLY,
    WIDGET_STATE,
    WIDGET_VIEW,
    OutputsAsideContentsManager,
    aside_path,
    keep_kernelspec,
    lab_command,
    merge_outputs,
    static_fallbacks,
    strip_outputs,
)

PNG_FIRST = base64.b64encode(b"first picture").decode()
PNG_LAST = base64.b64encode(b"last picture").decode()


def _run_notebook():
    """A notebook as JupyterLab sends it after Run All: outputs, widget state, expressions."""
    return {
        "cells": [
            {
                "cell_type": "markdown",
                "id": "m1",
                "metadata": {
                    "user_expressions": [
                        {"expression": 'glued("x")', "result": {"status": "ok", "data": {}}}
                    ]
                },
                "source": 'A number: {eval}`glued("x")`.',
            },
            {
                "cell_type": "code",
                "id": "c1",
                "metadata": {"tags": ["hide-input"], "execution": {"iopub.status.busy": "t"}},
                "source": "SliderFigure(draw, {'a': [1, 2]})",
                "execution_count": 3,
                "outputs": [
                    {
                        "output_type": "execute_result",
                        "execution_count": 3,
                        "metadata": {},
                        "data": {
                            "text/plain": "SliderFigure(a: 2; 2 frames)",
                            "image/png": PNG_FIRST,
                            WIDGET_VIEW: {"model_id": "box", "version_major": 2},
                        },
                    }
                ],
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"},
            "widgets": {
                WIDGET_STATE: {
                    "state": {
                        "box": {
                            "model_name": "VBoxModel",
                            "state": {"children": ["IPY_MODEL_img"]},
                        },
                        "img": {
                            "model_name": "ImageModel",
                            "state": {"format": "png"},
                            "buffers": [
                                {"path": ["value"], "data": PNG_LAST, "encoding": "base64"}
                            ],
                        },
                    }
                }
            },
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_strip_outputs_leaves_what_the_repository_keeps():
    clean = strip_outputs(_run_notebook())
    markdown, code = clean["cells"]
    assert markdown["metadata"] == {}
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"] == {"tags": ["hide-input"]}
    assert clean["metadata"]["language_info"] == {"name": "python"}
    assert "widgets" not in clean["metadata"]
    assert clean["metadata"]["kernelspec"]["name"] == "python3"
    assert _run_notebook()["cells"][1]["outputs"]  # the argument is not changed


def test_static_fallbacks_show_the_last_picture_of_each_control():
    result = static_fallbacks(_run_notebook())
    data = result["cells"][1]["outputs"][0]["data"]
    assert WIDGET_VIEW not in data and data["image/png"] == PNG_LAST
    assert "widgets" not in result["metadata"]


def test_static_fallbacks_without_saved_state_keep_the_first_picture():
    notebook = _run_notebook()
    del notebook["metadata"]["widgets"]
    data = static_fallbacks(notebook)["cells"][1]["outputs"][0]["data"]
    assert data["image/png"] == PNG_FIRST and WIDGET_VIEW not in data


def test_merge_outputs_puts_back_only_what_is_unchanged():
    aside = static_fallbacks(_run_notebook())
    disk = strip_outputs(_run_notebook())
    merged = merge_outputs(disk, aside)
    assert merged["cells"][1]["outputs"] == aside["cells"][1]["outputs"]
    assert merged["cells"][0]["metadata"]["user_expressions"]
    disk["cells"][1]["source"] = "SliderFigure(draw, {'a': [1, 2, 3]})"  # edited since
    assert merge_outputs(disk, aside)["cells"][1]["outputs"] == []


def test_contents_manager_saves_without_outputs_and_reopens_with_them(tmp_path):
    # a page of a book: its _toc.yml lists the chapter
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    manager = OutputsAsideContentsManager(root_dir=str(tmp_path))
    notebook = _run_notebook()
    model = {"type": "notebook", "format": "json", "content": notebook}
    asyncio.run(manager.save(model, "chapter.ipynb"))
    on_disk = json.loads((tmp_path / "chapter.ipynb").read_text())
    assert on_disk["cells"][1]["outputs"] == [] and "widgets" not in on_disk["metadata"]
    assert (tmp_path / ".ipynb_checkpoints" / "chapter-outputs.ipynb").is_file()
    assert aside_path(tmp_path / "chapter.ipynb").is_file()
    reopened = asyncio.run(manager.get("chapter.ipynb"))["content"]
    assert isinstance(reopened, nbformat.NotebookNode)
    # first the front matter JupyterLab alone reads (the book's figure numbering), then the cells
    assert reopened.cells[0].metadata[LAB_ONLY] and "numbering:" in reopened.cells[0].source
    assert reopened.cells[2].outputs[0]["data"]["image/png"] == PNG_LAST
    # saving what JupyterLab shows writes the same file: the lab's own cells are never saved
    before = (tmp_path / "chapter.ipynb").read_bytes()
    asyncio.run(manager.save({**model, "content": reopened}, "chapter.ipynb"))
    assert (tmp_path / "chapter.ipynb").read_bytes() == before
    plain = asyncio.run(manager.get("chapter.ipynb", content=False))
    assert plain["content"] is None


def test_lab_command_is_offline_and_writes_its_settings(tmp_path):
    command = lab_command(tmp_path / "book", 8899, tmp_path / ".lab")
    assert "--port=8899" in command
    assert "--ServerApp.contents_manager_class=kronlib.lab.OutputsAsideContentsManager" in command
    overrides = json.loads((tmp_path / ".lab/settings/overrides.json").read_text())
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"] == {"saveState": True}
    assert (tmp_path / ".lab/config/custom/custom.css").is_file()


@pytest.mark.parametrize("bad", ["not json", "[]"])
def test_unreadable_aside_files_are_ignored(tmp_path, bad):
    manager = OutputsAsideContentsManager(root_dir=str(tmp_path))
    model = {"type": "notebook", "format": "json", "content": _run_notebook()}
    asyncio.run(manager.save(model, "c.ipynb"))
    aside_path(tmp_path / "c.ipynb").write_text(bad)
    reopened = asyncio.run(manager.get("c.ipynb"))["content"]
    assert reopened.cells[1].outputs == []


def test_a_notebook_outside_the_book_gets_no_lab_cells(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    manager = OutputsAsideContentsManager(root_dir=str(tmp_path))
    model = {"type": "notebook", "format": "json", "content": _run_notebook()}
    asyncio.run(manager.save(model, "scratch.ipynb"))
    reopened = asyncio.run(manager.get("scratch.ipynb"))["content"]
    assert not any(cell.metadata.get(LAB_ONLY) for cell in reopened.cells)
    assert len(reopened.cells) == len(_run_notebook()["cells"])


def test_the_kernelspec_on_disk_is_kept_for_the_same_kernel():
    disk = {"metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}}}
    sent = {"metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)"}}}
    assert keep_kernelspec(sent, disk)["metadata"]["kernelspec"]["display_name"] == "Python 3"
    other = {"metadata": {"kernelspec": {"name": "julia", "display_name": "Julia"}}}
    assert keep_kernelspec(other, disk) == other
    assert keep_kernelspec(sent, None) == sent
