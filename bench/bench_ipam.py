"""IPAM figures for this machine (`make bench-ipam`).

1. allocations per second while filling a /16 pool (lowest-free, one MAC each);
2. RSS growth of a /8 pool holding 10,000 allocations, measured in a fresh process;
3. time to restore 65,000 recorded allocations (as from IPPool status.ipv4.allocated).

Targets (issue 2): >= 100,000 allocations/s, /8 pool < 30 MB, restore < 0.5 s.
"""

import gc
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address

from vmdhcp.ipam import Pool

TARGET_RATE = 100_000
TARGET_MB = 30.0
TARGET_RESTORE_S = 0.5


def mac(n: int) -> str:
    return (
        f"02:00:{(n >> 24) & 0xFF:02x}:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"
    )


def fill_rate() -> tuple[float, int]:
    macs = [mac(n) for n in range(65_533)]
    rates = []
    for _ in range(3):
        pool = Pool.from_spec(
            "172.16.0.0/16", "172.16.0.1", "172.16.255.254", server="172.16.0.1", name="bench"
        )
        gc.collect()
        began = time.perf_counter()
        for m in macs:
            pool.allocate(m)
        elapsed = time.perf_counter() - began
        rates.append(len(macs) / elapsed)
        assert pool.available == 0
    return statistics.median(rates), len(macs)


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def slash8_memory_child() -> None:
    macs = [mac(n) for n in range(10_000)]
    gc.collect()
    before = rss_kib()
    pool = Pool.from_spec("10.0.0.0/8", "10.0.0.1", "10.255.255.254", name="bench")
    for m in macs:
        pool.allocate(m)
    gc.collect()
    after = rss_kib()
    assert pool.used == 10_000
    print((after - before) / 1024)


def slash8_memory() -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--slash8-child"], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def restore_time() -> float:
    base = int(IPv4Address("172.16.0.1"))
    claims = [(str(IPv4Address(base + n)), mac(n)) for n in range(65_000)]
    times = []
    for _ in range(3):
        pool = Pool.from_spec("172.16.0.0/16", "172.16.0.1", "172.16.255.254", name="bench")
        began = time.perf_counter()
        conflicts = pool.restore(claims)
        times.append(time.perf_counter() - began)
        assert conflicts == []
        assert pool.used == 65_000
    return statistics.median(times)


def main() -> int:
    if "--slash8-child" in sys.argv:
        slash8_memory_child()
        return 0
    rate, count = fill_rate()
    memory = slash8_memory()
    restore = restore_time()
    rows = [
        (
            f"fill a /16 ({count} allocations)",
            f"{rate:,.0f} alloc/s",
            f">= {TARGET_RATE:,}/s",
            rate >= TARGET_RATE,
        ),
        (
            "RSS growth, /8 pool with 10,000 allocations",
            f"{memory:.1f} MB",
            f"< {TARGET_MB:.0f} MB",
            memory < TARGET_MB,
        ),
        (
            "restore 65,000 allocations",
            f"{restore * 1000:.0f} ms",
            f"< {TARGET_RESTORE_S * 1000:.0f} ms",
            restore < TARGET_RESTORE_S,
        ),
    ]
    print(f"{'measure':<46} {'result':>18} {'target':>12}  ok")
    for name, result, target, ok in rows:
        print(f"{name:<46} {result:>18} {target:>12}  {'yes' if ok else 'NO'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
