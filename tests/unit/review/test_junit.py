"""JUnit XML reports read for the drift review's code-level rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsbot.review.junit import JUnitError, JUnitRun, parse

PYTEST_REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="2.5">
<testcase classname="tests.a" name="test_fast" time="0.010"/>
<testcase classname="tests.a" name="test_slow" time="1.250"/>
<testcase classname="tests.b" name="test_broken" time="0.300"><failure message="assert 1 == 2">boom</failure></testcase>
<testcase classname="tests.b" name="test_setup" time="0.020"><error message="fixture">err</error></testcase>
<testcase classname="tests.b" name="test_later" time="0"><skipped message="later"/></testcase>
</testsuite></testsuites>
"""


def write(tmp_path: Path, text: str, name: str = "report.xml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_counts_outcomes_runtime_and_slowest(tmp_path: Path):
    run = parse(write(tmp_path, PYTEST_REPORT))
    assert run.total == 5
    assert (run.count("passed"), run.count("failed"), run.count("error"), run.count("skipped")) == (2, 1, 1, 1)
    assert run.executed == 4
    assert run.success_rate_pct == 50.0
    assert run.seconds == 2.5  # the suite's own time
    assert [t.name for t in run.slowest(2)] == ["tests.a::test_slow", "tests.b::test_broken"]


def test_a_bare_testsuite_and_several_files_add_up(tmp_path: Path):
    one = write(tmp_path, '<testsuite><testcase name="t1" time="0.5"/></testsuite>', "one.xml")
    two = write(tmp_path, '<testsuite><testcase classname="c" name="t2" time="1.5"/></testsuite>', "two.xml")
    run = JUnitRun()
    parse(one, run)
    parse(two, run)
    assert run.total == 2 and run.success_rate_pct == 100.0
    assert run.seconds == 2.0  # no suite times: the tests' sum
    assert run.files == [str(one), str(two)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<testsuite><testcase name='x'", "not valid XML"),
        ("<html><body/></html>", "expected <testsuites> or <testsuite>, found <html>"),
        ("<testsuite><testcase name='x' time='fast'/></testsuite>", "time 'fast' is not a number"),
        ("<testsuite><testcase name='x' time='-1'/></testsuite>", "time '-1' is not a duration"),
        ("<testsuite><testcase time='1'/></testsuite>", "a <testcase> has no name"),
    ],
)
def test_bad_reports_are_one_line_errors(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(JUnitError) as caught:
        parse(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(JUnitError, match="cannot read"):
        parse(tmp_path / "nope.xml")
