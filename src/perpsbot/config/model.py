"""``BotConfig``: every setting the bot reads, with its type, default and limits."""

from __future__ import annotations

import enum
import re
import sys
import types
from datetime import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from perpsbot.config.retired import retired_product
from perpsbot.domain import MarginType

SYMBOL_RE = re.compile(r"^[A-Z0-9]+(_[A-Z0-9]+)?-[A-Z0-9]+(-[A-Z0-9]+)?$")


class Profile(str, enum.Enum):
    PAPER = "paper"
    DEV = "dev"
    CANARY = "canary"
    PROD = "prod"


class ExchangeKind(str, enum.Enum):
    SIM = "sim"
    COINBASE = "coinbase"
    GATEWAY = "gateway"  # Global Derivatives on the Deribit-powered JSON-RPC gateway


class OrderTypeSetting(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"


class TifSetting(str, enum.Enum):
    GTC = "GTC"
    IOC = "IOC"


class StreamLevel(str, enum.Enum):
    LEVEL2 = "level2"  # L2 order books + ticker + trades
    TICKER = "ticker"  # ticker (best bid / ask, last) + trades, no book
    OFF = "off"  # no stream: marks by REST polling


class MarkSource(str, enum.Enum):
    MID = "mid"
    LAST = "last"


class HoldingsPolicy(str, enum.Enum):
    REDUCE_ONLY = "reduce_only"  # reported, P1 alert, the symbol reduce-only until explained
    ADOPT = "adopt"  # reported, recorded as ours from then on


DASHBOARD_TOKEN_MIN_LENGTH = 16

# Field metadata of a setting the running bot cannot change (it chooses the exchange, the
# stores, the market, the HTTP port, the log or the run's length, or is checked against the
# venue when the bot is built): ``config set`` and SIGHUP refuse it with "KEY needs a restart".
RESTART: dict[str, Any] = {"restart": True}

PositiveDecimal = Annotated[Decimal, Field(gt=0)]

# Every number a setting takes must survive the float arithmetic of the code that uses it
# (clocks, intervals, prices): a value beyond a float's range would silently become
# infinite, and a tiny one 0. Whole numbers fit SQLite's INTEGER, where runs record them.
FLOAT_LARGEST = Decimal(sys.float_info.max)
FLOAT_SMALLEST = Decimal(sys.float_info.min)  # the smallest normal float
INT_LARGEST = 2**63 - 1


def check_number(value: Any, *, whole: bool = False) -> None:
    """Refuse a boolean, a non-finite number, and one a float (or, ``whole``, SQLite's
    INTEGER) cannot hold. Text that is not a number at all is left to the field's type."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return
    elif isinstance(value, int | float | Decimal):
        number = Decimal(value)
    else:
        return
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if whole and abs(number) > INT_LARGEST:
        raise ValueError(f"is too large: at most {INT_LARGEST}")
    if abs(number) > FLOAT_LARGEST:
        raise ValueError(f"is too large: at most {sys.float_info.max:g}")
    if number and abs(number) < FLOAT_SMALLEST:
        raise ValueError(f"is too small to tell from 0: below {sys.float_info.min:g}")


def _check_symbol(symbol: str) -> None:
    """A product id, and one that still trades."""
    if not SYMBOL_RE.match(symbol):
        raise ValueError(f"'{symbol}' is not a product id like BTC-USD, BIP-20DEC30-CDE or BTC_USDC-PERPETUAL")
    retired = retired_product(symbol)
    if retired is not None:
        raise ValueError(retired)


def _number_type(annotation: Any) -> type | None:
    """int, float or Decimal when a field takes that number (or None), else None."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else None
    return annotation if annotation in (int, float, Decimal) else None


class BotConfig(BaseModel):
    """The effective configuration. Immutable: changes go through ``apply_config_change``."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    profile: Profile = Field(Profile.PAPER, description="paper | dev | canary | prod", json_schema_extra=RESTART)
    exchange: ExchangeKind = Field(
        ExchangeKind.SIM,
        description="sim (built-in simulator) | coinbase (Advanced Trade) | gateway (Global Derivatives, JSON-RPC)",
        json_schema_extra=RESTART,
    )
    symbols: tuple[str, ...] = Field(("BTC-USD", "BIP-20DEC30-CDE"), min_length=1, description="products to trade")
    interval: float = Field(1.0, gt=0, le=3600, description="seconds between cycles")
    duration: float | None = Field(
        None, gt=0, description="stop after this many seconds (none: until Ctrl-C)", json_schema_extra=RESTART
    )
    seed: int = Field(7, ge=0, description="simulator seed", json_schema_extra=RESTART)
    data_dir: Path = Field(
        Path("data"), description="root folder of the stores; one subfolder per profile", json_schema_extra=RESTART
    )

    dry_run: bool = Field(False, description="record decisions, place no orders")
    reduce_only: bool = Field(False, description="only orders that shrink a position")
    enable_shorts: bool = Field(True, description="allow opening short positions")

    bar_seconds: int = Field(5, ge=1, le=86400, description="bar length for the strategy")
    short_window: int = Field(5, ge=1, le=1000, description="fast moving average, in bars")
    long_window: int = Field(20, ge=2, le=5000, description="slow moving average, in bars")
    trailing_stop_pct: Decimal = Field(
        Decimal("0.01"), ge=0, lt=1, description="trailing stop distance (0: no trailing stop)"
    )

    strategy: str = Field(
        "ma_crossover",
        min_length=1,
        description="built-in name, entry point, path/to/file.py:Class or package.module:Class",
        json_schema_extra=RESTART,  # a running bot changes its strategy's parameters, never the strategy
    )
    strategy_params: dict[str, str] = Field(
        default_factory=dict, description="the strategy's parameters, NAME=VALUE pairs, comma-separated"
    )
    strategy_budget_ms: float = Field(
        250.0, ge=0, le=60_000, description="time a strategy may take per decision (0: no limit; backtests: none)"
    )

    position_fraction: Decimal = Field(Decimal("0.1"), gt=0, le=1, description="share of equity per position")
    leverage: Decimal = Field(Decimal(1), ge=1, le=100, description="leverage requested on perp orders")
    margin_type: MarginType = Field(
        MarginType.ISOLATED,
        description="how perp positions are margined: isolated | cross (where the venue has both; checked at start)",
        json_schema_extra=RESTART,
    )
    max_leverage: Decimal = Field(
        Decimal(3), ge=1, le=100, description="cap on requested leverage and on total notional / equity"
    )
    symbol_max_leverage: dict[str, Decimal] = Field(
        default_factory=dict, description="tighter leverage caps per symbol, SYMBOL=N,..."
    )
    off_hours_max_leverage: Decimal | None = Field(
        None, ge=1, le=100, description="leverage cap at night and on weekends (none: no change)"
    )
    off_hours_timezone: str = Field("UTC", description="IANA zone for night_hours and weekends")
    night_hours: str = Field("22:00-06:00", description="HH:MM-HH:MM in off_hours_timezone ('' for none)")
    weekend_off_hours: bool = Field(True, description="Saturday and Sunday count as off hours")
    max_position_notional: PositiveDecimal = Field(Decimal(50_000), description="cap per symbol, USD")
    symbol_max_notional: dict[str, Decimal] = Field(
        default_factory=dict, description="notional caps per symbol, SYMBOL=USD,..."
    )
    max_position_equity_share: Decimal = Field(
        Decimal(2), gt=0, le=100, description="cap per symbol as a multiple of equity"
    )
    max_total_notional: PositiveDecimal = Field(Decimal(150_000), description="cap on all positions together, USD")
    symbol_max_quantity: dict[str, Decimal] = Field(
        default_factory=dict, description="position size caps per symbol in base units, SYMBOL=N,..."
    )
    max_order_notional: PositiveDecimal = Field(Decimal(25_000), description="largest single order, USD")
    max_slippage_bps: Decimal = Field(
        Decimal(30), gt=0, le=10_000, description="expected fill from the book vs mark, bps"
    )
    min_liquidation_distance_pct: Decimal = Field(
        Decimal("0.05"), ge=0, lt=1, description="liquidation price at least this far from the mark"
    )
    mark_warn_seconds: float = Field(3.0, gt=0, description="marks older than this raise a warning")
    mark_staleness_seconds: float = Field(10.0, gt=0, description="marks older than this block new exposure")
    stream_level: StreamLevel = Field(
        StreamLevel.LEVEL2,
        description="market stream, where the exchange has one: level2 (books + ticker + trades) | ticker | off",
    )
    mark_source: MarkSource = Field(
        MarkSource.MID, description="streamed marks: mid (book or ticker best bid/ask) | last (last trade)"
    )
    stream_quiet_seconds: float = Field(
        5.0, gt=0, le=300, description="a stream silent this long is replaced; marks are polled meanwhile"
    )
    reconcile_every_seconds: float = Field(
        60.0, gt=0, le=86_400, description="how often open orders, fills and positions are checked against the exchange"
    )
    order_timeout_seconds: float = Field(
        10.0, gt=0, le=300,
        description="wait for an order placement's answer (and for its lookup by id after a failure) this long",
    )
    adopt_foreign_orders: bool = Field(
        False, description="take over open orders we did not place (else they are reported and left alone)"
    )
    late_acceptance_seconds: float = Field(
        180.0, gt=0, le=3_600,
        description="an order of unknown fate is taken as absent only when the exchange still does not list it this "
        "long after it was sent (its symbol is blocked meanwhile); Advanced Trade: 180 (a request's JWT lives 120 s)",
    )
    unexplained_holdings: HoldingsPolicy = Field(
        HoldingsPolicy.REDUCE_ONLY,
        description="a position or balance our fills do not explain: reduce_only (the symbol, with a P1 alert, until "
        "explained) | adopt (taken as ours from then on, recorded)",
    )
    daily_loss_limit: PositiveDecimal = Field(
        Decimal(5_000), description="USD lost since UTC midnight before reduce-only"
    )
    max_drawdown_pct: Decimal = Field(
        Decimal("0.10"), gt=0, lt=1, description="drawdown from the equity peak before reduce-only"
    )
    kill_drawdown_pct: Decimal = Field(
        Decimal("0.20"), gt=0, lt=1, description="drawdown from the equity peak before kill"
    )
    vol_window: int = Field(30, ge=5, le=10_000, description="bars in the realized-volatility window")
    vol_warn: Decimal = Field(Decimal("2.5"), gt=0, description="annualized realized volatility that warns")
    vol_reduce_only: Decimal = Field(Decimal(5), gt=0, description="annualized realized volatility for reduce-only")
    vol_kill: Decimal = Field(Decimal(10), gt=0, description="annualized realized volatility that kills")
    vol_cooldown_seconds: float = Field(300.0, ge=0, description="calm time before a volatility level clears")
    error_streak_limit: int = Field(5, ge=1, description="consecutive order failures before a cooldown")
    error_cooldown_seconds: float = Field(60.0, ge=0, description="pause on new exposure after an error streak")
    max_orders_per_minute: int = Field(30, ge=1, description="order rate limit")
    kill_switch: bool = Field(False, description="refuse every order (kill)")
    order_type: OrderTypeSetting = Field(OrderTypeSetting.MARKET, description="market | limit")
    time_in_force: TifSetting = Field(TifSetting.GTC, description="for limit orders: GTC | IOC")
    limit_offset_bps: Decimal = Field(Decimal(5), ge=0, le=1000, description="limit price distance past the mark")

    sim_starting_cash: PositiveDecimal = Field(
        Decimal(100_000), description="simulator USD balance", json_schema_extra=RESTART
    )
    sim_order_latency_ms: float = Field(
        0.0, ge=0, le=60_000, description="built-in simulator: delay added to every order placement, ms",
        json_schema_extra=RESTART,
    )

    api_key_name: str | None = Field(
        None, description="CDP API key name (organizations/.../apiKeys/...)", json_schema_extra=RESTART
    )
    api_private_key: SecretStr | None = Field(
        None, description="CDP API private key: PEM EC P-256 or base64 Ed25519 (never shown)",
        json_schema_extra=RESTART,
    )
    api_key_file: Path | None = Field(
        None, description="CDP key file, JSON {name, privateKey}, mode 0600", json_schema_extra=RESTART
    )
    coinbase_rest_url: str = Field(
        "https://api.coinbase.com", pattern=r"^https?://[^\s/]+(/.*)?$", description="Coinbase REST base URL",
        json_schema_extra=RESTART,
    )
    coinbase_ws_url: str = Field(
        "wss://advanced-trade-ws.coinbase.com", pattern=r"^wss?://[^\s/]+(/.*)?$",
        description="Coinbase market data websocket", json_schema_extra=RESTART,
    )
    coinbase_ws_user_url: str = Field(
        "wss://advanced-trade-ws-user.coinbase.com", pattern=r"^wss?://[^\s/]+(/.*)?$",
        description="Coinbase user data websocket", json_schema_extra=RESTART,
    )
    gateway_http_url: str = Field(
        "https://drb.coinbase.com/api/v2", pattern=r"^https?://[^\s/]+(/.*)?$",
        description="Global Derivatives gateway JSON-RPC over HTTP (the fallback)", json_schema_extra=RESTART,
    )
    gateway_ws_url: str = Field(
        "wss://drb.coinbase.com/ws/api/v2", pattern=r"^wss?://[^\s/]+(/.*)?$",
        description="Global Derivatives gateway JSON-RPC websocket (orders, account)", json_schema_extra=RESTART,
    )
    gateway_stream_url: str = Field(
        "wss://streams.drb.coinbase.com/ws/api/v2", pattern=r"^wss?://[^\s/]+(/.*)?$",
        description="Global Derivatives gateway market data websocket", json_schema_extra=RESTART,
    )
    ca_bundle: Path | None = Field(
        None, description="extra CA certificates for TLS (e.g. the simulator server's)", json_schema_extra=RESTART
    )

    dashboard_token: SecretStr | None = Field(
        None,
        description="token for the web dashboard, 16+ of A-Z a-z 0-9 - _ . ~ (none: a random one per start, "
        "written to <store>/dashboard_token; never shown)",
        json_schema_extra=RESTART,
    )

    log_level: str = Field(
        "INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="DEBUG | INFO | WARNING | ERROR",
        json_schema_extra=RESTART,
    )
    log_file: Path | None = Field(
        None, description="JSON lines log of `perpsbot run` (none: <data_dir>/<profile>/logs/perpsbot.jsonl)",
        json_schema_extra=RESTART,
    )
    log_file_max_bytes: int = Field(
        10_000_000, ge=10_000, le=10_000_000_000, description="the JSON log rotates when it reaches this size",
        json_schema_extra=RESTART,
    )
    log_file_backups: int = Field(
        5, ge=1, le=1000, description="rotated JSON logs kept (perpsbot.jsonl.1 ...)", json_schema_extra=RESTART
    )

    backup_every_minutes: float = Field(
        0.0, ge=0, le=525_600, description="back up the stores this often while the bot runs (0: off, else at least 1)",
        json_schema_extra=RESTART,
    )
    backup_dir: Path | None = Field(None, description="where backups go (none: <data_dir>/<profile>/backups)")
    backup_keep: int = Field(48, ge=0, le=100_000, description="keep the newest N backups (0: no count limit)")
    backup_max_age_days: float = Field(
        30.0, ge=0, le=36_500, description="delete backups older than this (0: no age limit); the newest is always kept"
    )

    http_port: int | None = Field(
        0, ge=0, le=65535,
        description="port of the /metrics and /health server on 127.0.0.1 (0: any free port; off: no server)",
        json_schema_extra=RESTART,
    )
    alert_mark_stale_seconds: float = Field(60.0, gt=0, description="P1 alert: a symbol without a fresh mark this long")
    alert_reconnects: int = Field(
        5, ge=1, description="P2 alert: more market stream reconnects than this within alert_window_seconds"
    )
    alert_window_seconds: float = Field(
        300.0, gt=0, le=86_400, description="window of the reconnect and order failure alert rules"
    )
    alert_order_failure_rate: float = Field(
        0.2, gt=0, le=1, description="P2 alert: share of orders failing within alert_window_seconds above this"
    )
    alert_order_min_orders: int = Field(5, ge=1, description="orders in the window before their failure rate counts")
    alert_memory_growth_mb_per_hour: float = Field(
        20.0, gt=0, description="P2 alert: resident memory growing faster than this, MB per hour"
    )
    alert_memory_window_seconds: float = Field(
        3600.0, ge=60, le=7 * 86_400, description="how long memory growth must be sustained before it alerts"
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="Slack-compatible webhook that receives alerts, http(s)://... (a secret: never shown)"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, value: object, info: ValidationInfo) -> object:
        """Every numeric setting, whatever layer it came from: strict about booleans (TOML
        ``true`` is not 1) and about range (see ``check_number``)."""
        kind = _number_type(cls.model_fields[info.field_name].annotation) if info.field_name else None
        if kind is not None:
            check_number(value, whole=kind is int)
        return value

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            cleaned = tuple(str(s).strip().upper() for s in value)
            for symbol in cleaned:
                _check_symbol(symbol)
            if len(set(cleaned)) != len(cleaned):
                raise ValueError("symbols are listed twice")
            return cleaned
        return value

    @field_validator("symbol_max_leverage", "symbol_max_notional", "symbol_max_quantity", mode="before")
    @classmethod
    def _per_symbol(cls, value: object) -> object:
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in value.split(","))):
                symbol, sep, number = part.partition("=")
                if not sep:
                    raise ValueError(f"expected SYMBOL=NUMBER pairs, got '{part}'")
                pairs[symbol.strip().upper()] = number.strip()
            value = pairs
        if isinstance(value, dict):
            for symbol, number in value.items():
                _check_symbol(str(symbol))
                try:
                    check_number(number)
                except ValueError as exc:
                    raise ValueError(f"{symbol}: '{number}' {exc}") from None
                try:
                    positive = Decimal(str(number)) > 0
                except ArithmeticError:
                    positive = False
                if not positive:
                    raise ValueError(f"{symbol}: '{number}' is not a positive number")
        return value

    @field_validator("strategy_params", mode="before")
    @classmethod
    def _strategy_params(cls, value: object) -> object:
        if isinstance(value, str):
            value = parse_pairs(value)
        if isinstance(value, dict):
            value = {str(k).strip(): _param_text(v) for k, v in value.items()}
            for name in value:
                if not name.isidentifier():
                    raise ValueError(f"'{name}' is not a parameter name")
        return value

    @field_validator("http_port", mode="before")
    @classmethod
    def _port_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("off", "none", ""):
            return None
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", value.get_secret_value().strip()):
            raise ValueError("expected an http:// or https:// URL")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("backup_every_minutes")
    @classmethod
    def _backup_period(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (off) or at least 1 minute: a backup copies both stores")
        return value

    @field_validator("dashboard_token")
    @classmethod
    def _dashboard_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        # Only characters a URL carries as they are: the token goes into /dashboard?token=...
        if len(token) < DASHBOARD_TOKEN_MIN_LENGTH or not re.fullmatch(r"[A-Za-z0-9._~-]+", token):
            raise ValueError(
                f"must be at least {DASHBOARD_TOKEN_MIN_LENGTH} characters, each a letter, digit, '-', '_', '.' or '~'"
            )
        return value

    @field_validator("off_hours_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone like UTC or America/New_York") from None
        return value

    @field_validator("night_hours")
    @classmethod
    def _night(cls, value: str) -> str:
        if value and parse_hours(value) is None:
            raise ValueError(f"'{value}' is not HH:MM-HH:MM")
        return value

    @model_validator(mode="after")
    def _windows_and_leverage(self) -> BotConfig:
        if self.short_window >= self.long_window:
            raise ValueError(
                f"short_window ({self.short_window}) must be smaller than long_window ({self.long_window})"
            )
        if self.leverage > self.max_leverage:
            raise ValueError(f"leverage ({self.leverage}) must not exceed max_leverage ({self.max_leverage})")
        if self.kill_drawdown_pct <= self.max_drawdown_pct:
            raise ValueError(
                f"kill_drawdown_pct ({self.kill_drawdown_pct}) must be above max_drawdown_pct ({self.max_drawdown_pct})"
            )
        if not self.vol_warn < self.vol_reduce_only < self.vol_kill:
            raise ValueError("volatility levels must rise: vol_warn < vol_reduce_only < vol_kill")
        if self.mark_warn_seconds >= self.mark_staleness_seconds:
            raise ValueError(
                f"mark_warn_seconds ({self.mark_warn_seconds}) must be below "
                f"mark_staleness_seconds ({self.mark_staleness_seconds})"
            )
        if self.exchange in (ExchangeKind.COINBASE, ExchangeKind.GATEWAY):
            self._require_credentials()
        if self.profile is Profile.CANARY:
            for key, locked in CANARY_LOCKS.items():
                if getattr(self, key) != locked:
                    raise ValueError(
                        f"the canary profile locks {key} = {_show(locked)}; got {_show(getattr(self, key))}"
                    )
        return self

    def _require_credentials(self) -> None:
        if self.api_key_file is not None:
            return
        has_secret = self.api_private_key is not None and bool(self.api_private_key.get_secret_value().strip())
        missing = [
            key for key, present in (("api_key_name", bool(self.api_key_name)), ("api_private_key", has_secret))
            if not present
        ]
        if missing:
            names = " and ".join(f"{key} (PERPSBOT_{key.upper()})" for key in missing)
            raise ValueError(f"exchange '{self.exchange.value}' needs credentials: set {names}, or api_key_file")

    @property
    def store_dir(self) -> Path:
        return self.data_dir / self.profile.value

    @property
    def log_path(self) -> Path:
        return self.log_file if self.log_file is not None else self.store_dir / "logs" / "perpsbot.jsonl"

    @property
    def backup_path(self) -> Path:
        return self.backup_dir if self.backup_dir is not None else self.store_dir / "backups"

    @property
    def required_bars(self) -> int:
        return self.long_window + 1


def parse_pairs(text: str) -> dict[str, str]:
    """``"a=1, b=x"`` as ``{"a": "1", "b": "x"}``."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=VALUE pairs, got '{part}'")
        pairs[name.strip()] = value.strip()
    return pairs


def _param_text(value: object) -> str:
    """A parameter value from TOML as the text the strategy parses (true, not True)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_hours(value: str) -> tuple[time, time] | None:
    """'22:00-06:00' -> (22:00, 06:00); None when malformed."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", value.strip())
    if not match:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        return None
    return time(h1, m1), time(h2, m2)


CANARY_LOCKS: dict[str, object] = {
    "reduce_only": True,
    "leverage": Decimal(1),
    "max_leverage": Decimal(1),
    "time_in_force": TifSetting.IOC,
}


def _show(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)
