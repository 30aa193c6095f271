VENV ?= .venv
# Test processes (pytest-xdist): most tests wait on real servers, so more than the cores.
TEST_WORKERS ?= 4
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-broker lint format schema bench clean graphiql-assets

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PYTHON) manage.py runstack

# The suite in two halves (the domains, then the rest), each well under ten minutes here.
PYTEST := $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=10

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTEST) $(PYTEST_ARGS) tests/domains
	$(PYTEST) $(PYTEST_ARGS) --ignore=tests/domains

# The tests that run a real worker (marked broker), on the broker CELERY_BROKER_URL names:
# .ci/run gives RabbitMQ.
test-broker: install
	$(PYTEST) $(PYTEST_ARGS) -m broker

lint: install
	$(PYTHON) -m ruff check .

format: install
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

schema: install
	$(PYTHON) manage.py export_schema schema --path schema.graphql

# GraphiQL's page (config/templates/graphiql.html) loads these from this server, not a CDN:
# the versions strawberry's own GraphiQL template pins, from the npm registry. GraphiQL's
# "min" bundle is a development build (3.5 MB): esbuild minifies it (1.5 MB). The source
# map comments are dropped (the maps are not vendored; collectstatic would look for them).
GRAPHIQL_DIR := config/static/graphiql
GRAPHIQL_PACKAGES := graphiql@3.8.3 @graphiql/plugin-explorer@1.0.2 react@18.2.0 react-dom@18.2.0
ESBUILD := esbuild@0.25.0
graphiql-assets:
	rm -rf var/npm && mkdir -p var/npm $(GRAPHIQL_DIR)
	cd var/npm && npm pack --silent $(GRAPHIQL_PACKAGES) >/dev/null \
	  && for f in *.tgz; do mkdir "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}"; done
	npm exec --yes --package=$(ESBUILD) -- esbuild --minify --log-level=error \
	  var/npm/graphiql-3.8.3/package/graphiql.min.js --outfile=$(GRAPHIQL_DIR)/graphiql.min.js
	cp var/npm/graphiql-3.8.3/package/graphiql.min.css $(GRAPHIQL_DIR)/
	cp var/npm/graphiql-plugin-explorer-1.0.2/package/dist/index.umd.js $(GRAPHIQL_DIR)/plugin-explorer.umd.js
	cp var/npm/graphiql-plugin-explorer-1.0.2/package/dist/style.css $(GRAPHIQL_DIR)/plugin-explorer.css
	cp var/npm/react-18.2.0/package/umd/react.production.min.js $(GRAPHIQL_DIR)/
	cp var/npm/react-dom-18.2.0/package/umd/react-dom.production.min.js $(GRAPHIQL_DIR)/
	cp var/npm/graphiql-3.8.3/package/LICENSE $(GRAPHIQL_DIR)/LICENSE.graphiql
	cp var/npm/react-18.2.0/package/LICENSE $(GRAPHIQL_DIR)/LICENSE.react
	sed -i '/sourceMappingURL=/d' $(GRAPHIQL_DIR)/graphiql.min.js $(GRAPHIQL_DIR)/graphiql.min.css
	rm -rf var/npm

bench: install
	$(PYTHON) bench/progress.py
	$(PYTHON) bench/lease.py
	$(PYTHON) bench/transports.py
	$(PYTHON) bench/report.py
	$(PYTHON) bench/images.py
	$(PYTHON) bench/payments.py
	$(PYTHON) bench/crm.py && $(PYTHON) bench/metrics.py

clean:
	rm -rf var .pytest_cache
