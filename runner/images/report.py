"""How an image build reports: events (a step starts, notes a phase, finishes) and tool output.

A cold build prints well over a thousand lines (debootstrap, pip download, every ``docker
build`` step) that a person only needs when something fails. So the build raises events, and a
reporter decides where they go:

- ``Reporter``: every event as one plain line to a ``log`` callback, the tool output indented;
  what ``build_images(log=...)`` callers (tests, scripts) have always received.
- ``ConsoleReport``: what a person at ``runner images build`` or ``scripts/setup.sh`` sees.
  Everything goes to a log file under the cache; the terminal gets one Rich row per step
  (spinner, the phase or ``docker build`` step it is at, elapsed time; ``cached`` for one that
  needed nothing). Where the output is not a terminal (CI, a pipe) there is no live display and
  no escape codes: one plain line per event. On failure: the log's last lines and its path.
  ``verbose`` (``--verbose``, ``RUNNER_VERBOSE=1``) streams everything as before.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Self

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text

from runner.images.defs import Log

#: Lines of the log shown when a build fails: enough for a compiler or apt error and its cause.
TAIL_LINES = 30
#: The classic builder's step lines (the docker SDK's build uses it): ``Step 3/7 : RUN ...``.
_DOCKER_STEP = re.compile(r"^Step (\d+)/(\d+) : ")


def verbose_from_env(env: Mapping[str, str] = os.environ) -> bool:
    """``RUNNER_VERBOSE=1`` (or true/yes/on) asks for the full stream, for CI debugging too."""
    return env.get("RUNNER_VERBOSE", "").strip().lower() in {"1", "true", "yes", "on"}


class Reporter:
    """Every event as one plain ``step: text`` line for ``log``; tool output indented.

    ``done`` adds the time since ``start`` (none for a cached step, which did no work).
    """

    def __init__(self, log: Log = print) -> None:
        self._log = log
        self._started: dict[str, float] = {}

    def start(self, step: str, text: str) -> None:
        """``step`` (``rootfs`` or an image name) begins real work."""
        self._started[step] = time.monotonic()
        self._log(f"{step}: {text}")

    def note(self, step: str, text: str) -> None:
        """A phase of a running step (debootstrap, pip download, docker build)."""
        self._log(f"{step}: {text}")

    def done(self, step: str, text: str, *, cached: bool = False) -> None:
        """``step`` is ready; ``cached`` when nothing had to be built."""
        began = self._started.pop(step, None)
        took = "" if cached or began is None else f" in {time.monotonic() - began:.1f}s"
        self._log(f"{step}: {text}{took}")

    def output(self, line: str) -> None:
        """One line of a tool's output (debootstrap, tar, pip, docker build)."""
        self._log("  " + line)


class _Mark(SpinnerColumn):
    """The spinner while a step runs; a green tick when done, a red cross when it failed."""

    def render(self, task: Task) -> Text:
        if task.fields.get("failed"):
            return Text("✗", style="red")
        if task.total is not None and task.completed >= task.total:  # a row born done (cached)
            return self.finished_text  # type: ignore[return-value]
        return super().render(task)  # type: ignore[return-value]


class _Elapsed(TimeElapsedColumn):
    """Rich's elapsed time, left out for a cached step: it did no work to time."""

    def render(self, task: Task) -> Text:
        return Text("") if task.fields.get("cached") else super().render(task)


class ConsoleReport(Reporter):
    """A build as a person sees it: the full output in ``log_path``, short lines on ``console``.

    Use it as a context manager (the log file and the live display live inside it). ``append``
    adds to an existing log (``scripts/setup.sh`` keeps one log for all its steps); otherwise
    the file starts empty, so it holds exactly the last build.
    """

    def __init__(
        self, console: Console, log_path: Path, *, verbose: bool = False, append: bool = False, prefix: str = "images"
    ) -> None:
        super().__init__(log=self._write)
        self.console, self.log_path, self.verbose, self.append, self.prefix = console, log_path, verbose, append, prefix
        #: Live rows only on a real terminal: in CI a spinner would be escape codes in a log.
        self.live = console.is_terminal and not console.is_dumb_terminal and not verbose
        self._file: IO[str] | None = None
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}
        self._text: dict[str, str] = {}
        self._current: str | None = None
        self.built: list[str] = []
        self.cached: list[str] = []

    # -- the context -------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.log_path.open("a" if self.append else "w", buffering=1)
        self._file.write(f"== runner images build, {datetime.now():%Y-%m-%d %H:%M:%S} ==\n")
        if self.live:
            self._progress = Progress(
                _Mark(finished_text=Text("✓", style="green")),
                TextColumn("[bold]{task.fields[step]}", table_column=Column(min_width=9, no_wrap=True)),
                TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                _Elapsed(),
                # No stdout/stderr redirection: a console on sys.stdout (the CLI's) would otherwise
                # write each frame through Rich's own proxy a second time, as plain text.
                console=self.console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_rows()
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- output ------------------------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        """Every event and output line goes to the file; with ``verbose`` to the console too."""
        if self._file is not None:
            self._file.write(line + "\n")
        if self.verbose:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        """A line for the person, whatever the mode (the header, the summary, the failure)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _plain(self, step: str, text: str) -> None:
        """Without a terminal (and without ``verbose``, which prints it already): one line."""
        if not self.live and not self.verbose:
            self.say(f"{self.prefix}: {step:<9} {text}")

    def stop_rows(self) -> None:
        """End the live display, leaving each step's final row on screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _row(self, step: str, description: str, **fields: Any) -> None:
        """Create or update ``step``'s row; ``description`` is Rich markup (texts are escaped)."""
        if self._progress is None:
            return
        if step not in self._tasks:  # add_task draws at once: the row is born with its fields
            self._tasks[step] = self._progress.add_task(
                description, **{"total": 1, "step": step, "cached": False, "failed": False, **fields}
            )
        self._progress.update(self._tasks[step], description=description, **fields)

    # -- events ------------------------------------------------------------------------------------------
    def start(self, step: str, text: str) -> None:
        super().start(step, text)
        self._current = step
        self._text[step] = text
        self._row(step, escape(text))
        self._plain(step, text)

    def note(self, step: str, text: str) -> None:
        super().note(step, text)
        self._row(step, escape(f"{self._text.get(step, '')}: {text}"))
        self._plain(step, f"  {text}")

    def done(self, step: str, text: str, *, cached: bool = False) -> None:
        began = self._started.get(step)
        super().done(step, text, cached=cached)
        (self.cached if cached else self.built).append(step)
        self._current = None
        if cached:
            self._row(step, f"[dim]{escape(text)}[/dim]", completed=1, cached=True)
            self._plain(step, text)
        else:
            self._row(step, f"[green]{escape(text)}[/green]", completed=1)
            took = f" in {time.monotonic() - began:.0f} s" if began is not None else ""
            self._plain(step, text + took)

    def output(self, line: str) -> None:
        super().output(line)
        step = self._current
        if step is not None and (m := _DOCKER_STEP.match(line)):
            self._row(step, escape(f"{self._text.get(step, '')}: docker build step {m[1]}/{m[2]}"))

    def fail(self, exc: BaseException) -> None:
        """Mark the running step failed, stop the live rows, show the log's tail and its path.

        The error itself goes into the log after the tail is read: the caller prints it (with
        its exit code), so it is not shown twice."""
        if self._current is not None:
            self._row(self._current, f"[red]failed[/red] ({escape(self._text.get(self._current, ''))})", failed=True)
        self.stop_rows()
        tail = self.tail() if not self.verbose and not isinstance(exc, KeyboardInterrupt) else []
        if self._file is not None:
            self._file.write(f"error: {exc}\n")
            self._file.flush()
        if isinstance(exc, KeyboardInterrupt):
            self.say(f"{self.prefix}: interrupted; full log: {self.log_path}")
            return
        if tail:  # verbose has just printed all of it
            self.say(f"{self.prefix}: the last {len(tail)} lines of {self.log_path}:")
            for line in tail:
                self.say(f"  | {line}")
        self.say(f"{self.prefix}: build failed; full log: {self.log_path}")

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The log's last ``lines`` lines."""
        if self._file is not None:
            self._file.flush()
        with self.log_path.open(errors="replace") as f:
            return list(deque((line.rstrip("\n") for line in f), maxlen=lines))


@contextmanager
def console_build(
    console: Console, log_path: Path, *, verbose: bool = False, append: bool = False, what: str = ""
) -> Iterator[ConsoleReport]:
    """A ``ConsoleReport`` around a build: the header line, a summary on success, and on any
    error the log's tail and path before the error itself propagates (its message and exit
    code stay the caller's to print)."""
    started = time.monotonic()
    with ConsoleReport(console, log_path, verbose=verbose, append=append) as report:
        where = (
            f"also written to {log_path}"
            if verbose
            else f"full output in {log_path}; --verbose or RUNNER_VERBOSE=1 shows it all"
        )
        report.say(f"{report.prefix}: {what or 'building'} ({where})")
        try:
            yield report
        except BaseException as exc:
            report.fail(exc)
            raise
        report.stop_rows()  # the rows stay on screen; the summary goes below them
        report.say(
            f"{report.prefix}: ready in {time.monotonic() - started:.0f} s "
            f"({len(report.built)} built, {len(report.cached)} cached)"
        )


__all__ = ["TAIL_LINES", "ConsoleReport", "Reporter", "console_build", "verbose_from_env"]
