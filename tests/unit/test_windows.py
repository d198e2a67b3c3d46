from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from perpsbot.market.windows import Bar, Mark, MarkWindow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float, price: str) -> Mark:
    return Mark(T0 + timedelta(seconds=seconds), D(price))


def test_bars_close_only_when_a_later_bar_starts():
    w = MarkWindow(max_marks=100, max_bars=10, bar_seconds=5)
    assert not w.append(at(0, "10"))
    assert not w.append(at(2, "12"))
    assert not w.append(at(4, "9"))
    assert w.append(at(5, "11"))
    assert list(w.bars) == [Bar(T0, D(10), D(12), D(9), D(9))]
    assert w.bars_closed == 1


def test_windows_are_trimmed_to_their_limits():
    w = MarkWindow(max_marks=3, max_bars=2, bar_seconds=1)
    for i in range(10):
        w.append(at(i, str(100 + i)))
    assert [m.price for m in w.marks] == [D(107), D(108), D(109)]
    assert [b.close for b in w.bars] == [D(107), D(108)]


def test_an_older_mark_is_ignored():
    w = MarkWindow(max_marks=10, max_bars=10, bar_seconds=1)
    w.append(at(5, "10"))
    assert not w.append(at(3, "99"))
    assert w.last.price == D(10)


def test_seeded_bars_come_before_live_ones():
    w = MarkWindow(max_marks=10, max_bars=10, bar_seconds=5)
    w.seed_bars([Bar(T0 - timedelta(seconds=5), D(1), D(1), D(1), D(1))])
    w.append(at(0, "2"))
    w.append(at(5, "3"))
    assert [b.close for b in w.bars] == [D(1), D(2)]


def test_pushed_marks_make_the_same_bars_as_appended_ones():
    appended = MarkWindow(max_marks=100, max_bars=10, bar_seconds=5)
    pushed = MarkWindow(max_marks=100, max_bars=10, bar_seconds=5)
    rows = [(0, "10"), (1.5, "12.25"), (3, "9"), (4.9, "9.5"), (5, "11"), (7, "13"), (2, "1"), (10.25, "8")]
    for seconds, price in rows:
        mark = at(seconds, price)
        assert appended.append(mark) == pushed.push(mark.ts.timestamp(), mark.price)
    assert pushed.bars == appended.bars and pushed.price == appended.price == 8.0
    assert pushed.last == appended.last == at(10.25, "8")
    assert [m.price for m in pushed.marks] == [D(p) for s, p in rows if s != 2]  # the older mark was ignored
