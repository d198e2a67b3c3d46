from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path


def perpsbot(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    clean.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "perpsbot", *args],
        cwd=cwd, env=clean, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_config_show_lists_values_and_their_sources(tmp_path: Path):
    result = perpsbot("config", "show", "--profile", "dev", cwd=tmp_path, env={"PERPSBOT_SEED": "5"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("dry_run" in line and "true" in line and "profile dev" in line for line in lines)
    assert any("seed" in line and "5" in line and "env PERPSBOT_SEED" in line for line in lines)
    assert any("profile" in line and "flag --profile" in line for line in lines)


def test_a_bad_setting_is_one_clear_line_and_no_traceback(tmp_path: Path):
    result = perpsbot("run", "--interval", "-2", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "interval = -2.0 (flag --interval): Input should be greater than 0" in result.stderr
    result = perpsbot("run", "--set", "nonsense", cwd=tmp_path)
    assert result.returncode == 2 and "--set expects KEY=VALUE" in result.stderr
    result = perpsbot("run", "--set", "intervall=3", cwd=tmp_path)
    assert result.returncode == 2 and "unknown setting 'intervall'" in result.stderr


def test_bad_flag_types_are_usage_errors(tmp_path: Path):
    result = perpsbot("run", "--interval", "fast", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Invalid value for '--interval'" in result.stderr


def test_read_commands_before_any_run_say_so(tmp_path: Path):
    for command in ("orders", "positions", "events"):
        result = perpsbot(command, cwd=tmp_path)
        assert result.returncode == 2
        assert "no runs recorded yet for profile 'paper'" in result.stderr
    assert not (tmp_path / "data").exists()


def test_prod_profile_without_credentials_fails_with_one_line_naming_the_missing_keys(tmp_path: Path):
    result = perpsbot("run", "--profile", "prod", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "exchange 'coinbase' needs credentials" in lines[0]
    assert "api_key_name (PERPSBOT_API_KEY_NAME)" in lines[0] and "api_private_key" in lines[0]
    # With a name but no key, only the key is named.
    result = perpsbot(
        "run", "--profile", "prod", cwd=tmp_path, env={"PERPSBOT_API_KEY_NAME": "organizations/o/apiKeys/k"}
    )
    assert result.returncode == 2
    assert "set api_private_key (PERPSBOT_API_PRIVATE_KEY), or api_key_file" in result.stderr
    assert "api_key_name (" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_prod_with_a_malformed_key_fails_at_start_up_without_showing_the_key(tmp_path: Path):
    secret = "-----BEGIN EC PRIVATE KEY-----\nNOTAKEYATALLsecretsecret\n-----END EC PRIVATE KEY-----\n"
    env = {"PERPSBOT_API_KEY_NAME": "organizations/o/apiKeys/k", "PERPSBOT_API_PRIVATE_KEY": secret}
    result = perpsbot("run", "--profile", "prod", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert "api_private_key: not a PEM EC P-256 key or base64 Ed25519 key" in result.stderr
    assert "NOTAKEYATALL" not in result.stderr + result.stdout
    shown = perpsbot("config", "show", "--profile", "prod", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "NOTAKEYATALL" not in shown.stdout
    assert any("api_private_key" in line and "**********" in line and "env PERPSBOT_API_PRIVATE_KEY" in line
               for line in shown.stdout.splitlines())


def test_config_show_masks_the_api_key_name_at_every_terminal_width(tmp_path: Path):
    env = {"PERPSBOT_API_KEY_NAME": "organizations/zq7org/apiKeys/zq7key", "PERPSBOT_API_PRIVATE_KEY": "unused-here"}
    for columns in ("300", "60"):
        shown = perpsbot("config", "show", "--profile", "prod", cwd=tmp_path, env={**env, "COLUMNS": columns})
        assert shown.returncode == 0, shown.stderr
        assert "zq7" not in shown.stdout and "organizations" not in shown.stdout, (columns, shown.stdout)
        row = next(line for line in shown.stdout.splitlines() if "api_key_name" in line)
        assert "*****" in row, (columns, row)


def test_out_of_range_numbers_on_the_command_line_are_usage_errors_not_internal_ones(tmp_path: Path):
    from perpsbot.store import EventStore, OrdersStore

    store = tmp_path / "data" / "paper"
    events, orders = EventStore(store / "events.db"), OrdersStore(store / "orders.db")
    events.start_run(datetime(2026, 1, 1, tzinfo=UTC), "paper", {})
    events.close()
    orders.close()
    for args in (("events", "--limit", "99999999999999999999"), ("orders", "--limit", "99999999999999999999"),
                 ("positions", "--run", "99999999999999999999")):
        result = perpsbot(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
        assert f"Invalid value for '{args[1]}'" in result.stderr, result.stderr
    for args, message in ((("--duration", "1e309"), "duration = inf (flag --duration): must be a finite number"),
                          (("--interval", "nan"), "interval = nan (flag --interval): must be a finite number"),
                          (("--set", "duration=1e309"), "duration = '1e309'"),  # --set is not undone by --duration
                          (("--set", "interval=true"), "interval = 'true'")):
        result = perpsbot("run", *args, cwd=tmp_path, timeout=20)
        assert result.returncode == 2, (args, result.stdout[-500:])
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    for rate in ("nan", "inf", "0"):
        result = perpsbot("data", "download", "BTC-USD", "--start", "2026-01-01", "--end", "2026-01-02",
                          "--rate", rate, "--base-url", "http://127.0.0.1:9", cwd=tmp_path, timeout=20)
        assert result.returncode == 2 and "--rate must be a finite number > 0" in result.stderr, result.stderr


def test_a_command_imports_only_its_own_module_and_help_lists_them_all():
    # A fresh interpreter: which modules `perpsbot backtest` has loaded once its app is built.
    probe = (
        "import sys\n"
        "from perpsbot.cli.main import COMMANDS, build_app\n"
        "from typer.main import get_command\n"
        "group = get_command(build_app(['backtest', '--help']))\n"
        "print(sorted(group.commands))\n"
        "print(sorted(m for m in ('aiohttp', 'perpsbot.exchange.sim.server', 'perpsbot.dashboard.web',\n"
        "      'perpsbot.review.drift', 'perpsbot.cli.run', 'perpsbot.cli.sim') if m in sys.modules))\n"
        "print(sorted(get_command(build_app([])).commands) == sorted(name for name, *_ in COMMANDS))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['backtest']"
    assert out[1] == "[]", f"loaded for a backtest: {out[1]}"
    assert out[2] == "True"


def test_the_command_name_stays_required_with_one_command_loaded(tmp_path: Path):
    # With only `backtest` registered the app must still be a group: `perpsbot --synthetic 5`
    # is not a backtest, and `perpsbot backtest` still parses its own options.
    wrong = perpsbot("--synthetic", "5", cwd=tmp_path)
    assert wrong.returncode == 2 and "No such option" in wrong.stderr
    right = perpsbot("backtest", "--synthetic", "x", cwd=tmp_path)
    assert right.returncode == 2 and "--synthetic expects a number of candles, got 'x'" in right.stderr
