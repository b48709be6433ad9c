# The Kronecker book: two commands do everything.
#   make book   create the environment if it is missing, then build the book into _build/html
#   make test   create the environment if it is missing, then lint and run every test
#               (unit + property tests, nbval over every notebook, checks of the built HTML)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
# The environment lives outside the clone (it is ~6 GB), keyed by the hash of requirements.txt, so
# clones and CI runs share it and a change of pins builds a new one.
KRONBOOK_HOME ?= $(HOME)/.cache/kronbook
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-12)
VENV ?= $(KRONBOOK_HOME)/venv-$(REQ_HASH)
BIN := $(VENV)/bin
ENV_STAMP := $(VENV)/.kronbook-complete
# What the pages depend on besides their own sources (jupyter-cache and Sphinx do not see it):
# kronlib, the pins, the book configuration and its Sphinx extension.
CODE_HASH = $(shell cat requirements.txt _config.yml _toc.yml $$(find kronlib book/_ext -name '*.py' | LC_ALL=C sort) | sha256sum | cut -c1-16)
BUILD_STAMP := _build/.kronlib-hash

export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: help env develop book test lint lab clean

help:
	@echo "make book   build the book into _build/html (creates the environment if missing)"
	@echo "make test   lint + unit/property tests + nbval over every notebook"
	@echo "make lab    open the notebooks live in JupyterLab (widgets work there)"
	@echo "make clean  remove _build"
	@echo "environment: $(VENV)"

env: $(ENV_STAMP)

$(ENV_STAMP): requirements.txt
	@echo ">> creating the environment in $(VENV) (first time only; ~6 GB, a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -r requirements.txt
	@touch $(ENV_STAMP)
	@# environments of older pins are dead weight: keep only this one
	@if [ "$(VENV)" = "$(KRONBOOK_HOME)/venv-$(REQ_HASH)" ]; then \
	  find $(KRONBOOK_HOME) -maxdepth 1 -name 'venv-*' ! -name 'venv-$(REQ_HASH)' -exec rm -rf {} +; fi

# kronlib is installed in editable mode; re-pointed when the venv was last used from another clone.
develop: env
	@(cd / && $(BIN)/python -c "import kronlib, pathlib, sys; \
	sys.exit(pathlib.Path(kronlib.__file__).resolve().parent != pathlib.Path('$(CURDIR)/kronlib').resolve())") \
	2>/dev/null || $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .

book: develop
	@if [ "$$(cat $(BUILD_STAMP) 2>/dev/null)" != "$(CODE_HASH)" ]; then \
	  echo ">> kronlib or the pins changed since the last build: executing every notebook afresh"; \
	  rm -rf _build; fi
	@mkdir -p _build && echo "$(CODE_HASH)" > $(BUILD_STAMP).pending
	KRONLIB_WIDGETS=static $(BIN)/jupyter-book build . --warningiserror --keep-going
	@mv $(BUILD_STAMP).pending $(BUILD_STAMP)
	@echo ">> open _build/html/index.html"

lint: develop
	$(BIN)/ruff check kronlib tests benchmarks tools book/_ext

test: lint
	$(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env -p no:cacheprovider

lab: develop
	$(BIN)/jupyter lab book

clean:
	rm -rf _build
