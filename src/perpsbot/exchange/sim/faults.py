"""Injected faults for the simulator server: seeded, each switchable on its own.

Spec syntax (``--faults``), comma-separated ``name=probability[:parameter]``::

    ws_disconnect=0.01,skip_sequence=0.01,rate_limit=0.05:1.5,server_error=0.02:503,
    slow=0.05:2.0,lost_response=0.05:drop,late_accept=0.3:12

==============  ============================  =============================================
fault           rolled                        effect (parameter)
==============  ============================  =============================================
ws_disconnect   per WebSocket message         the connection is dropped without a close
                                              frame, the message is not sent
skip_sequence   per WebSocket message         the message's ``sequence_num`` skips one
rate_limit      per REST request              a 429 burst starts: every REST request for
                                              the next ``seconds`` gets 429 (default 1.0)
server_error    per REST request              answered with this 5xx status (default 500)
slow            per REST request              answered after ``seconds`` (default 1.0)
lost_response   per order-creating request    the order IS created, then the answer is
                                              lost: ``drop`` (connection closed without a
                                              response), ``error`` (a 500) or ``mixed``
                                              (either, seeded; the default)
late_accept     per order-creating request    processed ``seconds`` after its body arrived
                                              (default 12, past a 10 s client timeout):
                                              until then the order does not exist (get
                                              and list do not show it); then it is
                                              created and matched as usual and the answer
                                              sent, to a client that has usually given up
==============  ============================  =============================================

Each fault draws from its own random stream, seeded from (seed, fault name), so
switching one fault on or off never changes when another one fires. Tests change
faults at run time through ``Faults.set``/``disable``/``force``.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

FAULT_NAMES = ("ws_disconnect", "skip_sequence", "rate_limit", "server_error", "slow", "lost_response", "late_accept")
LOST_RESPONSE_MODES = ("drop", "error", "mixed")
_DEFAULT_PARAM: dict[str, float | str | None] = {
    "ws_disconnect": None,
    "skip_sequence": None,
    "rate_limit": 1.0,
    "server_error": 500.0,
    "slow": 1.0,
    "lost_response": "mixed",
    "late_accept": 12.0,
}


class FaultSpecError(ValueError):
    """A ``--faults`` spec that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class FaultSetting:
    probability: float
    param: float | str | None = None


def _check_param(name: str, raw: float | str | None) -> float | str | None:
    if raw is None or raw == "":
        return _DEFAULT_PARAM[name]
    if name == "lost_response":
        if raw not in LOST_RESPONSE_MODES:
            raise FaultSpecError(
                f"lost_response parameter must be one of {', '.join(LOST_RESPONSE_MODES)}, got {raw!r}"
            )
        return raw
    if _DEFAULT_PARAM[name] is None:
        raise FaultSpecError(f"{name} takes no parameter, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise FaultSpecError(f"{name} parameter must be a number, got {raw!r}") from None
    if name == "server_error":
        if not (value.is_integer() and 500 <= value <= 599):
            raise FaultSpecError(f"server_error parameter must be a 5xx status, got {raw!r}")
    elif not value >= 0 or value == float("inf"):
        raise FaultSpecError(f"{name} parameter must be a finite number >= 0, got {raw!r}")
    return value


def _check_probability(name: str, raw: float | str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise FaultSpecError(f"{name} probability must be a number, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise FaultSpecError(f"{name} probability must be between 0 and 1, got {raw!r}")
    return value


def parse_fault_spec(spec: str | None) -> dict[str, FaultSetting]:
    """``"rate_limit=0.05,slow=0.1:2"`` -> settings by name. Empty or ``None``: no faults."""
    settings: dict[str, FaultSetting] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, rest = item.partition("=")
        name = name.strip()
        if name not in FAULT_NAMES:
            raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")
        if not sep or not rest.strip():
            raise FaultSpecError(f"fault {name!r} needs a probability, e.g. {name}=0.05")
        if name in settings:
            raise FaultSpecError(f"fault {name!r} given twice")
        prob, _, param = rest.strip().partition(":")
        settings[name] = FaultSetting(_check_probability(name, prob.strip()), _check_param(name, param.strip() or None))
    return settings


def _stream_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{int(seed)}|fault|{name}".encode()).digest()[:8], "big")


class Faults:
    """The server's fault switches. ``roll(name)`` says whether a fault fires now."""

    def __init__(self, spec: str | Mapping[str, FaultSetting] | None = None, *, seed: int = 0) -> None:
        self.seed = seed
        self._settings: dict[str, FaultSetting] = {}
        self._rngs = {name: random.Random(_stream_seed(seed, name)) for name in FAULT_NAMES}
        self._forced: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()  # how often each fault fired
        settings = parse_fault_spec(spec) if spec is None or isinstance(spec, str) else dict(spec)
        for name, setting in settings.items():
            self.set(name, setting.probability, setting.param)

    @staticmethod
    def _known(name: str) -> None:
        if name not in FAULT_NAMES:
            raise KeyError(f"unknown fault {name!r}; known: {', '.join(FAULT_NAMES)}")

    def set(self, name: str, probability: float, param: float | str | None = None) -> None:
        """Switch ``name`` on with ``probability`` (0 switches it off)."""
        self._known(name)
        setting = FaultSetting(_check_probability(name, probability), _check_param(name, param))
        if setting.probability == 0:
            self._settings.pop(name, None)
        else:
            self._settings[name] = setting

    def disable(self, name: str) -> None:
        self._known(name)
        self._settings.pop(name, None)
        self._forced.pop(name, None)

    def clear(self) -> None:
        self._settings.clear()
        self._forced.clear()

    def force(self, name: str, times: int = 1, param: float | str | None = None) -> None:
        """Make the next ``times`` rolls of ``name`` fire, whatever its probability
        (``param`` also sets the parameter, keeping the probability)."""
        self._known(name)
        if param is not None:
            current = self._settings.get(name)
            checked = _check_param(name, param)
            if current is None:
                self._settings[name] = FaultSetting(0.0, checked)
            else:
                self._settings[name] = FaultSetting(current.probability, checked)
        self._forced[name] += times

    def probability(self, name: str) -> float:
        self._known(name)
        setting = self._settings.get(name)
        return setting.probability if setting else 0.0

    def param(self, name: str) -> float | str | None:
        self._known(name)
        setting = self._settings.get(name)
        if setting is not None and setting.param is not None:
            return setting.param
        return _DEFAULT_PARAM[name]

    def roll(self, name: str) -> bool:
        """Whether ``name`` fires now. Draws from the fault's own stream only while the
        fault is switched on, so the other faults' draws never shift."""
        if self._forced.get(name, 0) > 0:
            self._forced[name] -= 1
            self.injected[name] += 1
            return True
        setting = self._settings.get(name)
        if setting is None or setting.probability <= 0:
            return False
        if self._rngs[name].random() < setting.probability:
            self.injected[name] += 1
            return True
        return False

    def choose(self, name: str, options: tuple[str, ...]) -> str:
        """A seeded choice from the fault's stream (``lost_response=...:mixed``)."""
        return self._rngs[name].choice(options)

    @property
    def active(self) -> dict[str, FaultSetting]:
        """The faults switched on (probability > 0)."""
        return {name: s for name, s in self._settings.items() if s.probability > 0}

    def describe(self) -> str:
        active = self.active
        if not active:
            return "none"
        parts = []
        for name, setting in active.items():
            param = (
                ""
                if setting.param is None
                else f":{setting.param:g}"
                if isinstance(setting.param, float)
                else f":{setting.param}"
            )
            parts.append(f"{name}={setting.probability:g}{param}")
        return ",".join(parts)
