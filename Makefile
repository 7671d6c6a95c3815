# The two commands of the README: `make run` and `make test`. Both create the virtual
# environment and install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/helpdesk db upgrade
	$(BIN)/helpdesk run

services:
	bash .ci/services

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP) services
	for b in ingest notify webhook scale; do $(BIN)/python bench/$$b.py; done

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
