"""``perpsbot sim keys`` and ``perpsbot sim serve`` as a user runs them."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import requests

from perpsbot.exchange.sim.keys import read_key_file, sign_jwt
from perpsbot.exchange.sim.products import default_products

NAME = re.compile(r"^organizations/[0-9a-f-]{36}/apiKeys/[0-9a-f-]{36}$")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    env["COLUMNS"] = "200"
    return env


def perpsbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "perpsbot", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_sim_keys_writes_an_owner_only_cdp_key_file_and_prints_only_the_name(tmp_path: Path):
    for kind in ("ecdsa", "ed25519"):
        out = tmp_path / f"{kind}.json"
        result = perpsbot("sim", "keys", "--type", kind, "--out", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        data = json.loads(out.read_text())
        assert set(data) == {"name", "privateKey"} and NAME.match(data["name"])
        assert result.stdout.strip() == data["name"]
        assert data["privateKey"] not in result.stdout + result.stderr
        if kind == "ecdsa":
            assert data["privateKey"].startswith("-----BEGIN EC PRIVATE KEY-----")
        else:
            assert len(base64.b64decode(data["privateKey"])) == 64
        assert read_key_file(out).kind == kind


def test_sim_keys_mistakes_are_one_line_errors(tmp_path: Path):
    out = tmp_path / "key.json"
    assert perpsbot("sim", "keys", "--out", str(out), cwd=tmp_path).returncode == 0
    again = perpsbot("sim", "keys", "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    wrong = perpsbot("sim", "keys", "--type", "rsa", "--out", str(tmp_path / "x.json"), cwd=tmp_path)
    assert wrong.returncode == 2 and "--type must be one of ecdsa, ed25519" in wrong.stderr
    assert perpsbot("sim", "keys", "--out", str(out), "--force", cwd=tmp_path).returncode == 0


def test_sim_serve_refuses_bad_faults_and_key_files(tmp_path: Path):
    bad = perpsbot("sim", "serve", "--port", "0", "--faults", "meteor=0.1", cwd=tmp_path)
    assert bad.returncode == 2 and "--faults: unknown fault 'meteor'" in bad.stderr
    missing = perpsbot("sim", "serve", "--port", "0", "--trust", "nope.json", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_sim_serve_answers_on_free_ports_and_stops_on_ctrl_c(tmp_path: Path):
    key_file = tmp_path / "key.json"
    assert perpsbot("sim", "keys", "--out", str(key_file), cwd=tmp_path).returncode == 0
    key = read_key_file(key_file)
    proc = subprocess.Popen(
        [sys.executable, "-m", "perpsbot", "sim", "serve", "--port", "0", "--plain-port", "0", "--seed", "3",
         "--trust", str(key_file), "--cert-dir", str(tmp_path / "tls"), "--faults", "slow=0.01:0.01"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("Ctrl-C stops"):
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert ready.wait(30), f"server did not come up: {''.join(lines)}"
        banner = "".join(lines)
        tls_port = int(re.search(r"https://127\.0\.0\.1:(\d+)", banner).group(1))
        plain_port = int(re.search(r"http://127\.0\.0\.1:(\d+)", banner).group(1))
        cert = re.search(r"certificate: (\S+)", banner).group(1)
        assert key.name in banner and "faults: slow=0.01:0.01" in banner
        assert Path(cert).is_file() and Path(cert).parent == tmp_path / "tls"

        public = requests.get(f"http://127.0.0.1:{plain_port}/api/v3/brokerage/market/products", timeout=10)
        assert public.status_code == 200 and public.json()["num_products"] == len(default_products())
        path = "/api/v3/brokerage/accounts"
        token = sign_jwt(key, uri=f"GET 127.0.0.1:{tls_port}{path}")
        private = requests.get(f"https://127.0.0.1:{tls_port}{path}", headers={"Authorization": f"Bearer {token}"},
                               verify=cert, timeout=10)
        assert private.status_code == 200 and private.json()["accounts"][0]["currency"] == "USD"
        assert requests.get(f"https://127.0.0.1:{tls_port}{path}", verify=cert, timeout=10).status_code == 401

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        reader.join(5)
        assert "simulator server stopped" in "".join(lines)
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
