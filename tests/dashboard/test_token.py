"""The dashboard token: a secret config key, or a random one per start in a 0600 file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from perpsbot.config import BotConfig, ConfigError, config_rows, load_config
from perpsbot.config.diff import ConfigChangeRejected, diff_configs
from perpsbot.dashboard import ensure_dashboard_token, token_path
from tests.integration.test_cli_basics import perpsbot

SECRET = "my-dashboard-secret-42"


def test_without_a_configured_token_each_start_writes_a_new_random_one_readable_by_the_owner(tmp_path: Path) -> None:
    config = BotConfig(data_dir=tmp_path)
    first = ensure_dashboard_token(config)
    path = token_path(config)
    assert path == tmp_path / "paper" / "dashboard_token"
    assert path.read_text().strip() == first and len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # widened by hand: the next start narrows it again
    second = ensure_dashboard_token(config)
    assert second != first and path.read_text().strip() == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["dashboard_token"]  # no temporary file left


def test_a_configured_token_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    config = BotConfig(data_dir=tmp_path, dashboard_token=SECRET)
    assert ensure_dashboard_token(config) == SECRET
    assert not token_path(config).exists()


def test_the_token_is_never_shown(tmp_path: Path) -> None:
    loaded = load_config(environ={"PERPSBOT_DASHBOARD_TOKEN": SECRET})
    assert SECRET not in repr(loaded.config) and SECRET not in str(loaded.config)
    assert SECRET not in str(loaded.config.model_dump(mode="json"))  # what a run records of its config
    assert ("dashboard_token", "**********", "env PERPSBOT_DASHBOARD_TOKEN") in config_rows(loaded)
    result = perpsbot("config", "show", cwd=tmp_path, env={"PERPSBOT_DASHBOARD_TOKEN": SECRET})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and any(
        "dashboard_token" in line and "**********" in line for line in result.stdout.splitlines()
    )


@pytest.mark.parametrize("bad", [
    "too-short-token", "has a space in it ok", "ünicode-is-not-ascii-token",
    "plus+and&amp#hash-token",  # would not survive the /dashboard?token= link as it is
])
def test_a_weak_token_is_one_clear_line_that_does_not_echo_it(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"PERPSBOT_DASHBOARD_TOKEN": bad})
    message = str(caught.value)
    assert "\n" not in message and bad not in message
    assert message.startswith("config error: dashboard_token = '**********' (env PERPSBOT_DASHBOARD_TOKEN)")
    assert "at least 16 characters, each a letter, digit, '-', '_', '.' or '~'" in message


def test_the_token_cannot_change_while_the_bot_runs() -> None:
    with pytest.raises(ConfigChangeRejected, match="dashboard_token needs a restart"):
        diff_configs(BotConfig(), BotConfig(dashboard_token=SECRET))
