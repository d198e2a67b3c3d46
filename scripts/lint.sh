#!/bin/sh
# The gates `make test` runs before pytest (`make lint`); tests/unit/test_gates.py runs this
# same file on a copy of the project with one violation planted for each gate.
# Every gate runs, so one pass shows all findings; the exit status is 1 if any gate failed.
# BIN: the directory holding ruff, mypy and lint-imports (default: the project's .venv/bin).
cd "$(dirname "$0")/.." || exit 2
BIN=${BIN:-.venv/bin}
status=0

echo "ruff: pycodestyle, pyflakes, bugbear, isort, pyupgrade and bug rules (pyproject.toml [tool.ruff])"
"$BIN/ruff" check --output-format concise src tests scripts benchmarks || status=1

echo "mypy: strict on domain, exchange.port, execution, risk, store (pyproject.toml [tool.mypy])"
"$BIN/mypy" || status=1

echo "type: ignore without a reason (write it as: # type: ignore[code]  # why)"
if grep -rnE --include='*.py' 'type: ?ignore(\[[^]]*\])?[[:space:]]*$' src; then status=1; fi

echo "import layers (pyproject.toml [tool.importlinter])"
PYTHONPATH=src "$BIN/lint-imports" --no-cache --no-logo || status=1

exit $status
