"""Progress of long work: plain periodic lines when the output is not a terminal, a tqdm bar when it is."""

from __future__ import annotations

import io

from fundarb_core.progress import Progress


def test_plain_lines_are_rate_limited_and_end_with_the_total() -> None:
    out = io.StringIO()
    with Progress(5, "backtest", unit="hour", stream=out, every_s=3600) as bar:
        for _ in range(5):
            bar.advance(note="keeper")
    lines = out.getvalue().splitlines()
    # the first line at start, none in between (every 3600 s), the last at 5/5
    assert len(lines) == 2
    assert lines[0].startswith("backtest: 0/5 hours (0 %)")
    assert lines[1].startswith("backtest: 5/5 hours (100 %)") and lines[1].endswith("— keeper")


def test_every_advance_prints_when_the_interval_is_zero_with_an_eta() -> None:
    out = io.StringIO()
    with Progress(4, "forecast-eval", unit="evaluation", stream=out, every_s=0) as bar:
        bar.advance(note="persistence/next_settlement took 0.1 s")
        bar.note("ewma/next_settlement")
    lines = out.getvalue().splitlines()
    assert "forecast-eval: 1/4 evaluations (25 %)" in lines[1] and "s left" in lines[1]
    assert lines[2].endswith("— ewma/next_settlement")
    assert lines[-1].startswith("forecast-eval: 1/4")  # an unfinished bar says where it stopped


def test_a_terminal_gets_a_bar_not_lines() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    with Progress(3, "fundarb run", unit="stage", stream=out) as bar:
        bar.advance(3)
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and "100%" in text  # tqdm's bar, redrawn in place
