"""Stopping a long tokenize run promptly on SIGTERM or Ctrl+C, with nothing half-written.

The signal only sets a flag; the encoder checks it before each item and between the
chunks of a long track, so a stop comes within seconds even an hour into a track. What
was encoded by then is published (the open shard holds whole items) and a rerun continues.
A second Ctrl+C stops at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """A stop signal arrived; raised at the next safe point."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class SignalStop:
    """While open, SIGTERM and SIGINT request a stop that `check()` raises."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl+C: stop now
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise StopRequested(self.received)

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():  # signals need it
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def ignore_stop_signals_in_worker(worker_id: int = 0) -> None:
    """Decoding workers leave stopping to their parent, which finishes cleanly (a worker
    killed by the terminal's Ctrl+C or a scheduler's SIGTERM would fail the run instead)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
