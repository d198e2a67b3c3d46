"""``perpsbot run`` serves /metrics and /health and says where; a busy port is one line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.test_cli_basics import perpsbot
from tests.integration.test_cli_run import FAST


def test_run_prints_the_urls_and_serves_metrics_and_health(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perpsbot", "run", "--seed", "3", *FAST],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        urls = None
        while time.monotonic() < deadline and urls is None:
            line = proc.stdout.readline()
            urls = re.search(
                r"metrics (http://127\.0\.0\.1:\d+/metrics)  health (http://127\.0\.0\.1:\d+/health)", line
            )
        assert urls, "no metrics URL printed"
        metrics_url, health_url = urls.groups()
        board = re.search(
            r"dashboard (http://127\.0\.0\.1:\d+)/dashboard\?token=TOKEN, TOKEN in (\S+)", proc.stdout.readline()
        )
        assert board, "no dashboard URL printed"
        base, token_file = board.groups()
        deadline = time.monotonic() + 20
        while True:  # a few cycles in, the marks are fresh
            try:
                with urllib.request.urlopen(health_url, timeout=5) as resp:  # 127.0.0.1 only
                    health = json.loads(resp.read())
            except urllib.error.HTTPError as exc:  # 503 while failing (no fresh mark yet on a busy machine)
                health = json.loads(exc.read())
            if health["status"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert health == {"status": "ok", "reasons": []}
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        assert 'perpsbot_mark_updates_total{symbol="BIP-20DEC30-CDE"}' in text
        assert "perpsbot_cycle_seconds_count" in text
        token = (tmp_path / token_file).read_text().strip()
        request = urllib.request.Request(f"{base}/api/state", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert "BIP-20DEC30-CDE" in resp.read().decode()
        request = urllib.request.Request(f"{base}/api/state", headers={"Authorization": "Bearer " + "x" * 43})
        try:
            urllib.request.urlopen(request, timeout=5)
            raise AssertionError("a wrong dashboard token was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_busy_http_port_is_one_clear_line(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = perpsbot("run", "--duration", "1", *FAST, "--set", f"http_port={port}", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert f"http_port {port} on 127.0.0.1 is in use: choose another port, 0 for any free one, or off" in result.stderr
