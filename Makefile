# vm-system: `make run` starts the server on a local SQLite file; `make test` runs every check.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: install browser sandbox postgres run test lint typecheck bench bench-peers clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium tmux ; }
	@command -v tmux >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq tmux ; }

# bubblewrap, the box `exec` runs programs in (the tests start real boxes).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends bubblewrap ; }

# The local PostgreSQL the tests use (127.0.0.1:5432, user postgres, database test): installed,
# started and configured if it does not answer yet.
postgres:
	@bash .ci/postgres.sh

run: install
	$(BIN)/vm-system serve

lint: install
	$(BIN)/ruff check server tests bench
	$(BIN)/ruff format --check server tests bench

typecheck: install
	$(BIN)/mypy server

test: install browser sandbox postgres lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/run_all.py

# `make bench-peers`: vm-system against a Jupyter server with ipykernel and with the Deno kernel
# (docs/performance.md, "Peers"). The peers live in their own environment, bench/peers/.env: a
# Python venv for Jupyter and an npm prefix for Deno (from the npm registry), rebuilt when the
# pinned versions (bench/peers/requirements.txt, bench/peers/package.json) change. Not in `make test`.
PEERS       := bench/peers/.env
PEERS_STAMP := $(PEERS)/.installed-stamp
$(PEERS_STAMP): bench/peers/requirements.txt bench/peers/package.json
	@command -v npm >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm ; }
	rm -rf $(PEERS)
	$(PYTHON) -m venv $(PEERS)/venv
	$(PEERS)/venv/bin/pip install --quiet --upgrade pip
	$(PEERS)/venv/bin/pip install --quiet -r bench/peers/requirements.txt
	mkdir -p $(PEERS)/npm && cp bench/peers/package.json $(PEERS)/npm/
	npm install --prefix $(PEERS)/npm --no-audit --no-fund --loglevel=error
	HOME=$(abspath $(PEERS))/home $(PEERS)/npm/node_modules/.bin/deno jupyter --install --force
	touch $@

bench-peers: install $(PEERS_STAMP)
	$(BIN)/python bench/peers/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
