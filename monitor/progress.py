"""Progress of long loops (training, evaluation, benchmark replays): a tqdm bar on a terminal; otherwise
(CI logs, journald, a pipe) a plain log line now and then, instead of thousands of bar redraws.

``progress_bar(iterable, desc=..., total=..., unit=...)`` returns an object used like a tqdm bar: iterate it,
or call ``update(n)``; ``n`` and ``total`` read back; it is a context manager. ``enabled=False`` (e.g.
``bench --quiet``) shows nothing at all.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 30.0
"""Without a terminal: a line at least this often ..."""
LOG_EVERY_FRACTION = 0.1
"""... and one for each tenth of the total done, whichever comes first ..."""
LOG_MIN_GAP_SECONDS = 5.0
"""... but tenths no closer than this (a loop of a few seconds says only that it is done)."""


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogProgress:
    """The bar's stand-in off a terminal: counts like tqdm and logs ``desc: n/total unit (x%)`` lines."""

    def __init__(self, iterable: Iterable | None = None, *, desc: str, total: float | None = None, unit: str = "it",
                 report: bool = True, clock: Callable[[], float] = time.monotonic):
        self.iterable = iterable
        self.desc, self.unit, self.report = desc, unit, report
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.n: float = 0
        self._clock = clock
        self._started = self._last_time = clock()
        self._last_step = 0
        self._reported_n: float | None = None
        self._postfix = ""

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()  # as tqdm does when its iterable is exhausted

    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.report:
            return
        now = self._clock()
        fraction = self.n / self.total if self.total else None
        since_last = now - self._last_time
        next_tenth = fraction is not None and self._step(fraction) > self._last_step
        if (next_tenth and since_last >= LOG_MIN_GAP_SECONDS) or since_last >= LOG_EVERY_SECONDS:
            self._log(now, fraction)

    @staticmethod
    def _step(fraction: float) -> int:
        """How many ``LOG_EVERY_FRACTION`` steps ``fraction`` has passed (rounding-safe)."""
        return math.floor(fraction / LOG_EVERY_FRACTION + 1e-9)

    def set_postfix(self, **fields: object) -> None:
        """Figures shown beside the count (tqdm's postfix), e.g. the running loss."""
        self._postfix = ", ".join(f"{key}={value}" for key, value in fields.items())

    def _log(self, now: float, fraction: float | None) -> None:
        done = f"{self.n:.0f}/{self.total:.0f} {self.unit} ({100 * fraction:.0f}%)" if fraction is not None \
            else f"{self.n:.0f} {self.unit}"
        log.info("%s: %s, %.0f s%s", self.desc, done, now - self._started,
                 f" ({self._postfix})" if self._postfix else "")
        self._last_time, self._reported_n = now, self.n
        if fraction is not None:
            self._last_step = self._step(fraction)

    def close(self) -> None:
        """A last line, unless the last update already said it."""
        if self.report and self.n and self._reported_n != self.n:
            self._log(self._clock(), self.n / self.total if self.total else None)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             enabled: bool = True, stream: TextIO | None = None, **bar_options: Any):
    """A tqdm bar when ``stream`` (stderr) is a terminal, else a ``LogProgress``; nothing shown when not enabled.
    ``bar_options`` go to tqdm only (``leave``, ``mininterval``, ``bar_format`` ...)."""
    stream = stream if stream is not None else sys.stderr
    if enabled and is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, file=stream, **bar_options)
    return LogProgress(iterable, desc=desc, total=total, unit=unit, report=enabled)
