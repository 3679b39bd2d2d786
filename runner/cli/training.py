"""Training jobs on the command line: the progress bar of ``runner submit --follow`` and the
figures ``runner status`` prints, both from rank 0's reports (``workloads/training/README.md``).

``--follow`` reads the workload's log stream once: rank 0's ``progress`` reports move the bar
(step of total, loss, steps/s, ETA from the trainer's own rate), its ``resume`` and
``checkpoint`` reports become one short line each, its other lines are printed as they come;
the other ranks' lines are left out (they repeat rank 0's story). Without a terminal (a pipe,
CI) each progress report is one plain line instead of a bar. ``runner status`` shows the same
figures from the latest reports the supervisor kept per replica.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from workloads.common.report import parse_report

_KEY = re.compile(r"-r(\d+)-a(\d+)$")


def rank_and_attempt(replica_key: str) -> tuple[int, int]:
    """(replica index, attempt) from a replica key ``<workload>-r<index>-a<attempt>``."""
    match = _KEY.search(replica_key)
    return (int(match.group(1)), int(match.group(2))) if match else (-1, 0)


def duration(seconds: float | None) -> str:
    """A short human duration: 42s, 3m05s, 2h07m; '-' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_s(progress: dict[str, Any]) -> float | None:
    """Seconds left at the trainer's latest rate, or None before it has one."""
    rate, step, total = progress.get("steps_per_s"), progress.get("step"), progress.get("total_steps")
    if not rate or step is None or total is None:
        return None
    return max(0, total - step) / rate


def progress_text(progress: dict[str, Any]) -> str:
    """``step 120/1000 (12%), loss 2.3100, 36.2 steps/s, ETA 24s``."""
    step, total = progress.get("step", 0), progress.get("total_steps") or 0
    pct = f" ({100 * step / total:.0f}%)" if total else ""
    loss = progress.get("loss")
    return (
        f"step {step}/{total or '?'}{pct}, loss {'-' if loss is None else f'{loss:.4f}'}, "
        f"{progress.get('steps_per_s', 0):.1f} steps/s, ETA {duration(eta_s(progress))}"
    )


def rank0_reports(w: Mapping[str, Any]) -> dict[str, Any]:
    """The latest reports of rank 0, newest attempt first: each report type from the newest
    attempt that has one (a fresh attempt has resumed but not yet made progress, say)."""
    out: dict[str, Any] = {}
    for r in sorted((r for r in w.get("replicas", []) if r["index"] == 0), key=lambda r: -r["attempt"]):
        for kind, body in (r.get("reports") or {}).items():
            out.setdefault(kind, {**body, "attempt": r["attempt"]})
    return out


def training_lines(w: Mapping[str, Any]) -> list[str]:
    """The figures ``runner status`` shows for a training job."""
    reports = rank0_reports(w)
    lines = []
    if "progress" in reports:
        p = reports["progress"]
        lines.append(f"  progress: {progress_text(p)} (attempt {p['attempt']})")
    if "checkpoint" in reports:
        c = reports["checkpoint"]
        lines.append(f"  last checkpoint: step {c.get('step')} ({c.get('reason')}) {c.get('uri')}")
    resume = reports.get("resume")
    if resume and resume["attempt"] == max((r["attempt"] for r in w.get("replicas", [])), default=0):
        lines.append(f"  resumed from step {resume.get('step')} ({resume.get('uri')})")
    if "result" in reports:
        r = reports["result"]
        lines.append(
            f"  result: loss {r.get('first_loss')} -> {r.get('final_loss')} (validation {r.get('val_loss')}), "
            f"{r.get('steps_per_s')} steps/s on {r.get('world_size')} worker(s)"
        )
        lines.append(f"  final checkpoint: {r.get('checkpoint')}  (serve it: see `runner artifacts ls {w['id']}`)")
    return lines


def follow_lines(items: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Rank 0's stream as events: ("progress", report), ("line", text). Other ranks are dropped;
    a new attempt is announced once."""
    attempt = 0
    for item in items:
        index, item_attempt = rank_and_attempt(item["replica"])
        if index != 0:
            continue
        if item_attempt != attempt:
            if attempt:
                yield "line", f"-- attempt {item_attempt} --"
            attempt = item_attempt
        report = parse_report(item["line"])
        if report is None:
            yield "line", item["line"]
            continue
        kind = report.pop("runner")
        if kind == "progress":
            yield "progress", report
        elif kind == "checkpoint":
            yield "line", f"checkpoint: step {report.get('step')} ({report.get('reason')}) {report.get('uri')}"
        elif kind == "resume":
            yield "line", f"resumed from step {report.get('step')} of {report.get('total_steps')} ({report.get('uri')})"
        elif kind == "result":
            yield (
                "line",
                (
                    f"result: loss {report.get('first_loss')} -> {report.get('final_loss')}, "
                    f"{report.get('steps_per_s')} steps/s; final checkpoint {report.get('checkpoint')}"
                ),
            )
        else:
            yield "line", item["line"]


def follow_training(items: Iterable[Mapping[str, Any]], console: Console) -> None:
    """Print rank 0's log stream with a progress bar (plain progress lines without a terminal)."""
    if not console.is_terminal:
        for kind, value in follow_lines(items):
            print(f"progress: {progress_text(value)}" if kind == "progress" else value, flush=True)
        return
    columns = (
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} steps/s"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("training", total=None, loss="-", rate="-", eta="-")
        for kind, value in follow_lines(items):
            if kind == "line":
                bar.console.print(value, markup=False, highlight=False)
                continue
            loss = value.get("loss")
            bar.update(
                task,
                completed=value.get("step", 0),
                total=value.get("total_steps"),
                loss="-" if loss is None else f"{loss:.4f}",
                rate=f"{value.get('steps_per_s', 0):.1f}",
                eta=duration(eta_s(value)),
            )
