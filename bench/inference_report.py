"""The tables and summary lines of ``bench.inference`` (see its docstring for what is measured)."""

from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def table(title: str, headers: list[str], rows: list[list[str]], say: Callable[[str], None]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    say(title)
    say("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for r in rows:
        say("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def cpu_bound(
    say: Callable[[str], None], rounds: list[dict[int, dict[str, Any]]], offline_cpu: list[float], parts: list[str]
) -> None:
    """CPU per sentence, offline against the whole endpoint path at c64. Unlike rates, CPU time per
    item hardly moves when other work shares the cores, so the ratio is what a machine with
    nothing else on it would show if both kept every core busy (an upper bound for the endpoint,
    whose batches also wait)."""
    if "replicas" not in parts and "server" not in parts:
        return
    path = {p: statistics.median(r[64]["cpu_ms"][p] for r in rounds) for p in parts}
    path["client"] = statistics.median(r[64]["client_ms"] for r in rounds)
    model = statistics.median(offline_cpu)
    total = sum(path.values())
    say(
        f"CPU per sentence: offline model {model:.2f} ms; endpoint path at c64 {total:.2f} ms ("
        + ", ".join(f"{p} {v:.2f}" for p, v in path.items())
        + "; not counted: Docker's port proxy, the control "
        f"plane's background): CPU-bound c64/offline {model / total:.2f}"
    )


def won(wins: list[str]) -> str:
    """``batch 32 at 2x1 x4, batch 64 at 1x2 x1``: which candidate was fastest, in how many rounds."""
    return ", ".join(f"{name} x{count}" for name, count in Counter(wins).most_common())


def report(
    args: argparse.Namespace,
    say: Callable[[str], None],
    describe: str,
    levels: list[int],
    sizes: list[int],
    layouts: list[tuple[int, int]],
    sweep: dict[Any, float],
    a_wins: list[str],
    b_wins: list[str],
    offline_runs: list[float],
    batch1_runs: list[float],
    rounds: list[dict[int, dict[str, Any]]],
    direct_runs: list[dict[str, Any]],
    parts: list[str],
    extra: Callable[[], None],
) -> None:
    offline_best, batch1 = statistics.median(offline_runs), statistics.median(batch1_runs)
    say("")
    table(
        "offline sweep, sentences/s (the model alone; layout = streams x torch threads)",
        ["batch", *(f"{s}x{t}" for s, t in layouts)],
        [[str(size), *(f"{sweep[(size, lay)]:.1f}" for lay in layouts)] for size in sizes],
        say,
    )
    say("")
    rows = []
    summary: dict[int, dict[str, float]] = {}
    for level in levels:
        per = [r[level] for r in rounds]
        lat = [x for r in per for x in r["latencies"]]
        rate = statistics.median(r["rate"] for r in per)
        summary[level] = {"rate": rate, "p50": nearest_rank(lat, 50) * 1000, "p99": nearest_rank(lat, 99) * 1000}
        rows.append(
            [
                f"c{level}",
                f"{rate:.1f}",
                f"{summary[level]['p50']:.1f}",
                f"{summary[level]['p99']:.1f}",
                f"{statistics.median(r['batch'] for r in per):.1f}",
                f"{rate / offline_best:.2f}",
                f"{rate / batch1:.2f}",
                *(f"{statistics.median(r['cpu_ms'][p] for r in per):.2f}" for p in parts),
                f"{statistics.median(r['client_ms'] for r in per):.2f}",
            ]
        )
    table(
        f"{describe}: single-sentence requests ({args.encoding}), median of {args.rounds} rounds of {args.seconds:g}s",
        [
            "level",
            "req/s",
            "p50 ms",
            "p99 ms",
            "mean batch",
            "/offline",
            "/batch1",
            *(f"{p} CPU ms/req" for p in parts),
            "client CPU ms/req",
        ],
        rows,
        say,
    )
    if direct_runs:
        lat = [x for r in direct_runs for x in r["latencies"]]
        rate = statistics.median(r["n"] / r["wall"] for r in direct_runs)
        say(
            f"c1 straight to one replica (no gateway): {rate:.1f}/s, p50 {nearest_rank(lat, 50) * 1000:.1f} ms, "
            f"p99 {nearest_rank(lat, 99) * 1000:.1f} ms; through the gateway: {summary[1]['rate']:.1f}/s, "
            f"p50 {summary[1]['p50']:.1f} ms"
            if 1 in summary
            else ""
        )
    c64 = summary[64]
    # Each round's own ratio, then the median: a burst of load from elsewhere hits a round's
    # offline and c64 runs together (they run back to back) instead of skewing one median.
    ratio = statistics.median(r[64]["rate"] / o for r, o in zip(rounds, offline_runs))
    over_b1 = statistics.median(r[64]["rate"] / b for r, b in zip(rounds, batch1_runs))
    say("")
    say(
        f"offline (a): {offline_best:.1f}/s; batch 1 (b): {batch1:.1f}/s; medians of {args.rounds} rounds, "
        f"each round's best candidate: (a) {won(a_wins)}; (b) {won(b_wins)}"
    )
    say(
        "per round, c64/offline: "
        + ", ".join(f"{r[64]['rate'] / o:.2f}" for r, o in zip(rounds, offline_runs))
        + "; c64/batch1: "
        + ", ".join(f"{r[64]['rate'] / b:.2f}" for r, b in zip(rounds, batch1_runs))
    )
    say(
        f"c64 / offline = {ratio:.3f} (median of rounds; target >= 0.85: {'PASS' if ratio >= 0.85 else 'MISS'}); "
        f"c64 / batch1 = {over_b1:.3f} (target >= 3: {'PASS' if over_b1 >= 3 else 'MISS'})"
    )
    extra()
    say(f"machine load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    say(
        f"BENCH inference endpoint_c64_per_s={c64['rate']:.1f} offline_per_s={offline_best:.1f} "
        f"batch1_per_s={batch1:.1f} p99_ms={c64['p99']:.1f} ratio={ratio:.3f}"
    )
