# Two commands from nothing: `make report` (the demo study end to end) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= demo
HERE   := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
# what a JupyterLab save adds to a notebook's metadata besides outputs (the kernel's language details)
NB_VOLATILE := $(addprefix metadata.language_info.,codemirror_mode file_extension mimetype nbconvert_exporter \
               pygments_lexer version)

.PHONY: setup git-filter report lint test test-fast lab docs clean-reports

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[notebook,dev]"   # pyproject.toml: the one list of pinned dependencies
	$(MAKE) --no-print-directory git-filter
	touch $(STAMP)

# Git stores notebooks without outputs: nbstripout as the clean filter that .gitattributes names (cell ids
# kept), so saving a notebook in JupyterLab leaves `git status` clean. Idempotent; the git repository of the
# working directory; nothing outside a git checkout.
git-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  $(HERE)$(BIN)/nbstripout --install --attributes .gitattributes && \
	  git config filter.nbstripout.clean '"$(HERE)$(BIN)/python" -m nbstripout --keep-id' && \
	  git config filter.nbstripout.extrakeys '$(strip $(NB_VOLATILE))'; \
	fi

report: $(STAMP)
	$(BIN)/python -m helpers run --preset $(PRESET)

lint: $(STAMP)   # ruff: the linter and the formatter's check (line length 120, pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)   # the suite without the tests marked slow (notebooks, training runs)
	$(BIN)/python -m pytest -q -m "not slow"

docs: $(STAMP)   # docs/parameters.md and environment.yml, generated from the code and pyproject.toml
	$(BIN)/python -m helpers docs

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean-reports:
	rm -rf reports/
