"""The table `bench_scale.py` prints: one row per size, the goals of issue 15 above them."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field

from bench.scale_probe import percentile

GOALS: dict[str, tuple[str, float]] = {  # key -> (text, limit); all "<=" goals
    "all": ("all Allocated", 60.0),
    "p50": ("create->Allocated p50", 5.0),
    "cpu": ("controller CPU/VM (ms)", 5.0),
    "ratio": ("CPU/VM vs 1,000", 1.5),
    "rss": ("controller RSS (MB)", 250.0),
    "stall": ("longest stall", 1.0),
    "restart": ("VM after restart", 2.0),
    "wcpu": ("webhook CPU/admission (ms)", 10.0),
    "adm": ("admission p50 / bare", 3.0),
    "wrss": ("webhook RSS (MB)", 60.0),
    "writes": ("writes/VM", 4.0),
    "agent": ("agent RSS (MB)", 20.0),
}


@dataclass
class Result:
    vms: int
    pools: int
    created_in: float = 0.0
    allocated: int = 0
    all_allocated: float | None = None
    p50: float = math.nan
    p99: float = math.nan
    cpu_ms: float = math.nan
    rss: float = math.nan
    writes: float = math.nan
    bare: list[float] = field(default_factory=list)
    start: tuple[list[float], float] = ([], math.nan)
    end: tuple[list[float], float] = ([], math.nan)
    burst_wcpu_ms: float = math.nan
    burst_adm: tuple[list[float], list[float]] = ([], [])
    wrss: float = math.nan
    stall: float = math.nan
    lag: float | None = None
    restart: float | None = None
    restart_from_start: float | None = None
    agent_lease: list[float] = field(default_factory=list)
    agent_rss: float = math.nan
    notes: list[str] = field(default_factory=list)


def ms(values: list[float], p: int = 50) -> str:
    return f"{percentile(values, p) * 1000:.0f}" if values else "-"


def sec(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f} s"


def checks(res: Result, base: Result | None) -> dict[str, float | None]:
    """The measured value for each goal of GOALS (None: not reached)."""
    mb = 1.048576  # MiB -> MB
    bare = percentile(res.bare, 50) if res.bare else math.nan
    adm = max(percentile(res.start[0], 50), percentile(res.end[0], 50) if res.end[0] else math.nan)
    wcpu = max(res.start[1], res.burst_wcpu_ms / 1000, res.end[1]) * 1000
    ratio = res.cpu_ms / base.cpu_ms if base and res.all_allocated is not None else None
    value: dict[str, float | None] = {
        "all": res.all_allocated,
        "p50": res.p50 if res.all_allocated is not None else None,
        "cpu": res.cpu_ms,
        "ratio": ratio if base is not res else 1.0,
        "rss": res.rss * mb,
        "stall": res.stall,
        "restart": res.restart,
        "wcpu": wcpu,
        "adm": adm / bare,
        "wrss": res.wrss * mb,
        "writes": res.writes,
        "agent": res.agent_rss * mb,
    }
    return {k: None if v is None or math.isnan(v) else v for k, v in value.items()}


HEADER = [
    "VMs", "created (rate)", "all Allocated", "create->Allocated p50 / p99", "controller CPU/VM",
    "x 1,000 row", "controller RSS", "writes/VM", "webhook CPU/admission start / burst / end",
    "admission p50 start / end (bare)", "admission p99 start / end", "admitted write p50 "
    "first / last tenth", "webhook RSS", "longest stall", "IPPool status lag",
    "VM after restart (from start)", "agent lease p50 / p99 (n)", "agent RSS",
]  # fmt: skip
GOAL_ROW = [
    "goal", "", "<= 60 s", "<= 5 s / -", "<= 5 ms", "<= 1.5x", "<= 250 MB", "<= 4",
    "<= 10 ms", "<= 3x bare", "", "", "<= 60 MB", "<= 1 s", "", "<= 2 s", "", "<= 20 MB",
]  # fmt: skip


def row(res: Result, value: dict[str, float | None]) -> list[str]:
    def mark(key: str, text: str) -> str:
        v = value[key]
        return text + (" (missed)" if v is None or v > GOALS[key][1] else "")

    mb = 1.048576
    c = res.cpu_ms
    restart = (
        "-" if res.restart is None else f"{res.restart:.2f} s ({res.restart_from_start:.1f} s)"
    )
    ratio = value["ratio"]
    wcpu = [res.start[1] * 1000, res.burst_wcpu_ms, res.end[1] * 1000]
    return [
        f"{res.vms:,}" + ("" if res.allocated == res.vms else f" ({res.allocated:,} done)"),
        f"{res.created_in:.1f} s ({res.vms / max(res.created_in, 1e-9):.0f}/s)",
        mark("all", sec(res.all_allocated)),
        mark("p50", f"{sec(res.p50)} / {sec(res.p99)}"),
        mark("cpu", f"{c:.2f} ms"),
        mark("ratio", "-" if ratio is None else f"{ratio:.2f}x"),
        mark("rss", f"{res.rss * mb:.0f} MB"),
        mark("writes", f"{res.writes:.2f}"),
        mark("wcpu", " / ".join("-" if math.isnan(x) else f"{x:.1f}" for x in wcpu) + " ms"),
        mark("adm", f"{ms(res.start[0])} / {ms(res.end[0])} ({ms(res.bare)}) ms"),
        f"{ms(res.start[0], 99)} / {ms(res.end[0], 99)} ms",
        f"{ms(res.burst_adm[0])} / {ms(res.burst_adm[1])} ms",
        mark("wrss", f"{res.wrss * mb:.0f} MB"),
        mark("stall", f"{res.stall:.2f} s"),
        sec(res.lag),
        mark("restart", restart),
        f"{sec(statistics.median(res.agent_lease) if res.agent_lease else None)} / "
        f"{sec(percentile(res.agent_lease, 99) if res.agent_lease else None)} "
        f"({len(res.agent_lease)})",
        mark("agent", f"{res.agent_rss * mb:.0f} MB"),
    ]


def header(pools: int, threads: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"bench-scale: {pools} IPPools, VMs round-robin over them, a fresh API server per "
        f"size, created at once from {threads} threads; webhook on (registered as in an "
        f"install), controller --no-agent with leader election, one pool's agent in "
        f"Kubernetes mode; {os.cpu_count()} CPUs, load average {load} at the start\n"
    )
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    print("| " + " | ".join(GOAL_ROW) + " |", flush=True)


def report(res: Result, base: Result) -> list[str]:
    """Prints the size's row; the goals it missed."""
    value = checks(res, base)
    print("| " + " | ".join(row(res, value)) + " |", flush=True)
    missed: list[str] = []
    for key, (text, limit) in GOALS.items():
        v = value[key]
        if v is None or v > limit:
            shown = "not reached" if v is None else f"{v:.3g}"
            missed.append(f"{res.vms:,} VMs: {text} {shown} (goal <= {limit:g})")
    missed += [f"{res.vms:,} VMs: note: {note}" for note in res.notes]
    return missed
