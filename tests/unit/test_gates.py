"""The gates `make test` runs before pytest fail on what they are there to catch.

A copy of the project gets one violation of each gate planted, and its own `make lint`
(scripts/lint.sh, the very commands `make test` runs) must fail and name each one: a ruff
finding, a mypy error that only the strict packages have, an import against the data flow,
an adapter imported outside the composition root, a ``type: ignore`` without a reason.
Nothing else may be reported, so the tree as it is passes. One run: mypy's cold cache in
the copy is most of its few seconds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent  # the environment these tests run in has the gates' tools
COPIED = ("src", "tests", "scripts", "benchmarks", "pyproject.toml", "Makefile")
CACHES = shutil.ignore_patterns("__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.egg-info")

PLANTED = {
    # an unused import: pyflakes' F401, which nothing but ruff looks at
    "src/perpsbot/domain/planted_ruff.py": '"""Planted."""\n\nimport os\n',
    # a function without annotations: fine at mypy's default level, an error in a strict package
    "src/perpsbot/risk/planted_mypy.py": '"""Planted."""\n\n\ndef untyped(value):\n    return value\n',
    # market reaching to its right, into execution
    "src/perpsbot/market/planted_layers.py": (
        '"""Planted."""\n\nfrom perpsbot.execution import coordinator\n\n__all__ = ["coordinator"]\n'
    ),
    # the simulator adapter imported by a strategy (allowed by the layers, not by the adapters' contract)
    "src/perpsbot/strategy/planted_adapter.py": (
        '"""Planted."""\n\nfrom perpsbot.exchange.sim import SimCore\n\n__all__ = ["SimCore"]\n'
    ),
    # an ignore that mypy accepts but that does not say why
    "src/perpsbot/telemetry/planted_ignore.py": '"""Planted."""\n\nNUMBER: int = "1"  # type: ignore[assignment]\n',
}


def _project_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=CACHES)
        else:
            shutil.copy2(source, copy / name)
    return copy


def _make(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make` in the copy with this environment's tools, never reinstalling them."""
    return subprocess.run(
        ["make", "--no-print-directory", "-o", f"{VENV}/.installed-test", f"VENV={VENV}", *args],
        cwd=copy, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    copy = _project_copy(tmp_path_factory.mktemp("gates"))
    for path, text in PLANTED.items():
        (copy / path).write_text(text)
    return _make(copy, "lint"), copy


def test_make_test_runs_the_gates_before_pytest(tmp_path: Path) -> None:
    steps = _make(_project_copy(tmp_path), "-n", "test").stdout.splitlines()
    lint = next(i for i, line in enumerate(steps) if "scripts/lint.sh" in line)
    tests = next(i for i, line in enumerate(steps) if "-m pytest" in line)
    assert lint < tests


def test_the_gates_fail_on_each_planted_violation_and_on_nothing_else(planted) -> None:
    result, _ = planted
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "src/perpsbot/domain/planted_ruff.py:3:8: F401" in out
    assert "Found 1 error.\n" in out  # ruff: the tree itself is clean
    assert "src/perpsbot/risk/planted_mypy.py:4: error: Function is missing a type annotation" in out
    assert "Found 1 error in 1 file" in out  # mypy: the ignore planted is accepted, nothing else found
    assert "src/perpsbot/telemetry/planted_ignore.py:3:" in out


def test_the_import_contracts_name_the_planted_imports(planted) -> None:
    out = planted[0].stdout
    assert "perpsbot.market.planted_layers -> perpsbot.execution" in out
    assert "perpsbot.strategy.planted_adapter -> perpsbot.exchange.sim" in out
    assert "Contracts: 2 kept, 2 broken." in out  # the two independence contracts hold
