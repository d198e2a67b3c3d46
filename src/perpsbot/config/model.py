"""``BotConfig``: every setting the bot reads, with its type, default and limits."""

from __future__ import annotations

import enum
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SYMBOL_RE = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-[A-Z0-9]+)?$")


class Profile(str, enum.Enum):
    PAPER = "paper"
    DEV = "dev"
    CANARY = "canary"
    PROD = "prod"


class ExchangeKind(str, enum.Enum):
    SIM = "sim"
    COINBASE = "coinbase"


class OrderTypeSetting(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"


class TifSetting(str, enum.Enum):
    GTC = "GTC"
    IOC = "IOC"


PositiveDecimal = Annotated[Decimal, Field(gt=0)]


class BotConfig(BaseModel):
    """The effective configuration. Immutable: changes go through ``apply_config_change``."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    profile: Profile = Field(Profile.PAPER, description="paper | dev | canary | prod")
    exchange: ExchangeKind = Field(ExchangeKind.SIM, description="sim (built-in simulator) | coinbase")
    symbols: tuple[str, ...] = Field(("BTC-PERP-INTX",), min_length=1, description="products to trade")
    interval: float = Field(1.0, gt=0, le=3600, description="seconds between cycles")
    duration: float | None = Field(None, gt=0, description="stop after this many seconds (none: until Ctrl-C)")
    seed: int = Field(7, ge=0, description="simulator seed")
    data_dir: Path = Field(Path("data"), description="root folder of the stores; one subfolder per profile")

    dry_run: bool = Field(False, description="record decisions, place no orders")
    reduce_only: bool = Field(False, description="only orders that shrink a position")
    enable_shorts: bool = Field(True, description="allow opening short positions")

    bar_seconds: int = Field(5, ge=1, le=86400, description="bar length for the strategy")
    short_window: int = Field(5, ge=1, le=1000, description="fast moving average, in bars")
    long_window: int = Field(20, ge=2, le=5000, description="slow moving average, in bars")
    trailing_stop_pct: Decimal = Field(Decimal("0.01"), gt=0, lt=1, description="trailing stop distance")

    position_fraction: Decimal = Field(Decimal("0.1"), gt=0, le=1, description="share of equity per position")
    leverage: Decimal = Field(Decimal(1), ge=1, le=100, description="leverage requested on perp orders")
    max_leverage: Decimal = Field(Decimal(3), ge=1, le=100, description="risk cap on position leverage")
    max_position_notional: PositiveDecimal = Field(Decimal(50_000), description="risk cap per symbol, USD")
    mark_staleness_seconds: float = Field(10.0, gt=0, description="marks older than this block new orders")
    daily_loss_limit: PositiveDecimal = Field(Decimal(5_000), description="USD loss per UTC day before reduce-only")
    order_type: OrderTypeSetting = Field(OrderTypeSetting.MARKET, description="market | limit")
    time_in_force: TifSetting = Field(TifSetting.GTC, description="for limit orders: GTC | IOC")
    limit_offset_bps: Decimal = Field(Decimal(5), ge=0, le=1000, description="limit price distance past the mark")

    sim_starting_cash: PositiveDecimal = Field(Decimal(100_000), description="simulator USD balance")

    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="DEBUG | INFO | WARNING | ERROR")

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            cleaned = tuple(str(s).strip().upper() for s in value)
            for symbol in cleaned:
                if not SYMBOL_RE.match(symbol):
                    raise ValueError(f"'{symbol}' is not a product id like BTC-USD or BTC-PERP-INTX")
            if len(set(cleaned)) != len(cleaned):
                raise ValueError("symbols are listed twice")
            return cleaned
        return value

    @model_validator(mode="after")
    def _windows_and_leverage(self) -> BotConfig:
        if self.short_window >= self.long_window:
            raise ValueError(
                f"short_window ({self.short_window}) must be smaller than long_window ({self.long_window})"
            )
        if self.leverage > self.max_leverage:
            raise ValueError(f"leverage ({self.leverage}) must not exceed max_leverage ({self.max_leverage})")
        if self.exchange is ExchangeKind.COINBASE:
            raise ValueError(
                "exchange 'coinbase' is not available in this version yet: use exchange = 'sim'"
            )
        if self.profile is Profile.CANARY:
            for key, locked in CANARY_LOCKS.items():
                if getattr(self, key) != locked:
                    raise ValueError(
                        f"the canary profile locks {key} = {_show(locked)}; got {_show(getattr(self, key))}"
                    )
        return self

    @property
    def store_dir(self) -> Path:
        return self.data_dir / self.profile.value

    @property
    def required_bars(self) -> int:
        return self.long_window + 1


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
