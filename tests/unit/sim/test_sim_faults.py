"""The fault switches of the simulator server: spec syntax, seeding, independence."""

from __future__ import annotations

import pytest

from perpsbot.exchange.sim.faults import Faults, FaultSetting, FaultSpecError, parse_fault_spec


def test_the_spec_syntax():
    spec = parse_fault_spec("ws_disconnect=0.01, skip_sequence=0.02,rate_limit=0.05:1.5,"
                            "server_error=0.02:503,slow=0.05:2,lost_response=0.1:drop,late_accept=0.3:2.5")
    assert spec == {
        "ws_disconnect": FaultSetting(0.01, None),
        "skip_sequence": FaultSetting(0.02, None),
        "rate_limit": FaultSetting(0.05, 1.5),
        "server_error": FaultSetting(0.02, 503.0),
        "slow": FaultSetting(0.05, 2.0),
        "lost_response": FaultSetting(0.1, "drop"),
        "late_accept": FaultSetting(0.3, 2.5),
    }
    assert parse_fault_spec("") == {} and parse_fault_spec(None) == {}
    assert parse_fault_spec("slow=0.5")["slow"] == FaultSetting(0.5, 1.0)  # default delay
    assert parse_fault_spec("late_accept=0.3")["late_accept"] == FaultSetting(0.3, 12.0)  # past a 10 s timeout


@pytest.mark.parametrize("spec, message", [
    ("explode=0.1", "unknown fault"),
    ("slow", "needs a probability"),
    ("slow=2", "between 0 and 1"),
    ("slow=x", "must be a number"),
    ("slow=0.1:-1", ">= 0"),
    ("server_error=0.1:404", "5xx"),
    ("lost_response=0.1:vanish", "drop, error, mixed"),
    ("late_accept=0.1:soon", "must be a number"),
    ("ws_disconnect=0.1:3", "takes no parameter"),
    ("slow=0.1,slow=0.2", "twice"),
])
def test_bad_specs_say_what_is_wrong(spec: str, message: str):
    with pytest.raises(FaultSpecError, match=message):
        parse_fault_spec(spec)


def _fires(faults: Faults, name: str, n: int = 200) -> list[bool]:
    return [faults.roll(name) for _ in range(n)]


def test_the_same_seed_fires_the_same_way():
    a, b = Faults("slow=0.3", seed=9), Faults("slow=0.3", seed=9)
    assert _fires(a, "slow") == _fires(b, "slow")
    assert _fires(Faults("slow=0.3", seed=10), "slow") != _fires(Faults("slow=0.3", seed=9), "slow")
    fired = sum(_fires(Faults("slow=0.3", seed=1), "slow", 2000))
    assert 450 < fired < 750


def test_one_fault_never_shifts_another():
    alone = Faults("server_error=0.2", seed=3)
    mixed = Faults("server_error=0.2,rate_limit=0.5,slow=0.5", seed=3)
    pattern_alone, pattern_mixed = [], []
    for _ in range(300):
        pattern_alone.append(alone.roll("server_error"))
        mixed.roll("rate_limit")
        mixed.roll("slow")
        pattern_mixed.append(mixed.roll("server_error"))
    assert pattern_alone == pattern_mixed


def test_switching_at_run_time_and_forcing():
    faults = Faults(seed=0)
    assert not any(_fires(faults, "rate_limit"))
    faults.force("rate_limit", times=2)
    assert _fires(faults, "rate_limit", 3) == [True, True, False]
    faults.set("rate_limit", 1.0, 0.25)
    assert faults.roll("rate_limit") and faults.param("rate_limit") == 0.25
    assert faults.describe() == "rate_limit=1:0.25"
    faults.disable("rate_limit")
    assert not faults.roll("rate_limit") and faults.describe() == "none"
    assert faults.injected["rate_limit"] == 3
    with pytest.raises(KeyError):
        faults.set("meteor", 0.1)
