"""Name the book's public repository, for launch buttons and Colab.

    python tools/set_repository.py https://github.com/ORG/REPO   # when the book gets a home
    python tools/set_repository.py --check                        # what the tests run

The URL is written to ``repository.url`` in ``_config.yml`` (the launch buttons — Binder, Colab,
live code — appear once it is set) and into the first cell of every chapter notebook. That cell
does nothing except on Google Colab, where it installs ``kronlib`` with the book's extras from
the repository before anything imports it. It is the one piece of code the notebooks repeat: it
has to run before ``kronlib`` exists. ``--check`` fails when a notebook's first cell is missing
or differs from the cell this script writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
CELL_ID = "colab-setup"
URL_LINE = re.compile(r'^(repository:\n(?:  .*\n)*?  url: )"?([^"\n]*)"?$', re.MULTILINE)
URL_FORM = re.compile(r"^https://(github\.com|gitlab\.com)/[\w.-]+/[\w.-]+$")

SETUP_CELL = '''\
# Google Colab only: install kronlib and the book's packages first.
import sys

REPOSITORY = "{url}"  # written by tools/set_repository.py
if "google.colab" in sys.modules:
    if not REPOSITORY:
        raise RuntimeError("set REPOSITORY to the book's URL and rerun")
    %pip install --quiet "kronlib[book] @ git+{{REPOSITORY}}"'''


def configured_url() -> str:
    """The ``repository.url`` of ``_config.yml`` (``""`` when unset)."""
    match = URL_LINE.search(CONFIG.read_text())
    if match is None:
        raise SystemExit(f"{CONFIG.name}: no `repository:` block with a `url:` line")
    return match.group(2).strip()


def setup_cell(url: str) -> dict:
    """The first cell of every chapter notebook, naming ``url``; hidden in the built book."""
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": CELL_ID,
        "metadata": {"tags": ["remove-cell"]},
        "outputs": [],
        "source": SETUP_CELL.format(url=url).splitlines(keepends=True),
    }


def check() -> list[str]:
    """What is out of date: one line per notebook whose setup cell is missing or differs."""
    expected = setup_cell(configured_url())
    problems = []
    for path in NOTEBOOKS:
        first = json.loads(path.read_text())["cells"][0]
        if first != expected:
            problems.append(f"{path.name}: first cell is not the Colab setup cell for this URL")
    return problems


def write(url: str) -> None:
    """Record ``url`` in ``_config.yml`` and in every notebook's setup cell."""
    if url and not URL_FORM.match(url):
        raise SystemExit(f"URL must look like https://github.com/ORG/REPO; got {url!r}")
    text = CONFIG.read_text()
    CONFIG.write_text(URL_LINE.sub(lambda m: f'{m.group(1)}"{url}"', text, count=1))
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        cells = notebook["cells"]
        if cells and cells[0].get("id") == CELL_ID:
            cells[0] = setup_cell(url)
        else:
            cells.insert(0, setup_cell(url))
        path.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: set the URL, or ``--check`` that the notebooks agree with the config."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="e.g. https://github.com/ORG/REPO ('' unsets it)")
    parser.add_argument("--check", action="store_true", help="only report what is out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        print("\n".join(problems) or "setup cells agree with _config.yml")
        return 1 if problems else 0
    if args.url is None:
        parser.error("give the repository URL, or --check")
    write(args.url.rstrip("/"))
    print(f"repository: {args.url or '(unset)'}; {len(NOTEBOOKS)} notebooks updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
