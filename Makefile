VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint format schema bench clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PYTHON) manage.py runstack

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest

lint: install
	$(PYTHON) -m ruff check .

format: install
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

schema: install
	$(PYTHON) manage.py export_schema schema --path schema.graphql

bench: install
	$(PYTHON) bench/progress.py
	$(PYTHON) bench/report.py
	$(PYTHON) bench/images.py
	$(PYTHON) bench/payments.py
	$(PYTHON) bench/crm.py && $(PYTHON) bench/metrics.py

clean:
	rm -rf var .pytest_cache
