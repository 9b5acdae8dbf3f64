"""Stopping on request: SIGTERM, SIGUSR1 (sent before preemption) and Ctrl-C only set a flag; the ranks stop at
the same step and checkpoint the exact position (docs/training.md, "Stopping and preemption")."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

EXIT_TERMINATED = 143  # 128 + SIGTERM, the status schedulers expect from a process they asked to stop
EXIT_CTRL_C = 130  # 128 + SIGINT
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on a signal or Ctrl-C after writing its state; continue it with ``resume_command``.
    A ``KeyboardInterrupt``, so code that catches ``Exception`` does not swallow a request to stop."""

    def __init__(self, message: str, signal_name: str, resume_command: str, checkpoint: str | None) -> None:
        super().__init__(message)
        self.signal_name, self.resume_command, self.checkpoint = signal_name, resume_command, checkpoint

    @property
    def exit_code(self) -> int:
        return EXIT_CTRL_C if self.signal_name == "SIGINT" else EXIT_TERMINATED


class StopRequest:
    """Catches the stop signals while installed (main thread only); ``signal_name`` is the first one seen."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in signal.Signals if sig.name in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
