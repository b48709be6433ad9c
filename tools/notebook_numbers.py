"""Execute a chapter and print every number it glues into its prose.

    .venv/bin/python tools/notebook_numbers.py book/07_open_questions.ipynb

The chapter runs in a fresh kernel (as the book build and nbval run it), its committed file is not
touched, and each ``glue(name, value)`` that is not a figure is printed as ``name = value``. This
is how closing notes quote a chapter's headline numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def glued_values(path: Path, timeout: int = 900) -> dict[str, str]:
    """``{name: plain-text value}`` of the scalars a notebook glues, after running it."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook", {})
            prefix = record.get("mime_prefix", "")
            data = output.get("data", {})
            if record.get("name") and f"{prefix}image/png" not in data:
                values[record["name"]] = data.get(f"{prefix}text/plain", "")
    return values


def main(argv: list[str] | None = None) -> int:
    """Print ``name = value`` for every glued scalar of the notebook given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    args = parser.parse_args(argv)
    for name, value in glued_values(args.notebook).items():
        print(f"{name} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
