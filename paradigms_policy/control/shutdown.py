"""How a node executable stops on SIGINT and SIGTERM, at any moment, with exit code 0.

`ros2 launch` ends its processes with SIGINT, waits 5 s, then escalates to SIGTERM; process
managers send SIGTERM. Python's own SIGINT handler raises KeyboardInterrupt wherever the main
thread happens to be (a second Ctrl-C interrupts the tear-down of the first) and SIGTERM kills
the process outright. `StopSignals` replaces both handlers (and rclpy's, which the node
executables turn off):

- during start-up (checkpoint load, warm-up) the first signal raises `ShutdownRequested` in the
  main thread, which unwinds the start-up as KeyboardInterrupt would;
- once `defer()` was called (the node spins on another thread) a signal only marks the stop, and
  the main thread, waiting in `wait()`, tears the node down;
- every later signal is ignored, so a second one cannot interrupt the tear-down, nor, after
  `ignore_from_now_on()`, the interpreter's finalization.
"""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# `wait` polls the mark the handler sets: taking a lock inside a signal handler (Event.set) can
# deadlock with the interrupted main thread holding that lock.
POLL_S = 0.05


class ShutdownRequested(BaseException):
    """A stop signal arrived during start-up (a BaseException: `except Exception` lets it through)."""


class StopSignals:
    """The stop signals of this process: install once, in the main thread."""

    def __init__(self):
        self.received: str | None = None  # name of the first stop signal
        self._raising = True
        self._ended = threading.Event()

    def install(self) -> StopSignals:
        for number in STOP_SIGNALS:
            signal.signal(number, self._on_signal)
        return self

    def _on_signal(self, number: int, frame) -> None:
        if self.received is not None:
            return  # already stopping
        self.received = signal.Signals(number).name
        if self._raising:
            raise ShutdownRequested(self.received)

    def defer(self) -> None:
        """Start-up is over: from now on a signal only marks the stop, which `wait` returns."""
        self._raising = False

    def end(self) -> None:
        """Stop without a signal (any thread), e.g. when the node stopped spinning by itself."""
        self._ended.set()

    def ignore_from_now_on(self) -> None:
        """The process is about to exit: ignore stop signals. Python's finalization would put back
        SIG_DFL, and a second signal during the second or so it takes would kill the process."""
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)

    def wait(self) -> str | None:
        """Block until a stop signal or `end()`: the signal's name, or None after `end()`."""
        while self.received is None and not self._ended.wait(POLL_S):
            pass
        return self.received
