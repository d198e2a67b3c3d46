"""``perpsbot sim``: the simulator served over Coinbase's API, and API keys for it.

The server, crypto and HTTP modules are imported inside the commands, so that other
``perpsbot`` commands do not pay for them at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpsbot.cli.common import ID_MAX, UserError, console

if TYPE_CHECKING:
    from perpsbot.exchange.sim.server import SimServer

KEY_TYPES = ("ecdsa", "ed25519")
DEFAULT_CERT_DIR = Path("data") / "sim" / "tls"

app = typer.Typer(help="Serve the simulator over Coinbase's Advanced Trade API.", no_args_is_help=True)


@app.command("keys")
def keys(
    out: Annotated[Path, typer.Option("--out", "-o", help="key file to write (JSON, mode 0600)")],
    key_type: Annotated[str, typer.Option("--type", help="ecdsa (ES256) or ed25519 (EdDSA)")] = "ecdsa",
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
) -> None:
    """Create a CDP-style API key file; prints the key's name, never its secret."""
    from perpsbot.exchange.sim.keys import KeyFileError, generate_key, write_key_file

    kind = key_type.lower()
    if kind not in KEY_TYPES:
        raise UserError(f"--type must be one of {', '.join(KEY_TYPES)}, got '{key_type}'")
    key = generate_key(kind)
    try:
        write_key_file(out, key, overwrite=force)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    print(key.name, flush=True)


@app.command("serve")
def serve(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TLS port for REST and WebSocket (0: any free port)")
    ] = 8443,
    plain_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="also serve without TLS on this port (0: any free port)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=ID_MAX, help="simulator seed (markets and faults)")] = 0,
    faults: Annotated[
        str | None, typer.Option(help="e.g. 'rate_limit=0.05,slow=0.05:2.0,ws_disconnect=0.01' (see docs)")
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option("--trust", metavar="KEYFILE", help="key file whose public key may sign requests (repeatable)"),
    ] = None,
    cert_dir: Annotated[Path, typer.Option(help="where the self-signed TLS certificate is kept")] = DEFAULT_CERT_DIR,
) -> None:
    """Serve the simulator on 127.0.0.1 until Ctrl-C."""
    from perpsbot.exchange.sim.faults import Faults, FaultSpecError
    from perpsbot.exchange.sim.keys import KeyFileError, read_key_file
    from perpsbot.exchange.sim.server import SimServer

    try:
        fault_switches = Faults(faults, seed=seed)
    except FaultSpecError as exc:
        raise UserError(f"--faults: {exc}") from None
    try:
        keys = [read_key_file(path) for path in trust or []]
    except KeyFileError as exc:
        raise UserError(f"--trust: {exc}") from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    server = SimServer(seed=seed, port=port, plain_port=plain_port, cert_dir=cert_dir, trust=keys,
                       faults=fault_switches)
    asyncio.run(_serve(server))


async def _serve(server: SimServer) -> None:
    try:
        await server.start()
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        lines = [
            f"perpsbot simulator serving Coinbase Advanced Trade, seed {server.seed}",
            f"  REST + WebSocket (TLS):   {server.rest_url}   {server.ws_url}",
        ]
        if server.plain_port is not None:
            lines.append(f"  REST + WebSocket (plain): {server.plain_rest_url}   {server.plain_ws_url}")
        lines += [
            f"  certificate: {server.cert_path.resolve() if server.cert_path else '-'}"
            "  (trust it with REQUESTS_CA_BUNDLE=<this file>)",
            f"  trusted keys: {', '.join(server.trust.names) or 'none (private endpoints answer 401)'}",
            f"  faults: {server.faults.describe()}",
            "Ctrl-C stops.",
        ]
        # plain prints: these lines are read by scripts (ports), so never wrapped
        print("\n".join(lines), flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    console.print("simulator server stopped")
