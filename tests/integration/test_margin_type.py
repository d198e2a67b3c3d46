"""The ``margin_type`` setting: checked against the venue when the bot is built, and sent
on every perpetual's order where the venue takes it (Coinbase's create-order field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import ConfigError, load_config
from perpsbot.config.diff import ConfigChangeRejected, diff_configs
from perpsbot.domain import MarginType
from perpsbot.exchange.sim.keys import generate_key
from perpsbot.exchange.sim.server import SimServer
from tests.integration.coinbase.test_bot_on_coinbase import GoLong, coinbase_config
from tests.integration.test_cli_basics import perpsbot

FUTURE = "BIP-20DEC30-CDE"


def test_margin_type_is_cross_or_isolated_and_needs_a_restart():
    assert load_config(environ={}).config.margin_type is MarginType.ISOLATED
    loaded = load_config(environ={"PERPSBOT_MARGIN_TYPE": "cross"})
    assert loaded.config.margin_type is MarginType.CROSS and loaded.sources["margin_type"] == "env PERPSBOT_MARGIN_TYPE"
    with pytest.raises(ConfigError) as info:
        load_config(environ={"PERPSBOT_MARGIN_TYPE": "portfolio"})
    assert "margin_type = 'portfolio' (env PERPSBOT_MARGIN_TYPE)" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigChangeRejected, match="margin_type needs a restart"):
        diff_configs(loaded.config, load_config(environ={}).config)


def test_a_margin_type_the_simulator_lacks_is_refused_in_one_line(tmp_path: Path):
    result = perpsbot("run", "--duration", "1", "--set", "margin_type=cross", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: margin_type = cross: sim takes no cross margin (only isolated)"
    assert not list((tmp_path / "data").rglob("*.db"))  # refused before any store was opened


@pytest.mark.parametrize(("setting", "on_the_wire"), [("cross", "CROSS"), ("isolated", "ISOLATED")])
async def test_the_margin_type_goes_on_the_wire_with_a_futures_order(tmp_path: Path, setting, on_the_wire):
    key = generate_key("ecdsa")
    async with SimServer(seed=5, trust=[key]) as server:
        config = coinbase_config(server, tmp_path, symbols=(FUTURE,), api_key_name=key.name,
                                 api_private_key=key.private_key_text, margin_type=setting, http_port="off")
        bot = await PerpsBotBuilder(config).with_strategy(GoLong()).build()
        try:
            await bot.start()
            report = await bot.run_cycle()
            assert not report.errors, report.errors
        finally:
            await bot.shutdown()
        placed = [o for o in server.venue.orders() if o.client_order_id.startswith("pb-")]
        assert [(o.spec.symbol, o.spec.margin_type) for o in placed] == [(FUTURE, on_the_wire)]
