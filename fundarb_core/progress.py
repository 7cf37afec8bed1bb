"""Progress of long work (``fundarb run``, ``backtest``, ``forecast-eval``): a tqdm bar on a terminal, plain
periodic lines otherwise.

Why both: a person at a terminal wants a live bar with an ETA; a log file or CI wants readable lines, not
carriage-return noise — one line at most every ``every_s`` seconds, plus the first and the last.  Everything
goes to stderr so ``--json`` output on stdout stays one document.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm


class Progress:
    """``total`` units of work named ``desc``; :meth:`advance` as they finish, :meth:`note` for what runs now."""

    def __init__(self, total: int, desc: str, *, unit: str = "step", stream: TextIO | None = None,
                 every_s: float = 10.0, bar: bool | None = None) -> None:
        self.total, self.desc, self.unit = max(int(total), 0), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.done = 0
        self.current = ""
        self.t0 = time.monotonic()
        self._last_line = -float("inf")
        use_bar = bar if bar is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                         leave=True) if use_bar else None
        if self._bar is None:
            self._line(force=True)

    def note(self, message: str) -> None:
        """What is running now (shown beside the bar, or in the next plain line)."""
        self.current = message
        if self._bar is not None:
            self._bar.set_postfix_str(message[:60], refresh=True)
        else:
            self._line()

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        if note is not None:
            self.current = note
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note[:60], refresh=False)
            self._bar.update(n)
        else:
            self._line(force=self.done == self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done < self.total:
            self._line(force=True)

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < self.every_s:
            return
        self._last_line = now
        elapsed = now - self.t0
        pct = 100.0 * self.done / self.total if self.total else 0.0
        eta = f", ~{elapsed / self.done * (self.total - self.done):.0f} s left" if 0 < self.done < self.total else ""
        what = f" — {self.current}" if self.current else ""
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({pct:.0f} %), {elapsed:.0f} s{eta}{what}",
              file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
