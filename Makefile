# Everything a fresh machine needs: Python 3.11+ and make. `make run` and `make test`
# create the virtualenv and install the project themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := all

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP)

.PHONY: format
format: $(STAMP)
	$(BIN)/ruff format worker tests bench
	$(BIN)/ruff check --fix worker tests bench

.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench
	$(BIN)/mypy worker

.PHONY: test
test: $(STAMP)
	$(BIN)/pytest

.PHONY: run
run: $(STAMP)
	$(BIN)/segworker demo

.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/import_abc.py
	$(BIN)/python bench/clustering_quality.py

.PHONY: schemas
schemas: $(STAMP)
	$(BIN)/segworker schemas export

# promtool (Debian package `prometheus`) checks the scrape config, the alert rules and
# their unit tests; the offline structure checks run in `make test` without it.
.PHONY: check-deploy
check-deploy:
	cd deploy/prometheus && promtool check config prometheus.yml \
		&& promtool check rules alerts.yml && promtool test rules alerts.test.yml

.PHONY: all
all: lint test

.PHONY: clean
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
