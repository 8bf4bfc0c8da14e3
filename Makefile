# Two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test data browser clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned and installed first so pip never pulls a CUDA build. `ofa` (Once-for-All,
# code only: the reference of the OFA-import tests) goes in with --no-deps for the same reason.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps 'ofa==0.1.0.post202307202001'
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST from Debian (only needed for training and full accuracy tables;
# the embedded subset ships inside the package).
data:
	@test -d $(FMNIST) || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "note: could not install dataset-fashion-mnist; training needs --data DIR"

# Debian's chromium and its driver, for the dashboard's browser test
# (tests/test_dashboard_browser.py skips, saying why, when no chromium is installed).
browser:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) \
	  || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
	  || echo "note: could not install chromium and chromium-driver; the dashboard's browser test will skip"

demo: setup
	$(BIN)/superserve demo

test: setup data browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
