"""JUnit XML test reports (pytest ``--junitxml``, most CI tools) for the drift review's
code-level rows: counts, outcomes, runtimes and the slowest tests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


class JUnitError(ValueError):
    """A report that cannot be read, worded for the user in one line."""


@dataclass(frozen=True)
class JUnitCase:
    name: str  # classname::name
    seconds: float
    outcome: str  # passed | failed | error | skipped


@dataclass
class JUnitRun:
    files: list[str] = field(default_factory=list)
    cases: list[JUnitCase] = field(default_factory=list)
    suite_seconds: float = 0.0  # the suites' own time attributes, when given

    @property
    def total(self) -> int:
        return len(self.cases)

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)

    @property
    def executed(self) -> int:
        return self.total - self.count("skipped")

    @property
    def success_rate_pct(self) -> float | None:
        return round(100 * self.count("passed") / self.executed, 2) if self.executed else None

    @property
    def seconds(self) -> float:
        """Wall time of the suites as reported, else the sum of the test times."""
        return round(self.suite_seconds or sum(c.seconds for c in self.cases), 3)

    def slowest(self, n: int = 5) -> list[JUnitCase]:
        return sorted(self.cases, key=lambda c: (-c.seconds, c.name))[:n]


def _seconds(value: str | None, path: Path) -> float:
    if value is None or value == "":
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise JUnitError(f"junit {path}: time '{value}' is not a number") from None
    if seconds < 0 or seconds != seconds:
        raise JUnitError(f"junit {path}: time '{value}' is not a duration")
    return seconds


def parse(path: Path, into: JUnitRun | None = None) -> JUnitRun:
    """Add one report's test cases to ``into`` (a new run if None)."""
    run = into or JUnitRun()
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise JUnitError(f"junit {path}: cannot read: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise JUnitError(f"junit {path}: not valid XML ({exc})") from None
    if root.tag == "testsuite":
        suites = [root]
    elif root.tag == "testsuites":
        suites = list(root.iter("testsuite"))
    else:
        raise JUnitError(f"junit {path}: expected <testsuites> or <testsuite>, found <{root.tag}>")
    for suite in suites:
        run.suite_seconds += _seconds(suite.get("time"), path)
        for case in suite.findall("testcase"):
            name = case.get("name")
            if not name:
                raise JUnitError(f"junit {path}: a <testcase> has no name")
            outcome = "passed"
            for child, label in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                if case.find(child) is not None:
                    outcome = label
                    break
            classname = case.get("classname")
            run.cases.append(JUnitCase(f"{classname}::{name}" if classname else name,
                                      _seconds(case.get("time"), path), outcome))
    run.files.append(str(path))
    return run
