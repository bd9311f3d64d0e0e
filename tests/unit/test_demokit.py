"""The demo's pieces that need no root (tests/demokit.py): signals end a run once, and a
failed run keeps its logs but none of its keys."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demokit import SIGNALS, Interrupted, SignalGuard, prune_to_logs


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize("first", SIGNALS)
def test_the_first_signal_interrupts_and_the_next_ones_do_not(
    restored_handlers: None, first: signal.Signals
) -> None:
    guard = SignalGuard()
    guard.arm()
    with pytest.raises(Interrupted) as caught:
        os.kill(os.getpid(), first)
    assert caught.value.signum == first
    for later in SIGNALS:  # e.g. SIGHUP from the closed terminal: the cleanup goes on
        os.kill(os.getpid(), later)
    assert guard.received == first


def test_a_disarmed_guard_only_notes_a_signal(restored_handlers: None) -> None:
    guard = SignalGuard()
    guard.arm()
    guard.disarm()
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.received == signal.SIGTERM


def test_a_failed_run_keeps_its_logs_and_nothing_else(tmp_path: Path) -> None:
    files = {
        "controller.log": "x",
        "k8s/apiserver.log": "x",
        "k8s/pki/admin.key": "-----BEGIN EC PRIVATE KEY-----",
        "k8s/users/agent.kubeconfig": "client-key-data: x",
        "k8s/etcd/member/wal/0.wal": "x",
        "tmp/tmpabc": "-----BEGIN EC PRIVATE KEY-----",
        "netns/vmdhcp-demo-agent-1/agent.log": "x",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    prune_to_logs(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["controller.log", "k8s/apiserver.log", "netns/vmdhcp-demo-agent-1/agent.log"]
    assert not (tmp_path / "tmp").exists()  # emptied folders go too
