# Two commands on a fresh machine: `make report` and `make test` (each sets up .venv first).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= quick
PORT ?= 8888
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install data browser report test lab gpu clean-venv

# Re-install only when the project's requirements change. pip's -qq prints errors only (a failed install still
# prints pip's error and stops make): a warning about the user's own pip configuration is not this project's.
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV): pip install -e '.[dev]' (minutes the first time)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --upgrade -qq pip
	@$(PY) -m pip install -qq -e '.[dev]'
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $@

install: $(VENV)/.installed

# Fashion-MNIST: found, or installed from Debian's package (root + apt), or downloaded; else says how.
data: install
	@$(PY) -m vitstudy data

# Debian's Chromium for the JupyterLab browser test (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q chromium; \
	  else echo "chromium missing: the browser test will be skipped (sudo apt-get install -y chromium)"; fi; }

report: install data
	@$(PY) -m vitstudy report --scale $(SCALE)

test: install data browser
	$(PY) -m pytest -n auto --dist worksteal --durations=15 $(PYTEST_ARGS)

# The one prepared GPU command (vitstudy.tools.gpu_run): on a machine with its own torch, from the working tree.
gpu:
	PYTHONPATH=. $(PYTHON) -m vitstudy gpu

# Jupyter refuses to start as root (containers, cloud machines) unless told it may; LAB_ARGS adds options
# (e.g. LAB_ARGS=--no-browser).
lab: install data
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port $(PORT) $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

clean-venv:
	rm -rf $(VENV)
