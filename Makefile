# Each target bootstraps .venv on a fresh machine.  torch is pinned through constraints.txt.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_FLAGS ?= -q

.PHONY: venv test test-all reproduce bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The fast suite (CI): excludes tests marked slow.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_FLAGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_FLAGS) -m ""

# The main reproduction: every experiment's full run into results/, the verification table, and the
# README's result blocks.
reproduce: $(STAMP)
	$(BIN)/dynamics run scan-snap-fig4
	$(BIN)/dynamics run scan-snap-fig6
	$(BIN)/dynamics verify || true
	$(BIN)/dynamics readme

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache runs
