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

.PHONY: setup git-filter report test test-fast lab clean-reports

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
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

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)   # the suite without the tests marked slow (notebooks, training runs)
	$(BIN)/python -m pytest -q -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean-reports:
	rm -rf reports/
