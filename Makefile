# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint ui install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m billing_pipelines.demo

test: $(STAMP)
	$(BIN)/ruff check billing_domain billing_pipelines tests
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

ui: $(STAMP)
	$(BIN)/billing-recon ui

clean:
	rm -rf $(VENV) .billing-stack .dagster_home
