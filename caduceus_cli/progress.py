"""Progress on stderr, the same for every command (and for downloads).

The engine reports work as it finishes: ``progress(n)`` after each batch (records, regions,
sequences, steps), ``progress(n, resumed=True)`` for work an interrupted run had done,
``progress.set_total(n)`` once it knows how much will run (None: it does not know), and
``advise_on_cpu(progress, device, alternative)`` to name a faster way. A plain function works too
wherever ``progress`` is only called.

Lines are throttled by time: the first at the first report (the first finished batch), then one
every ``interval`` seconds (``CADUCEUS_PROGRESS_SECONDS``; default 1 on a terminal, where the line
is rewritten in place, and 60 in a log). The rate leaves out the first report (model warm-up,
kernel compilation, work done by an earlier run), so the first line has none; the ETA counts what
is still to run, and says ``ETA unknown`` while the total is not known. Before CPU work that will
take more than :data:`SLOW_SECONDS`, one line says the estimate and the faster alternative.

Nothing here imports Typer or Rich; ``clock`` and ``stream`` are parameters so that tests drive a
fake clock.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

SLOW_SECONDS = 600.0  # CPU work longer than this gets one line with its estimate and a faster way
RATE_AFTER_SECONDS = 5.0  # the slow-work estimate waits for this much measured time (or 3 more reports)
_TERMINAL_INTERVAL, _LOG_INTERVAL = 1.0, 60.0


def duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _interval(terminal: bool) -> float:
    from .runtime import env_float

    return env_float("CADUCEUS_PROGRESS_SECONDS", _TERMINAL_INTERVAL if terminal else _LOG_INTERVAL)


class Progress:
    """``caduceus: DESCRIPTION: 1,024 of 5,000 records (20.5%), 45.1 records/s, ETA 1m28s``.

    ``unit`` is plural (records, steps); counts are shown divided by ``divisor`` (1e6 with unit
    'MB' for bytes). ``quiet``: nothing at all. A process that never reports (a torchrun rank other
    than 0) prints nothing.
    """

    def __init__(self, description: str, unit: str = "items", quiet: bool = False, *, divisor: float = 1,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 interval: float | None = None, terminal: bool | None = None):
        self.description, self.unit, self.quiet, self.divisor = description, unit, quiet, divisor
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = bool(terminal if terminal is not None else getattr(self.stream, "isatty", lambda: False)())
        self.interval = _interval(self.terminal) if interval is None else interval
        self.clock = clock
        self.advice: str | None = None  # the faster alternative, said once when CPU work will be slow
        self._lock = threading.RLock()
        self.restart()

    def restart(self, total: int | None = None) -> None:
        """Count afresh (a new task of the same command): nothing done, ``total`` to do."""
        with self._lock:
            self.done, self.total = 0, total
            self._base_time = self._base_done = self._last_line = None
            self._reports = 0  # reports since the first of this run
            self._base_resumed = False
            self._advised = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End a line rewritten in place (terminal) so that what follows starts on its own line."""
        with self._lock:
            if self.terminal and self._last_line is not None and not self.quiet:
                self._write("\n")
                self._last_line = None

    # -- what the engine calls -----------------------------------------------------------------
    def __call__(self, advance: int = 1, resumed: bool = False, **fields) -> None:
        """``advance`` more finished (``resumed``: finished by an earlier run; left out of the rate,
        as everything up to the first report is); ``fields`` are shown after the counts."""
        with self._lock:
            now = self.clock()
            self.done += advance
            if self._base_time is None or resumed or self._base_resumed:  # the first batch is warm-up
                self._base_time, self._base_done, self._reports = now, self.done, 0
                self._base_resumed = resumed
            else:
                self._reports += 1
            if self.quiet:
                return
            if self._last_line is None or now - self._last_line >= self.interval:
                self._last_line = now
                self._line(now, fields)
            self._maybe_advise(now)

    def set_total(self, total: int | None) -> None:
        """How many will be done in all, counting those already done (None: not known)."""
        with self._lock:
            self.total = total

    def advise(self, alternative: str) -> None:
        """Say ``alternative`` once, with the estimate, if the work will take over SLOW_SECONDS."""
        self.advice = alternative

    # -- what it prints ------------------------------------------------------------------------
    def rate(self, now: float | None = None) -> float | None:
        """Finished per second since the first report, or None before there is a measure."""
        if self._base_time is None:
            return None
        now = self.clock() if now is None else now
        elapsed, count = now - self._base_time, self.done - self._base_done
        return count / elapsed if elapsed > 0 and count > 0 else None

    def remaining_seconds(self, now: float | None = None) -> float | None:
        """Seconds still to run at the measured rate; None when the total or the rate is unknown."""
        rate = self.rate(now)
        if self.total is None or rate is None or self.done > self.total:
            return None
        return (self.total - self.done) / rate

    def _count(self, value: float) -> str:
        return f"{value:,}" if self.divisor == 1 else f"{value / self.divisor:,.1f}"

    def _rate_text(self, rate: float) -> str:
        """``45.1 records/s``, or ``12.5 s/step`` below one per second (never ``0.0 steps/s``)."""
        if self.divisor != 1:
            return f"{rate / self.divisor:,.1f} {self.unit}/s"
        if rate >= 1:
            return f"{rate:,.1f} {self.unit}/s"
        singular = self.unit[:-1] if self.unit.endswith("s") else self.unit
        return f"{1 / rate:,.1f} s/{singular}"

    def text(self, now: float | None = None, fields: dict | None = None) -> str:
        now = self.clock() if now is None else now
        parts = [self._count(self.done)]
        if self.total is not None and self.done <= self.total:
            share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
            parts = [f"{self._count(self.done)} of {self._count(self.total)} {self.unit}{share}"]
        else:
            parts[0] += f" {self.unit}"
        rate = self.rate(now)
        if rate is not None:
            parts.append(self._rate_text(rate))
            remaining = self.remaining_seconds(now)
            parts.append("ETA unknown" if remaining is None else f"ETA {duration(remaining)}")
        extra = " ".join(f"{k}={v}" for k, v in (fields or {}).items())
        return f"caduceus: {self.description}: {', '.join(parts)}{'; ' + extra if extra else ''}"

    def _line(self, now: float, fields: dict) -> None:
        if self.terminal:
            self._write(f"\r{self.text(now, fields)}\x1b[K")
        else:
            self._write(self.text(now, fields) + "\n")

    def note(self, message: str) -> None:
        """One line of its own (``caduceus: DESCRIPTION: message``), not throttled."""
        with self._lock:
            if self.quiet:
                return
            if self.terminal and self._last_line is not None:
                self._write("\n")
            self._write(f"caduceus: {self.description}: {message}\n")
            if self.terminal:
                self._last_line = None  # the progress line starts again below the note

    def _maybe_advise(self, now: float) -> None:
        if self.advice is None or self._advised:
            return
        remaining = self.remaining_seconds(now)
        if remaining is None or (now - self._base_time < RATE_AFTER_SECONDS and self._reports < 3):
            return
        self._advised = True
        if remaining > SLOW_SECONDS:
            self.note(f"about {duration(remaining)} to go on the CPU at this rate; {self.advice}")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the work
            pass


def advise_on_cpu(progress, device, alternative: str = "a CUDA GPU runs it much faster") -> None:
    """On the CPU, let ``progress`` (when it is a :class:`Progress`) name ``alternative`` once if
    the work will take over SLOW_SECONDS."""
    if progress is not None and getattr(device, "type", str(device)) == "cpu" and hasattr(progress, "advise"):
        progress.advise(alternative)
