"""Logging for ``perpsbot run``: readable lines on the terminal, JSON lines in a rotated file.

The code logs with stdlib ``logging.getLogger(__name__)`` (fields through ``extra=``);
both handlers format with structlog's ``ProcessorFormatter``, so every record becomes one JSON
object with ``timestamp`` (UTC ISO 8601), ``level``, ``logger``, ``event``, the fields and, for
an error, ``exception``. Secrets are redacted (``perpsbot.redact``) in both outputs before
anything is written, exception text included.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from io import TextIOWrapper
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.logging import RichHandler

from perpsbot.config import BotConfig
from perpsbot.redact import redact_text, redact_value, remember_config_secrets

# Keys every record has; the rest are the record's own fields.
_FIXED = ("timestamp", "level", "logger", "event")
_KEEP = {"timestamp", "level", "logger"}


def redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: the event with every secret replaced (after exceptions are
    rendered into ``exception``, so their text is covered too)."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key in _KEEP:
            out[key] = value
        elif key in ("event", "exception", "stack"):
            out[key] = redact_text(str(value))
        else:
            out[key] = redact_value(value, name=key)
    return out


def _human(_logger: Any, _method: str, event: dict[str, Any]) -> str:
    """The terminal line: the message, then ``key=value`` fields, then the traceback."""
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in _FIXED and k != "exception")
    text = str(event.get("event", "")) + (f"  {fields}" if fields else "")
    if event.get("exception"):
        text += "\n" + str(event["exception"])
    return text


def _pre_chain() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def _formatter(renderer: Any) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_pre_chain(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )


class RateLimitedLog:
    """One log line per ``every`` seconds for a failure that can repeat thousands of times
    a second (out of file descriptors: every accept, every sample fails): the first goes
    out at once, later ones are counted and the next line says how many were left out."""

    def __init__(
        self, logger: logging.Logger, every: float = 30.0, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.every = every
        self._monotonic = monotonic
        self._last: float | None = None
        self.suppressed = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        now = self._monotonic()
        last = self._last
        if last is not None and now - last < self.every:
            self.suppressed += 1
            return
        if self.suppressed and last is not None:  # lines are left out only after one went out
            message += f" ({self.suppressed} more like it in the last {now - last:.0f} s not logged)"
        self.logger.log(level, message, *args)
        self._last, self.suppressed = now, 0


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` whose files are owner-only (0600), like the stores: the
    log tells every order. Each new file (the first and the one after every rotation) is
    created so; rotated files keep the mode by being renamed; older, wider ones are
    tightened when the handler opens."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        for n in range(1, backups + 1):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}.{n}", 0o600)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> TextIOWrapper:  # logging's own hook, called for every new file
        stream = open(  # noqa: SIM115 - the handler owns and closes it
            self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
            opener=lambda name, flags: os.open(name, flags, 0o600),
        )
        os.fchmod(stream.fileno(), 0o600)  # a file that existed keeps its mode through open()
        return stream  # type: ignore[return-value]  # a text mode ("a"): open() gave a TextIOWrapper

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # logging's name
        """A record the file cannot take (a full disk) is said once on stderr, in one line,
        instead of logging's traceback for every record."""
        if not self.failed:
            self.failed = True
            sys.stderr.write(
                f"cannot write the log file {self.baseFilename} ({sys.exc_info()[1]}); "
                "log lines go to the terminal only\n"
            )


def json_file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    """A size-rotated file of JSON lines (``path``, ``path.1`` ... ``path.<backups>``), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = PrivateRotatingFileHandler(path, max_bytes, backups)
    handler.setFormatter(_formatter(structlog.processors.JSONRenderer(sort_keys=False, default=str)))
    return handler


def configure_logging(config: BotConfig, console: Console) -> Path:
    """Send every log record to the terminal (rich) and to the rotated JSON file; returns
    the file's path. Replaces any earlier set-up."""
    remember_config_secrets(config)
    terminal = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    terminal.setFormatter(_formatter(_human))
    path = config.log_path
    handlers = [terminal, json_file_handler(path, config.log_file_max_bytes, config.log_file_backups)]
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(config.log_level)
    return path
