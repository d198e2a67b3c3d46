"""One PNG per metric for the drift review: baseline and current as two bars, the
alert threshold as a red line when the metric has one (drawn with the backtest's
``Canvas``)."""

from __future__ import annotations

from perpsbot.backtest.png import Canvas

WIDTH, HEIGHT = 420, 260
_BG = (255, 255, 255)
_AXIS = (60, 60, 60)
_TEXT = (20, 20, 20)
_BASELINE = (110, 140, 190)
_CURRENT = (230, 140, 40)
_FLAGGED = (200, 40, 40)
_ALERT = (220, 0, 0)


def _label(value: float | None, unit: str) -> str:
    if value is None:
        return "NO DATA"
    text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def metric_chart(
    title: str, unit: str, baseline: float | None, current: float | None, *,
    alert: float | None = None, flagged: bool = False, names: tuple[str, str] = ("BASELINE", "CURRENT"),
) -> bytes:
    c = Canvas(WIDTH, HEIGHT, _BG)
    c.text(12, 10, title[:66], _TEXT)
    left, right, top, bottom = 40, WIDTH - 20, 48, HEIGHT - 44
    c.line(left, bottom, right, bottom, _AXIS)
    c.line(left, top, left, bottom, _AXIS)
    values = [v for v in (baseline, current, alert) if v is not None]
    scale_max = max([*values, 0.0]) * 1.15 or 1.0

    def y_of(value: float) -> int:
        return bottom - round((bottom - top) * max(0.0, value) / scale_max)

    slot = (right - left) // 2
    for i, (name, value, color) in enumerate(
        ((names[0], baseline, _BASELINE), (names[1], current, _FLAGGED if flagged else _CURRENT))
    ):
        x0 = left + i * slot + slot // 4
        x1 = x0 + slot // 2
        if value is not None:
            c.rect(x0, y_of(value), x1, bottom - 1, color)
        text = _label(value, unit)
        c.text(max(left + 2, (x0 + x1) // 2 - Canvas.text_width(text) // 2),
               (y_of(value) if value is not None else bottom) - 12, text, _TEXT)
        c.text((x0 + x1) // 2 - Canvas.text_width(name) // 2, bottom + 10, name, _TEXT)
    if alert is not None:
        y = y_of(alert)
        for x in range(left + 1, right, 6):
            c.line(x, y, min(right, x + 3), y, _ALERT)
        text = f"ALERT {_label(alert, unit)}"
        c.text(right - Canvas.text_width(text) - 2, y - 10, text, _ALERT)
    return c.png()
