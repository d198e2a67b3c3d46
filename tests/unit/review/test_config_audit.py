"""The config-flag audit: unknown keys, keys set without effect, changes between runs."""

from __future__ import annotations

from pathlib import Path

from perpsbot.config import BotConfig, load_config
from perpsbot.config.loader import read_toml
from perpsbot.review.config_audit import UNUSED_WHEN, audit_changes, audit_file, audit_run, defaults_for


def recorded(**overrides) -> dict:
    return BotConfig(**overrides).model_dump(mode="json")


def kinds(audit) -> dict[str, str]:
    return {f.key: f.kind for f in audit.findings}


def test_every_rule_names_a_real_setting():
    assert set(UNUSED_WHEN) <= set(BotConfig.model_fields)


def test_a_default_config_has_no_findings():
    assert audit_run("run 1", recorded(), "paper").findings == []
    # every default, as a run records it, reads as "not set"
    assert all(not audit_run("x", {k: v}, "paper").findings for k, v in defaults_for("paper").items())


def test_unknown_keys_and_settings_without_effect():
    config = recorded(time_in_force="IOC", limit_offset_bps=8, coinbase_rest_url="https://example.invalid",
                      night_hours="20:00-07:00", seed=11)
    config["use_new_market_data_service"] = True  # a retired flag in an old run's record
    found = kinds(audit_run("run 2", config, "paper"))
    assert found == {
        "use_new_market_data_service": "unknown",
        "time_in_force": "unused",  # market orders
        "limit_offset_bps": "unused",
        "coinbase_rest_url": "unused",  # the in-process simulator
        "night_hours": "unused",  # no off_hours_max_leverage
    }  # seed is used on the simulator: not listed


def test_the_same_keys_count_when_they_take_effect():
    config = recorded(order_type="limit", time_in_force="IOC", off_hours_max_leverage=2, night_hours="20:00-07:00")
    assert audit_run("run 3", config, "paper").findings == []


def test_profile_defaults_are_not_reported_as_set():
    canary = recorded(profile="canary", reduce_only=True, leverage=1, max_leverage=1, time_in_force="IOC")
    # canary locks time_in_force to IOC: the profile's value, not the user's
    assert "time_in_force" not in kinds(audit_run("run 4", canary, "canary"))


def test_changes_between_runs():
    changes = audit_changes(recorded(), recorded(sim_order_latency_ms=100, interval=0.5))
    assert [(c.key, c.detail) for c in changes] == [
        ("interval", "1.0 -> 0.5"),
        ("sim_order_latency_ms", "0.0 -> 100.0"),
    ]
    assert audit_changes(recorded(), recorded()) == []


def test_a_config_file_audit_uses_the_loaders_sources(tmp_path: Path):
    path = tmp_path / "bot.toml"
    path.write_text('interval = 2\ntime_in_force = "IOC"\nold_flag = true\n')
    raw = read_toml(path)
    loaded = load_config(config_file=None, environ={"PERPSBOT_LIMIT_OFFSET_BPS": "3"},
                         flags={"time_in_force": raw["time_in_force"], "interval": raw["interval"]})
    audit = audit_file(path, raw, loaded)
    found = {f.key: (f.kind, f.detail) for f in audit.findings}
    assert found["old_flag"][0] == "unknown"
    assert found["time_in_force"] == ("unused", "set by flag --time-in-force but read only for limit orders; "
                                                "order_type is market")
    assert found["limit_offset_bps"][1].startswith("set by env PERPSBOT_LIMIT_OFFSET_BPS")
    assert "interval" not in found
