"""Telemetry settings and the stream-lag fold into Prometheus buckets."""

from __future__ import annotations

import pytest

from perpsbot.config import BotConfig
from perpsbot.config.diff import ConfigChangeRejected, diff_configs
from perpsbot.config.loader import ConfigError, config_rows, load_config
from perpsbot.market.streaming import LagHistogram
from perpsbot.telemetry.alerts import read_rss_bytes
from perpsbot.telemetry.metrics import LAG_BUCKETS, lag_buckets

HOOK = "https://hooks.example.invalid/services/T0/B0/s3cr3t"


def test_http_port_defaults_to_any_free_port_and_off_turns_the_server_off():
    assert BotConfig().http_port == 0
    assert load_config(environ={"PERPSBOT_HTTP_PORT": "off"}).config.http_port is None
    assert load_config(environ={"PERPSBOT_HTTP_PORT": "9464"}).config.http_port == 9464
    with pytest.raises(ConfigError, match=r"^config error: http_port = '70000' \(env PERPSBOT_HTTP_PORT\)"):
        load_config(environ={"PERPSBOT_HTTP_PORT": "70000"})


def test_http_port_needs_a_restart():
    with pytest.raises(ConfigChangeRejected, match="http_port needs a restart"):
        diff_configs(BotConfig(), BotConfig(http_port=9464))


def test_alert_thresholds_default_to_the_seeds_rules():
    config = BotConfig()
    assert config.alert_mark_stale_seconds == 60
    assert (config.alert_reconnects, config.alert_window_seconds) == (5, 300)
    assert (config.alert_memory_growth_mb_per_hour, config.alert_memory_window_seconds) == (20, 3600)
    assert config.alert_webhook_url is None


def test_the_webhook_url_is_a_secret_never_shown():
    loaded = load_config(environ={"PERPSBOT_ALERT_WEBHOOK_URL": HOOK})
    assert loaded.config.alert_webhook_url.get_secret_value() == HOOK
    assert "s3cr3t" not in repr(loaded.config)
    assert "s3cr3t" not in str(loaded.config.model_dump(mode="json"))
    (row,) = [r for r in config_rows(loaded) if r[0] == "alert_webhook_url"]
    assert row == ("alert_webhook_url", "**********", "env PERPSBOT_ALERT_WEBHOOK_URL")
    with pytest.raises(ConfigError) as bad:
        load_config(environ={"PERPSBOT_ALERT_WEBHOOK_URL": "ftp://s3cr3t"})
    assert str(bad.value) == (
        "config error: alert_webhook_url = '**********' (env PERPSBOT_ALERT_WEBHOOK_URL): "
        "expected an http:// or https:// URL"
    )


def test_the_lag_histogram_folds_into_cumulative_prometheus_buckets():
    lag = LagHistogram()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 20.0):
        lag.record(seconds)
    buckets = dict(lag_buckets(lag))
    assert list(buckets) == [str(b) for b in LAG_BUCKETS] + ["+Inf"]
    assert buckets["0.001"] == 1 and buckets["0.0025"] == 1
    assert buckets["0.005"] == 3 and buckets["0.1"] == 3
    assert buckets["0.25"] == 4 and buckets["10.0"] == 4
    assert buckets["+Inf"] == 5
    assert lag.sum == pytest.approx(20.2065)
    counts = list(buckets.values())
    assert counts == sorted(counts)  # cumulative


def test_the_memory_rule_reads_this_process_resident_memory():
    before = read_rss_bytes()
    ballast = bytearray(64 * 1024 * 1024)  # touched below, so it is resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    after = read_rss_bytes()
    assert before is not None and after is not None
    assert 10 * 1024 * 1024 < before and after - before > 48 * 1024 * 1024
    del ballast
