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

# The demo's runs go to the Dagster instance `make ui` opens, so the UI shows them, their reports and plots.
DAGSTER_HOME_DIR := $(CURDIR)/.dagster_home

$(DAGSTER_HOME_DIR)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME_DIR) && cp dagster.yaml $@

demo: $(STAMP) $(DAGSTER_HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(BIN)/python -m billing_pipelines.demo

# Two pytest-xdist workers (the machine's two cores), each with its own embedded stack; a file's tests stay on one
# worker, so module fixtures are made once. Most of a test's time is waiting on servers, so two overlap well.
test: $(STAMP)
	$(BIN)/ruff check billing_domain billing_cli billing_pipelines billing_api billing_sandbox benchmarks tests
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

# The Dagster UI (webserver + daemon: schedules and sensors run) on the same embedded stack as the demo.
ui: $(STAMP) $(DAGSTER_HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) .billing-stack .dagster_home
