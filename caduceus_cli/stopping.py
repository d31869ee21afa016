"""Stopping a run cleanly: SIGINT (Ctrl-C), SIGTERM (what cluster schedulers send) and a reader of
stdout that went away (``caduceus ... | head``).

``cli.main`` runs every command inside :func:`watch`. A watcher thread learns of a signal at once
(through ``signal.set_wakeup_fd``, even while the main thread is inside a long torch operation) and
of a closed stdout pipe (``poll`` reports an error on the write end). Then:

- the first SIGINT/SIGTERM asks the run to stop: pipelines call :func:`check` at every batch
  boundary, which raises :class:`Stopped`; that unwinds through the atomic outputs (temporaries
  removed, nothing that looks finished) and ``cli.py`` exits 130 (SIGINT) or 143 (SIGTERM);
- a second signal, or a batch that is still running ``CADUCEUS_STOP_GRACE`` seconds (default 20,
  inside the usual 30 s between a scheduler's SIGTERM and its SIGKILL) later, stops at once: the
  temporaries being written are removed and the process exits with the same status;
- a closed stdout stops at once (there is no reader for what would be computed next): temporaries
  are removed and the process exits 141, as a tool killed by SIGPIPE would.

Outside :func:`watch` (the Python API) nothing is installed and Python's own behaviour is kept.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import stat
import sys
import threading
from typing import Iterator

from .runtime import env_float

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE  # 141: what a shell reports for a tool killed by SIGPIPE
DEFAULT_GRACE_SECONDS = 20

_requested: int | None = None  # the signal that asked the run to stop


class Stopped(BaseException):
    """Raised at a batch boundary after SIGINT/SIGTERM. A BaseException (as KeyboardInterrupt), so
    that ``except Exception`` in the engine cannot swallow it."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum
        self.exit_code = 128 + signum


def requested() -> int | None:
    """The signal that asked the run to stop, or None."""
    return _requested


def check() -> None:
    """Raise :class:`Stopped` if a signal asked the run to stop (call it at batch boundaries)."""
    if _requested is not None:
        raise Stopped(_requested)


def message(signum: int) -> str:
    return f"caduceus: {NAMES.get(signum, f'stopped by signal {signum}')}\n"


def _exit_now(status: int, text: str = "") -> None:
    """Remove the temporaries being written and end the process at once (from the watcher thread)."""
    from .io import remove_temporaries

    with contextlib.suppress(Exception):
        remove_temporaries()
    if text:
        with contextlib.suppress(OSError):
            os.write(2, text.encode())
    os._exit(status)


def _stdout_is_pipe() -> bool:
    try:
        if sys.stdout is None or sys.stdout.fileno() != 1:  # replaced (tests capturing output)
            return False
        mode = os.fstat(1).st_mode
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Watcher(threading.Thread):
    """Waits on the signal wakeup pipe, a control pipe (to end) and, when stdout is a pipe, fd 1."""

    def __init__(self, wakeup: int, control: int, watch_stdout: bool, grace: float):
        super().__init__(name="caduceus-stop-watcher", daemon=True)
        self.wakeup, self.control, self.grace = wakeup, control, grace
        self.poller = select.poll()
        self.poller.register(wakeup, select.POLLIN)
        self.poller.register(control, select.POLLIN)
        if watch_stdout:
            self.poller.register(1, 0)  # no events asked: POLLERR/POLLHUP arrive when the reader closes
        self.timer: threading.Timer | None = None

    def run(self) -> None:
        while True:
            for fd, events in self.poller.poll():
                if fd == self.control:
                    return
                if fd == 1 and events & (select.POLLERR | select.POLLHUP):
                    _exit_now(BROKEN_PIPE_STATUS)
                if fd == self.wakeup:
                    for signum in os.read(self.wakeup, 64):
                        if signum in SIGNALS:
                            self._signal(signum)

    def _signal(self, signum: int) -> None:
        global _requested
        if _requested is not None:
            _exit_now(128 + _requested, message(_requested))
        _requested = signum
        with contextlib.suppress(OSError):
            again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
            os.write(2, f"caduceus: stopping after the current batch ({again} again stops at once)\n".encode())
        self.timer = threading.Timer(self.grace, _exit_now, (128 + signum, message(signum)))
        self.timer.daemon = True
        self.timer.start()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


@contextlib.contextmanager
def watch() -> Iterator[None]:
    """Install the signal handlers and the watcher for the block (main thread only; elsewhere, or
    where the platform lacks what it needs, the block runs without them)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    grace = env_float("CADUCEUS_STOP_GRACE", DEFAULT_GRACE_SECONDS)  # read here: a bad value is refused now
    _requested = None
    wakeup_r, wakeup_w = os.pipe()
    control_r, control_w = os.pipe()
    os.set_blocking(wakeup_w, False)
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    old_wakeup = None
    watcher = _Watcher(wakeup_r, control_r, _stdout_is_pipe(), grace)
    try:
        for s in SIGNALS:
            signal.signal(s, _noted)
        old_wakeup = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        watcher.start()
        yield
    finally:
        if old_wakeup is not None:
            signal.set_wakeup_fd(old_wakeup)
        for s, handler in previous.items():
            signal.signal(s, handler)
        watcher.stop()
        os.write(control_w, b"x")
        if watcher.is_alive():
            watcher.join(timeout=5)
        for fd in (wakeup_r, wakeup_w, control_r, control_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        _requested = None


def _noted(signum, frame) -> None:
    """The Python-level handler: the watcher thread acts on the signal (it sees it at once)."""
