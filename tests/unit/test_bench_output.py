"""The benchmarks' verdicts say what they judged: bench-dhcp names the rate its targets were
judged at (they are set for 5,000/s; a run at other rates is judged at its highest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_dhcp() -> ModuleType:
    return load("bench_dhcp")


def row(module: ModuleType, server: str, offered: int, cpu: float) -> object:
    return module.Row(server, offered, offered * 0.99, 0.5, 0.2, 0.9, cpu, 5.0, 1000, 0)


@pytest.mark.parametrize(
    ("rates", "judged"),
    [((500, 2_000, 5_000), "5,000/s offered:"), ((500, 2_000), "2,000/s offered (the targets")],
)
def test_the_verdict_names_the_rate_it_judged(
    bench_dhcp: ModuleType,
    capsys: pytest.CaptureFixture[str],
    rates: tuple[int, ...],
    judged: str,
) -> None:
    rows = [row(bench_dhcp, s, r, cpu) for r in rates for s, cpu in (("agent", 10), ("kea", 30))]
    bench_dhcp.print_targets(rows, None)
    out = capsys.readouterr().out
    assert f"targets at {judged}" in out
    assert out.count("[ok]") == 3  # drops, CPU and p99, against the row of that rate
    if 5_000 not in rates:
        assert "targets at 5,000/s" not in out
