"""Finding a strategy by what the config says, and giving it its parameters.

``strategy`` is one of:

* a built-in name (``ma_crossover``, ``rsi_reversion``, ``donchian_breakout``, ``funding_carry``);
* the name of an installed entry point in the group ``perpsbot.strategies``;
* ``path/to/file.py:ClassName`` — a file of the user's own;
* ``package.module:ClassName`` — an importable module.

Every way a strategy can fail to load is a ``StrategyError`` of one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from perpsbot.config import BotConfig, LoadedConfig
from perpsbot.strategy.api import ParamError, Strategy
from perpsbot.strategy.runner import StrategyError, StrategyRunner, _checked

ENTRY_POINT_GROUP = "perpsbot.strategies"
BUILTINS = {
    "ma_crossover": "perpsbot.strategy.builtin.ma_crossover:MACrossover",
    "rsi_reversion": "perpsbot.strategy.builtin.rsi_reversion:RSIReversion",
    "donchian_breakout": "perpsbot.strategy.builtin.donchian_breakout:DonchianBreakout",
    "funding_carry": "perpsbot.strategy.builtin.funding_carry:FundingCarry",
}


@dataclass(frozen=True)
class Listed:
    name: str
    where: str  # "built-in" or the entry point's distribution
    target: str  # module:Class
    summary: str


def resolve(spec: str) -> type[Strategy]:
    """The strategy class ``spec`` names."""
    spec = spec.strip()
    if not spec:
        raise StrategyError("strategy is empty: give a built-in name, path/to/file.py:Class or package.module:Class")
    if spec in BUILTINS:
        return _from_module(BUILTINS[spec], spec)
    if ":" not in spec:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            raise StrategyError(
                f"unknown strategy '{spec}': not a built-in ({', '.join(BUILTINS)}) nor an entry point in "
                f"{ENTRY_POINT_GROUP}; a file or module is named path/to/file.py:Class or package.module:Class"
            )
        return _from_module(found[0].value, spec)
    where, _, name = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        return _class(_from_file(Path(where)), name, where)
    return _from_module(spec, spec)


def _from_module(target: str, spec: str) -> type[Strategy]:
    module_name, _, name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"strategy {spec}: cannot import {module_name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed as it loaded: one line, no traceback
        raise StrategyError(f"strategy {spec}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    return _class(module, name, module_name)


def _from_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise StrategyError(f"strategy file {path} not found")
    # One module per file (by its resolved path), so that two files of the same name do not collide.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"perpsbot_user_strategy_{path.stem}_{digest}"
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(f"strategy file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise StrategyError(f"strategy file {path}: line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the user's file failed as it loaded: one line, no traceback
        del sys.modules[module_name]
        raise StrategyError(f"strategy file {path} failed to load: {type(exc).__name__}: {exc}") from None
    return module


def _class(module: ModuleType, name: str, where: str) -> type[Strategy]:
    found = getattr(module, name, None) if name.isidentifier() else None
    if found is None:
        classes = sorted(k for k, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy)
        offer = f" (strategies there: {', '.join(classes)})" if classes else " (it defines no Strategy subclass)"
        raise StrategyError(f"{where} has no class '{name}'{offer}")
    if not (isinstance(found, type) and issubclass(found, Strategy)):
        raise StrategyError(f"{where}:{name} is not a subclass of perpsbot.strategy.api.Strategy")
    return found


def parameters(cls: type[Strategy], config: BotConfig) -> dict[str, Any]:
    """The strategy's parameter values: ``strategy_params`` (config, env, ``--param``),
    else a bot setting of the same name (the MA crossover's ``short_window`` and kin),
    else the declared default; each checked against its declaration."""
    declared = cls.declared()
    given = dict(config.strategy_params)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        names = ", ".join(declared) or "none"
        raise StrategyError(f"strategy {cls.display_name()} has no parameter '{unknown[0]}' (its parameters: {names})")
    values: dict[str, Any] = {}
    for name, param in declared.items():
        if name in given:
            raw = given[name]
        elif name in BotConfig.model_fields:
            raw = getattr(config, name)
        else:
            raw = param.default
        try:
            values[name] = param.parse(raw)
        except ParamError as exc:
            raise StrategyError(f"strategy {cls.display_name()}: {exc}") from None
    return values


def build(config: BotConfig, *, timed: bool = True) -> StrategyRunner:
    """The configured strategy, loaded, given its parameters and checked. ``timed``: with
    the ``strategy_budget_ms`` time budget (a backtest runs untimed: the same candles
    must give the same trades on any machine)."""
    cls = resolve(config.strategy)
    params = parameters(cls, config)
    try:
        strategy = cls(**params)
    except Exception as exc:  # noqa: BLE001 - the user's constructor failed: one line
        raise StrategyError(f"strategy {cls.display_name()} failed to start: {type(exc).__name__}: {exc}") from None
    problem = _checked(strategy)
    if problem is not None:
        raise StrategyError(f"strategy {cls.display_name()}: {problem}")
    if strategy.symbols is not None and not set(strategy.symbols) & set(config.symbols):
        raise StrategyError(
            f"strategy {cls.display_name()} trades only {', '.join(strategy.symbols)}: none of the configured "
            f"symbols ({', '.join(config.symbols)})"
        )
    budget = config.strategy_budget_ms if timed else None
    return StrategyRunner(strategy, config.bar_seconds, budget_ms=budget, spec=config.strategy)


def with_declared_symbols(loaded: LoadedConfig) -> LoadedConfig:
    """Where no layer set ``symbols``, the ones the strategy declares (if it does)."""
    if loaded.sources.get("symbols") != "default":
        return loaded
    cls = resolve(loaded.config.strategy)
    if cls.symbols is None:
        return loaded
    try:
        config = BotConfig.model_validate({**dict(loaded.config), "symbols": tuple(cls.symbols)})
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise StrategyError(f"strategy {cls.display_name()}: symbols {', '.join(cls.symbols)}: {problem}") from None
    return LoadedConfig(config, {**loaded.sources, "symbols": f"strategy {cls.display_name()}"})


def change_parameters(runner: StrategyRunner, config: BotConfig) -> None:
    """A running bot's new config for the same strategy (``strategy`` is a restart key):
    the parameters change on the strategy object itself."""
    params = parameters(type(runner.user), config)
    runner.budget_ms = config.strategy_budget_ms or None  # a running bot's: timed, as configured
    if config.bar_seconds != runner.base_seconds:
        runner.rebase(config.bar_seconds)
    if params != runner.params:
        runner.set_params(params)


def listed() -> list[Listed]:
    """The built-ins, then the installed entry points."""
    rows = []
    for name, target in BUILTINS.items():
        rows.append(Listed(name, "built-in", target, _summary(_from_module(target, name))))
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "installed"
        try:
            summary = _summary(_from_module(ep.value, ep.name))
        except StrategyError as exc:
            summary = f"(does not load: {exc})"
        rows.append(Listed(ep.name, dist, ep.value, summary))
    return rows


def _summary(cls: type[Strategy]) -> str:
    first = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # the first paragraph, one line
    params = ", ".join(f"{p.name}={p.default}" for p in cls.declared().values())
    return first + (f" [{params}]" if params else "")
