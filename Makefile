# The two set-up commands of the README: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
DEMO_DIR ?= demo
# Real IEMOCAP label headers for the reader tests (the team handbook beside the repository).
export CMARR_HANDBOOK_DIR ?= $(if $(wildcard ../shared/corpora),$(abspath ../shared))

.PHONY: install demo test test-fast bench clean

install:
	$(PYTHON) -m pip install --quiet -e ".[dev]"

demo: install
	bash scripts/demo.sh $(DEMO_DIR)

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

bench: install
	$(PYTHON) bench/store.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
