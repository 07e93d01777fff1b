"""A benchmark that measured nothing exits non-zero and says what was empty."""

from __future__ import annotations

import pytest

from jobrec.batch.bench.verdict import measured_something


def test_something_measured_is_success() -> None:
    assert measured_something("x", {"events": 300, "seconds": 0.5}) == 0


@pytest.mark.parametrize("empty", [0, None, -1.0, 0.0])
def test_nothing_measured_fails_naming_the_figure(empty: float | None, capsys: pytest.CaptureFixture[str]) -> None:
    assert measured_something("freshness", {"probes_answered": empty, "polls": 3}) == 1
    err = capsys.readouterr().err
    assert "jobrec bench freshness: measured nothing" in err and "probes_answered" in err and "polls" not in err
