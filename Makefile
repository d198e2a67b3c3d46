PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint install install-test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/perpsbot run --profile paper $(ARGS)

# The dashboard browser test drives Debian's chromium (never a browser download).
# As root it is installed when missing; otherwise this says what to install.
CHROMIUM := /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the dashboard browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ apt-cache show chromium >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium </dev/null; } \
		|| { apt-get update -q </dev/null && apt-get install -y -q --no-install-recommends chromium </dev/null; } \
		|| { echo "could not install chromium with apt-get" >&2; exit 1; }; \
	else \
		echo "the dashboard browser test needs Debian's chromium at $(CHROMIUM): run 'apt-get install chromium' as root"; \
	fi

# ruff, mypy and the import-layer contract; any finding fails `make test` before pytest runs
lint: install-test
	BIN=$(BIN) sh scripts/lint.sh

test: install-test lint browser
	# worksteal: a worker done early takes tests queued for one held up by a long chaos test
	$(BIN)/python -m pytest -q -n 4 --dist worksteal

clean:
	rm -rf $(VENV) build src/*.egg-info
