"""The package's front door: the main functions import from kronlib, the docstring maps it all."""

import pkgutil

import kronlib


def test_the_main_functions_import_from_the_package():
    from kronlib import (  # noqa: F401
        compose,
        conv_matrix,
        effective_kernels,
        kron_kernel,
        kronecker_terms,
        nkp,
        path_terms,
        rearrange,
        unrearrange,
        virtual_matrix,
    )

    for name in kronlib.__all__:
        assert getattr(kronlib, name) is not None


def test_the_package_docstring_names_every_public_module():
    public = [m.name for m in pkgutil.iter_modules(kronlib.__path__) if not m.name.startswith("_")]
    missing = [name for name in public if f"kronlib.{name}" not in kronlib.__doc__]
    assert not missing, f"kronlib's docstring does not map {missing}"


def test_the_api_page_documents_every_public_module():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "book" / "api.md").read_text()
    public = [m.name for m in pkgutil.iter_modules(kronlib.__path__) if not m.name.startswith("_")]
    missing = [name for name in public if f"automodule:: kronlib.{name}" not in page]
    assert not missing, f"book/api.md does not document {missing}"


def test_the_version_lives_in_one_place():
    import importlib.metadata
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    citation = (root / "CITATION.cff").read_text()
    assert not any(line.startswith("version:") for line in citation.splitlines())
    assert importlib.metadata.version("kronlib") == kronlib.__version__


def test_license_and_citation_are_there():
    from pathlib import Path

    root = Path(__file__).parents[1]
    license_text = (root / "LICENSE").read_text()
    assert "MIT License" in license_text and "CC BY 4.0" in license_text
    assert "cff-version:" in (root / "CITATION.cff").read_text()
