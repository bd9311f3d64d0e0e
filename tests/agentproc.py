"""Run `vm-dhcp-agent` as a real process for tests, and read its HTTP endpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

AGENT = Path(sys.executable).parent / "vm-dhcp-agent"
CONTROLLER = Path(sys.executable).parent / "vm-dhcp-controller"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class AgentProcess:
    process: subprocess.Popen[str]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
                status: int = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, body

    def ready(self) -> bool:
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def leases(self) -> dict[str, dict[str, Any]]:
        status, body = self.get("/leases")
        assert status == 200, body
        return {mac: json.loads(record) for mac, record in body.items()}

    def metric(self, name: str) -> float:
        status, body = self.get("/metrics")
        assert status == 200
        for line in str(body).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_agent(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None, ready_timeout: float = 15
) -> Iterator[AgentProcess]:
    """Start the agent with `args` (plus its HTTP port), wait for /readyz, stop it with
    SIGTERM at the end and check that it exits 0."""
    with running_process(AGENT, args, log, env, ready_timeout) as agent:
        yield agent


@contextmanager
def running_controller(
    args: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30,
    expect_exit: int = 0,
) -> Iterator[AgentProcess]:
    """The same for `vm-dhcp-controller`."""
    with running_process(CONTROLLER, args, log, env, ready_timeout, expect_exit) as controller:
        yield controller


@contextmanager
def running_process(
    program: Path,
    args: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 15,
    expect_exit: int = 0,
) -> Iterator[AgentProcess]:
    """Start `program`, wait for /readyz, SIGTERM it at the end; its exit code (also when
    a test killed it) must be `expect_exit`."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(program), *args, "--http-address", "127.0.0.1", "--http-port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
    agent = AgentProcess(process, port, log)
    try:
        wait_for(
            lambda: agent.ready() or process.poll() is not None,
            ready_timeout,
            f"{program.name} to become ready",
        )
        assert process.poll() is None, (
            f"{program.name} exited {process.returncode}:\n{agent.output()}"
        )
        yield agent
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{program.name} ignored SIGTERM:\n{agent.output()}") from None
    assert process.returncode == expect_exit, (
        f"{program.name} exited {process.returncode}:\n{agent.output()}"
    )
