"""The bot on the Coinbase adapter against a simulator server whose every REST answer is
3 s late (the server's ``slow`` fault): the kill file and ``--duration`` keep their time."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.exchange.sim.keys import generate_key
from perpsbot.exchange.sim.server import SimServer
from perpsbot.risk.manager import kill_file_path
from tests.integration.coinbase.test_bot_on_coinbase import coinbase_config


async def test_kill_file_and_duration_keep_their_time_while_every_answer_is_late(tmp_path: Path):
    key = generate_key("ecdsa")
    async with SimServer(seed=5, trust=[key]) as server:
        config = coinbase_config(
            server, tmp_path, interval=1.0, api_key_name=key.name, api_private_key=key.private_key_text
        )
        bot = await PerpsBotBuilder(config).build()
        try:
            await bot.start()
            server.faults.set("slow", 1.0, 3.0)
            began = time.monotonic()
            runner = asyncio.create_task(bot.run(duration=1.5))
            await asyncio.sleep(0.3)  # the first cycle now waits on the account
            kill_file_path(config).write_text(json.dumps({"reason": "test"}))
            written = time.monotonic()
            while not bot.registry.risk.killed and time.monotonic() - written < 2:
                await asyncio.sleep(0.02)
            assert time.monotonic() - written < 1.0
            await asyncio.wait_for(runner, timeout=3)
            assert time.monotonic() - began < 2.3
        finally:
            server.faults.disable("slow")
            await bot.shutdown()
        assert bot.cycles == 0  # no cycle got past the late answers: what was cut was a cycle waiting on them
