# Two commands from nothing: `make report` (the demo study end to end) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= demo

.PHONY: setup report test test-fast lab clean-reports

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/python -m helpers run --preset $(PRESET)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)   # the suite without the tests marked slow (notebooks, training runs)
	$(BIN)/python -m pytest -q -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean-reports:
	rm -rf reports/
