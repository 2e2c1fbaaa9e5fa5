# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-fast install bench clean

$(VENV)/.installed: pyproject.toml setup.py scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/zoo demo

test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

bench: install
	$(PY) -m benchmarks.moe_layer

clean:
	rm -rf $(VENV) build *.egg-info
