# The Kronecker book: two commands do everything.
#   make book   create the environment if it is missing, then build the book into _build/html
#   make test   create the environment if it is missing, then lint and run every test
#               (unit + property tests, nbval over every notebook, checks of the built HTML)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
# The environment (see README, "The environment" and tools/kronenv.py): the ~6 GB of locked
# packages live once per lock in $(KRONBOOK_HOME)/base-<hash of requirements.lock>, shared by
# clones and branches; each clone has its own thin .venv over that base, in which `import kronlib`
# is this clone's kronlib/. TORCH=cpu (opt-in) takes PyTorch's CPU-only wheels (~2 GB in all)
# and the clone keeps them until TORCH=pypi.
KRONBOOK_HOME ?= $(HOME)/.cache/kronbook
TORCH ?=
export KRONBOOK_HOME TORCH
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
KRONENV := $(PYTHON) tools/kronenv.py
# What the pages depend on besides their own sources (jupyter-cache and Sphinx do not see it):
# kronlib, the locked environment, the book configuration and its Sphinx extension.
CODE_HASH = $(shell cat requirements.lock _config.yml _toc.yml $$(find kronlib book/_ext -name '*.py' | LC_ALL=C sort) | sha256sum | cut -c1-16)
BUILD_STAMP := _build/.kronlib-hash

export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: help env develop book test lint lab lock clean clean-env

help:
	@echo "make book       build the book into _build/html (creates the environment if missing)"
	@echo "make test       lint + unit/property tests + nbval over every notebook"
	@echo "make lab        the notebooks live in JupyterLab (prints the URL to open)"
	@echo "make lock       regenerate requirements.lock from requirements.txt"
	@echo "make clean      remove _build"
	@echo "make clean-env  remove .venv and the shared environments no clone uses"
	@echo "environment: $(VENV), over $$(cat $(VENV)/kronbook-base 2>/dev/null || echo '(none yet)')"

# Idempotent and quick when nothing changed: checks that the lock matches requirements.txt, creates
# the shared base of requirements.lock if it is missing, (re)makes .venv when it is missing, points
# at another base or another clone, or pyproject.toml changed.
env develop:
	@$(KRONENV) env

book: develop
	@if [ "$$(cat $(BUILD_STAMP) 2>/dev/null)" != "$(CODE_HASH)" ]; then \
	  echo ">> kronlib or the environment changed since the last build: executing every notebook"; \
	  rm -rf _build; fi
	@mkdir -p _build && echo "$(CODE_HASH)" > $(BUILD_STAMP).pending
	KRONLIB_WIDGETS=static $(BIN)/jupyter-book build . --warningiserror --keep-going
	@mv $(BUILD_STAMP).pending $(BUILD_STAMP)
	@echo ">> open _build/html/index.html"

# The notebooks are linted and format-checked too, at 76 columns (book/ruff.toml): fix them with
# `.venv/bin/ruff format book` and `.venv/bin/ruff check --fix book`.
lint: develop
	$(BIN)/ruff check kronlib tests benchmarks tools book
	$(BIN)/ruff format --check book

test: lint
	$(BIN)/python -m pytest tests book --nbval-lax --nbval-current-env -p no:cacheprovider

# JupyterLab on book/ (kronlib.lab): MyST prose with its numbers, live widgets drawn on demand;
# notebooks are saved without outputs (kept aside, for reopening), so git sees only edits.
# Prints the URL to open.
lab: develop
	$(BIN)/python -m kronlib.lab --root book

# Resolves requirements.txt afresh (needs the package index; nothing is installed) and rewrites
# requirements.lock; commit both. The next `make` builds the new lock's base beside the old one.
lock:
	@$(KRONENV) lock

clean:
	rm -rf _build

clean-env:
	@$(KRONENV) clean
