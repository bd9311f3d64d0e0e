"""DHCP server comparison: our agent against ISC Kea and dnsmasq, with perfdhcp, in one lab.

One lab of network namespaces (tests/netns/lab.py): a server namespace and a perfdhcp
namespace with an address in the subnet (perfdhcp -4 is a relay: giaddr set, replies unicast
to giaddr:67). The same 1,000 static reservations for every server in a /21, for exactly the
MACs perfdhcp `-b mac=02:00:00:00:00:00 -R 1000` draws. perfdhcp offers 500, 2,000 and 5,000
DORA/s for a bounded period each; the server is pinned to CPU 0, perfdhcp (single-threaded) to
CPU 1. Every run starts its server afresh and warms it up for a second; the servers take turns
run by run for several rounds, and each figure is the median over the rounds, except the
latency percentiles, which are over the exchanges of all rounds pooled.

Per run: achieved DORA/s (ACKs received / period), drops (1 - ACKs / DISCOVERs sent),
p50 and p99 latency of every request→reply exchange (DISCOVER→OFFER and REQUEST→ACK pooled,
from perfdhcp -x t), and server CPU µs per completed DORA (utime+stime of the server
process, all threads, from /proc/PID/stat, over the run), and "other": the machine's CPU
that neither the server nor perfdhcp used meanwhile (kernel packet work plus whatever else
runs; a high value marks a noisy run). Then the agent alone with 10,000 leases in a /18:
resident memory (VmRSS, VmHWM) and start-up time to /readyz.

Run with `make bench-dhcp` (or `sudo .venv/bin/python bench/bench_dhcp.py`); needs root,
kea-dhcp4, dnsmasq, perfdhcp and taskset (scripts/install-debian-deps.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.netns.lab import (
    ANCHOR_BINARIES,
    CLIENT_BINARIES,
    Agent,
    Dnsmasq,
    Kea,
    Lab,
    Netns,
    PoolSpec,
    perfdhcp,
    perfdhcp_macs,
    skip_reason,
    sweep_stale_labs,
    write_ippool,
)

BASE_MAC = "02:00:00:00:00:00"
RESERVATIONS = 1_000
NETWORK = IPv4Network("10.60.0.0/21")
SERVER_IP = IPv4Address("10.60.0.1")
RELAY_IP = IPv4Address("10.60.0.2")
BIG_LEASES = 10_000
BIG_NETWORK = IPv4Network("10.64.0.0/18")
SERVER_CPU, PERF_CPU = 0, 1
SERVERS = ("agent", "agent-nocache", "kea", "dnsmasq")
AGENT_ROWS = ("agent", "agent-nocache")
#: "agent-nocache" is the agent with its reply memo off (--reply-cache-size 0): every
#: request is parsed, decided and encoded, as a request seen for the first time is. perfdhcp
#: repeats the same 1,000 clients, so the "agent" row is mostly memo hits.
AGENT_EXTRA_ARGS = {"agent": (), "agent-nocache": ("--reply-cache-size", "0")}
#: perfdhcp is pinned to one CPU: its multi-thread mode would have its sender and receiver
#: threads take turns on that CPU and add their waits to the latencies it reports
PERF_ARGS = ("-g", "single")

TARGET_DROPS_PCT = 1.0
TARGET_CPU_VS_KEA = 0.5
TARGET_RSS_MB = 60.0
TARGET_STARTUP_S = 2.0
TARGET_RATE = 5_000


class Server(Protocol):
    @property
    def pid(self) -> int: ...

    def stop(self) -> int: ...


@dataclass
class Row:
    server: str
    offered: int
    achieved: float
    drops_pct: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_dora: float
    other_cpu_pct: float
    completed: int
    perfdhcp_exit: int
    memo_hits_pct: float = float("nan")
    """The agent's share of requests answered from its reply memo during the run."""
    delays_ms: list[float] = field(default_factory=list, repr=False)
    """Every exchange's latency (per run; pooled by `median_row`, then dropped)."""


def spec_for(network: IPv4Network, server_ip: IPv4Address, count: int) -> PoolSpec:
    """`count` reservations for perfdhcp's MACs, from the 11th address of the network on."""
    hosts = list(network.hosts())
    macs = perfdhcp_macs(BASE_MAC, count)
    return PoolSpec(
        network=network,
        server_ip=server_ip,
        router=hosts[-1],
        dns=(hosts[-2], hosts[-3]),
        domain_name="bench.example",
        domain_search=("bench.example", "svc.bench.example"),
        ntp=(str(hosts[-4]),),
        lease_time=3600,
        start=hosts[9],
        end=hosts[-5],
        allocated={hosts[9 + r]: mac for r, mac in enumerate(macs)},
        name="bench",
        network_name="default/bench",
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (all CPUs, including steal), in seconds."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of our waited-for children (perfdhcp is one once its run returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_server(name: str, lab: Lab, spec: PoolSpec) -> Server:
    if name in AGENT_EXTRA_ARGS:
        pool = write_ippool(lab.workdir / "bench-pool.yaml", spec)
        agent = Agent(lab.srv, pool, extra_args=AGENT_EXTRA_ARGS[name], cpu=SERVER_CPU)
        return agent.start(ready_timeout=30)
    if name == "kea":
        return Kea(lab.srv, spec, cpu=SERVER_CPU).start()
    return Dnsmasq(lab.srv, spec, cpu=SERVER_CPU).start()


def measure(
    name: str, server: Server, relay: Netns, rate: int, seconds: int, workdir: Path, round_no: int
) -> Row:
    memo_before = memo_lookups(server)
    before = cpu_seconds(server.pid)
    busy_before, wall_before = machine_busy_seconds(), time.monotonic()
    children_before = children_cpu_seconds()
    result = perfdhcp(
        relay,
        SERVER_IP,
        RELAY_IP,
        BASE_MAC,
        RESERVATIONS,
        rate=rate,
        period=seconds,
        cpu=PERF_CPU,
        timers=True,
        extra=PERF_ARGS,
        log=workdir / f"perfdhcp-{name}-{rate}-r{round_no}.log",
    )
    used = cpu_seconds(server.pid) - before
    memo_after = memo_lookups(server)
    hits, misses = (after - before for after, before in zip(memo_after, memo_before, strict=True))
    perf_used = children_cpu_seconds() - children_before
    busy = machine_busy_seconds() - busy_before
    wall = time.monotonic() - wall_before
    other = max(0.0, busy - used - perf_used) / (wall * (os.cpu_count() or 1)) * 100
    delays = result.delays_ms.get("DO", []) + result.delays_ms.get("RA", [])
    completed = result.completed
    return Row(
        server=name,
        offered=rate,
        achieved=completed / seconds,
        drops_pct=result.drop_percent(),
        p50_ms=percentile(delays, 50),
        p99_ms=percentile(delays, 99),
        cpu_us_per_dora=used * 1e6 / completed if completed else float("inf"),
        other_cpu_pct=other,
        completed=completed,
        perfdhcp_exit=result.exit_code,
        memo_hits_pct=hits * 100 / (hits + misses) if hits + misses else float("nan"),
        delays_ms=delays,
    )


def memo_lookups(server: Server) -> tuple[float, float]:
    """(hits, misses) of the agent's reply memo so far; NaNs for other servers."""
    if not isinstance(server, Agent):
        return float("nan"), float("nan")
    name = "vmdhcp_agent_reply_cache_total"
    return server.metric(name, result="hit"), server.metric(name, result="miss")


def run_comparison(
    workdir: Path, servers: list[str], rates: list[int], seconds: int, warmup: int, rounds: int
) -> list[Row]:
    """`rounds` rounds of (each rate: each server: start, warm up, measure, stop). Each figure
    of a (server, rate) is the median over the rounds; the servers take turns run by run, so
    that a burst of other load on the machine does not land on one server only."""
    runs: dict[tuple[str, int], list[Row]] = {}
    spec = spec_for(NETWORK, SERVER_IP, RESERVATIONS)
    with Lab(workdir, network=NETWORK, server_ip=SERVER_IP) as lab:
        relay = lab.add_relay(RELAY_IP)
        for round_no in range(1, rounds + 1):
            for rate in rates:
                for name in servers:
                    row = run_one(name, lab, spec, relay, rate, seconds, warmup, workdir, round_no)
                    runs.setdefault((name, rate), []).append(row)
                    print(
                        f"  round {round_no} {name:8} {rate:>6}/s: {row.achieved:8.0f} DORA/s,"
                        f" drops {row.drops_pct:5.2f}%, p50 {row.p50_ms:.3f} ms,"
                        f" p99 {row.p99_ms:.3f} ms, {row.cpu_us_per_dora:.1f} µs CPU/DORA,"
                        f" other {row.other_cpu_pct:.0f}%",
                        file=sys.stderr,
                    )
    return [median_row(runs[(name, rate)]) for rate in rates for name in servers]


def run_one(
    name: str,
    lab: Lab,
    spec: PoolSpec,
    relay: Netns,
    rate: int,
    seconds: int,
    warmup: int,
    workdir: Path,
    round_no: int,
) -> Row:
    server = start_server(name, lab, spec)
    try:
        # warm-up, not measured: every server sees the same first exchanges
        perfdhcp(
            relay, SERVER_IP, RELAY_IP, BASE_MAC, RESERVATIONS,
            rate=1000, period=warmup, cpu=PERF_CPU, extra=PERF_ARGS,
            log=workdir / f"perfdhcp-{name}-{rate}-warmup-r{round_no}.log",
        )  # fmt: skip
        return measure(name, server, relay, rate, seconds, workdir, round_no)
    finally:
        rc = server.stop()
        if rc not in (0, -15):
            print(f"  {name} exited {rc} when stopped", file=sys.stderr)


def median_row(rows: list[Row]) -> Row:
    """Medians over the runs, except latency: its percentiles are over the exchanges of all
    runs pooled. A p99 is set by a few hundred exchanges of each run, so a median of three
    per-run p99s moves with whatever else the machine did at those moments."""

    def med(attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in rows))

    pooled = [delay for r in rows for delay in r.delays_ms]

    return Row(
        server=rows[0].server,
        offered=rows[0].offered,
        achieved=med("achieved"),
        drops_pct=med("drops_pct"),
        p50_ms=percentile(pooled, 50),
        p99_ms=percentile(pooled, 99),
        cpu_us_per_dora=med("cpu_us_per_dora"),
        other_cpu_pct=med("other_cpu_pct"),
        memo_hits_pct=med("memo_hits_pct"),
        completed=sum(r.completed for r in rows),
        perfdhcp_exit=max(r.perfdhcp_exit for r in rows),
    )


@dataclass
class Footprint:
    leases: int
    startup_s: list[float]
    rss_mb: float
    hwm_mb: float
    rss_after_load_mb: float
    load_completed: int


def run_footprint(workdir: Path, repeats: int) -> Footprint:
    spec = spec_for(BIG_NETWORK, BIG_NETWORK[1], BIG_LEASES)
    startups: list[float] = []
    rss = hwm = after = 0.0
    completed = 0
    with Lab(workdir, network=BIG_NETWORK, server_ip=BIG_NETWORK[1]) as lab:
        relay = lab.add_relay(BIG_NETWORK[2])
        pool = write_ippool(lab.workdir / "big-pool.yaml", spec)
        for i in range(repeats):
            agent = Agent(lab.srv, pool, extra_args=(), cpu=SERVER_CPU, port=8080 + i)
            agent.start(ready_timeout=60)
            startups.append(agent.ready_after)
            if i == repeats - 1:
                rss, hwm = memory_mb(agent.pid)
                result = perfdhcp(
                    relay, BIG_NETWORK[1], BIG_NETWORK[2], BASE_MAC, BIG_LEASES,
                    rate=2000, period=3, cpu=PERF_CPU, extra=PERF_ARGS,
                    log=workdir / "perfdhcp-footprint.log",
                )  # fmt: skip
                completed = result.completed
                after = max(memory_mb(agent.pid))
            rc = agent.stop()
            if rc != 0:
                raise SystemExit(f"agent exited {rc} on SIGTERM\n{agent.tail()}")
    return Footprint(BIG_LEASES, startups, rss, hwm, after, completed)


HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
KERNEL_DEFAULT_HALT_POLL_NS = 200_000


@contextlib.contextmanager
def halt_polling(nanoseconds: int) -> Iterator[str]:
    """Set the guest's cpuidle-haltpoll polling window for the duration, then restore it.

    In a KVM guest an idle vCPU halts; with a polling window it first polls for up to that
    long, so a packet arriving soon after finds it running. Halting costs the next wake-up
    (VM entry, caches and TLB cooled by whatever the host ran meanwhile), and it costs the
    server that idles most the most: on the machines this project was measured on the
    window is 0 (the kernel's default is 200 µs), and there the agent answering from its
    memo showed a p50 8 µs above Kea's and a p99 well above it, while with the kernel's
    default window every server got both faster and cheaper. It is a machine setting, the
    same for every server, not the server's CPU. Without the haltpoll driver (bare metal,
    another hypervisor) there is nothing to set and the run is an ordinary one. Yields a
    line saying what was done, for the report."""
    if not HALT_POLL.exists():
        yield f"no {HALT_POLL} (not a haltpoll guest): nothing was set"
        return
    before = HALT_POLL.read_text().strip()
    HALT_POLL.write_text(str(nanoseconds))
    try:
        yield f"cpuidle-haltpoll window {nanoseconds} ns for the runs (this machine's: {before})"
    finally:
        HALT_POLL.write_text(before)


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x" if value == value and value != float("inf") else "-"


def print_table(rows: list[Row], seconds: int, rounds: int) -> None:
    by = {(r.server, r.offered): r for r in rows}
    head = (
        f"{'server':13} {'offered/s':>9} {'DORA/s':>8} {'drops':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'CPU µs/DORA':>11} {'CPU÷Kea':>8} {'CPU÷dnsmasq':>11} {'p99÷Kea':>8} {'other':>6}"
        f" {'memo':>5}"
    )
    print(
        f"\nperfdhcp relay, {RESERVATIONS:,} static reservations (/21), median of {rounds}"
        f" runs of {seconds} s per row, server on CPU {SERVER_CPU}, perfdhcp on CPU {PERF_CPU};"
        " latency = each DISCOVER→OFFER and REQUEST→ACK"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        kea = by.get(("kea", r.offered))
        dns = by.get(("dnsmasq", r.offered))
        ratios = ["", "", ""]
        memo = f"{r.memo_hits_pct:.0f}%" if r.memo_hits_pct == r.memo_hits_pct else ""
        if r.server in AGENT_ROWS:
            if kea:
                ratios[0] = fmt_ratio(r.cpu_us_per_dora / kea.cpu_us_per_dora)
                ratios[2] = fmt_ratio(r.p99_ms / kea.p99_ms)
            if dns:
                ratios[1] = fmt_ratio(r.cpu_us_per_dora / dns.cpu_us_per_dora)
        print(
            f"{r.server:13} {r.offered:>9,} {r.achieved:>8,.0f} {r.drops_pct:>6.2f}%"
            f" {r.p50_ms:>7.3f} {r.p99_ms:>7.3f} {r.cpu_us_per_dora:>11.1f}"
            f" {ratios[0]:>8} {ratios[1]:>11} {ratios[2]:>8} {r.other_cpu_pct:>5.0f}%"
            f" {memo:>5}"
        )
    print(
        "other = machine CPU used by neither the server nor perfdhcp during the run (kernel"
        " packet work and anything else running): high values flag a noisy measurement;"
        " memo = the agent's requests answered from its reply memo"
    )


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def judged_rate(rows: list[Row]) -> int | None:
    """The offered rate the targets are judged at: TARGET_RATE when the agent ran at it,
    else the highest rate it ran at (None: the agent did not run)."""
    rates = sorted({r.offered for r in rows if r.server == "agent"})
    if not rates:
        return None
    return TARGET_RATE if TARGET_RATE in rates else rates[-1]


def print_targets(rows: list[Row], foot: Footprint | None) -> None:
    by = {(r.server, r.offered): r for r in rows}
    rate = judged_rate(rows)
    ours = by.get(("agent", rate)) if rate is not None else None
    kea = by.get(("kea", rate)) if rate is not None else None
    if rate is not None:
        note = (
            ""
            if rate == TARGET_RATE
            else f" (the targets are set for {TARGET_RATE:,}/s, which this run did not offer)"
        )
        print(f"\ntargets at {rate:,}/s offered{note}:")
    if ours:
        print(
            f"  drops <= {TARGET_DROPS_PCT:g}%: {ours.drops_pct:.2f}%"
            f"  [{verdict(ours.drops_pct <= TARGET_DROPS_PCT)}]"
        )
    if ours and kea:
        limit = kea.cpu_us_per_dora * TARGET_CPU_VS_KEA
        print(
            f"  CPU/DORA <= half of Kea's ({limit:.1f} µs): {ours.cpu_us_per_dora:.1f} µs"
            f"  [{verdict(ours.cpu_us_per_dora <= limit)}]"
        )
        cold = by.get(("agent-nocache", rate))
        if cold:
            print(
                f"    (reply memo off, every request decided afresh: {cold.cpu_us_per_dora:.1f} µs,"
                f" {fmt_ratio(cold.cpu_us_per_dora / kea.cpu_us_per_dora)} Kea's)"
            )
        print(
            f"  p99 <= Kea's ({kea.p99_ms:.3f} ms): {ours.p99_ms:.3f} ms"
            f"  [{verdict(ours.p99_ms <= kea.p99_ms)}]"
        )
    if foot:
        peak = max(foot.hwm_mb, foot.rss_after_load_mb)
        startup = statistics.median(foot.startup_s)
        print(f"agent with {foot.leases:,} leases (/18):")
        print(
            f"  RSS <= {TARGET_RSS_MB:g} MB: {foot.rss_mb:.1f} MB when ready, {peak:.1f} MB peak"
            f" after {foot.load_completed:,} DORAs  [{verdict(peak <= TARGET_RSS_MB)}]"
        )
        runs = ", ".join(f"{s:.2f}" for s in foot.startup_s)
        print(
            f"  start-up to /readyz <= {TARGET_STARTUP_S:g} s: median {startup:.2f} s"
            f" ({runs})  [{verdict(startup <= TARGET_STARTUP_S)}]"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--rates", default="500,2000,5000", help="offered DORA/s, comma-separated")
    parser.add_argument("--seconds", type=int, default=5, help="perfdhcp period per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per (server, rate)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds first")
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--no-footprint", action="store_true", help="skip the 10,000-lease part")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--halt-poll-ns",
        type=int,
        metavar="NS",
        help="in a KVM guest, set cpuidle-haltpoll's polling window for the run (the "
        f"kernel's default is {KERNEL_DEFAULT_HALT_POLL_NS}; see halt_polling)",
    )
    args = parser.parse_args(argv)

    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    reason = skip_reason((*CLIENT_BINARIES, *ANCHOR_BINARIES))
    if reason:
        print(f"bench-dhcp: cannot run: {reason}", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench-dhcp: needs 2 CPUs (server and perfdhcp each pinned to one)", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",") if r]

    sweep_stale_labs()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dhcp-"))
    started = time.monotonic()
    if args.halt_poll_ns is not None and args.halt_poll_ns < 0:
        parser.error("--halt-poll-ns must be >= 0")
    polling = args.halt_poll_ns is not None
    with halt_polling(args.halt_poll_ns) if polling else contextlib.nullcontext("") as setting:
        rows = run_comparison(workdir, servers, rates, args.seconds, args.warmup, args.rounds)
    foot = None
    if "agent" in servers and not args.no_footprint:
        foot = run_footprint(workdir, args.startup_runs)
    print_table(rows, args.seconds, args.rounds)
    if setting:
        print(setting)
    print_targets(rows, foot)
    print(f"\n({time.monotonic() - started:.0f} s; logs in {workdir})" if args.keep else "")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"rows": [asdict(r) for r in rows], "footprint": asdict(foot) if foot else None},
                indent=2,
            )
        )
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
