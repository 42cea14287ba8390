"""Progress callbacks: the CLI draws rich progress bars, tests and library callers stay quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Reporter:
    """What a run says while it works; every method is optional for a subclass to override."""

    def phase(self, name: str, total: int | None = None) -> None:
        """A new phase begins (``total`` steps, when known)."""

    def advance(self, label: str = "") -> None:
        """One step of the current phase is done."""

    def log(self, message: str) -> None:
        """A line worth showing above the progress bars."""


class RichReporter(Reporter):
    """Progress bars on stderr, so ``--json`` output on stdout stays parseable."""

    def __init__(self, enabled: bool = True) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                                 disable=not enabled, transient=False)
        self._task: Any = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=self.progress.tasks[-1].completed)
        self.progress.stop()

    def phase(self, name: str, total: int | None = None) -> None:
        if self._task is not None:
            self.progress.update(self._task, total=self.progress.tasks[-1].completed or 1)
        self._task = self.progress.add_task(name, total=total)

    def advance(self, label: str = "") -> None:
        if self._task is not None:
            self.progress.advance(self._task)

    def log(self, message: str) -> None:
        self.progress.console.print(message)


class LineReporter(Reporter):
    """Progress for a log file or a CI log (stderr not a terminal): one timestamped line per phase and per
    step, never cut to a terminal's width, flushed as it happens."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self._step = 0

    def __enter__(self) -> LineReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()

    def _line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(f"{time.strftime('%H:%M:%S')} [{elapsed:7.1f}s] {text}\n")
        self.stream.flush()

    def phase(self, name: str, total: int | None = None) -> None:
        self._step = 0
        self._line(f"== {name}" + (f" ({total} steps)" if total else ""))

    def advance(self, label: str = "") -> None:
        self._step += 1
        self._line(f"   {self._step}. {label}" if label else f"   {self._step}.")

    def log(self, message: str) -> None:
        self._line(message)


def reporter_for_stderr(show: bool = True) -> RichReporter | LineReporter:
    """Progress bars on a terminal; plain timestamped lines when stderr goes to a file or a pipe."""
    if sys.stderr.isatty():
        return RichReporter(enabled=show)
    return LineReporter()


class PhaseClock:
    """Wall time per phase of a run (for the manifest and reports), forwarding each phase to a reporter."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.started = time.monotonic()
        #: {phase: seconds}, in the order phases began; a phase entered twice adds up
        self.durations: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def phase(self, name: str, total: int | None = None) -> None:
        self.stop()
        self._current = (name, time.monotonic())
        self.reporter.phase(name, total)

    def stop(self) -> None:
        if self._current is not None:
            name, began = self._current
            self.durations[name] = self.durations.get(name, 0.0) + time.monotonic() - began
            self._current = None

    def since_start(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> dict[str, float]:
        return {name: round(seconds, 1) for name, seconds in self.durations.items()}
