"""The lease elector against a scripted API: errors never make a standby lead."""

import asyncio
from typing import Any

from vmdhcp.controller.leader import LeaderElector
from vmdhcp.k8s import ApiError


class ScriptedLeases:
    """read_lease answers from a script: an exception to raise or a lease to return."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.replaced: list[dict[str, Any]] = []

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]:
        step = self.script.pop(0) if self.script else ApiError(404, "NotFound", "")
        if isinstance(step, Exception):
            raise step
        return dict(step)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return body

    async def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> Any:
        self.replaced.append(body)
        return body


async def test_api_errors_while_acquiring_mean_not_yet() -> None:
    kube = ScriptedLeases([ApiError(503, "ServiceUnavailable", "etcd"), ApiError(0, "", "t/o")])
    elector = LeaderElector(kube, "kube-system", "me", retry_seconds=0.01)  # type: ignore[arg-type]
    await asyncio.wait_for(elector.acquire(), 5)
    assert elector.leading.is_set()
    assert kube.script == []  # both errors were retried, then the lease was created


async def test_a_lease_held_by_another_is_not_taken() -> None:
    held = {"spec": {"holderIdentity": "other", "leaseDurationSeconds": 15,
                     "renewTime": "2999-01-01T00:00:00.000000Z"}}  # fmt: skip
    kube = ScriptedLeases([held] * 50)
    elector = LeaderElector(kube, "kube-system", "me", retry_seconds=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(elector.acquire())
    await asyncio.sleep(0.1)
    assert not elector.leading.is_set()
    assert kube.replaced == []
    task.cancel()


async def test_renewal_gives_up_within_the_deadline() -> None:
    kube = ScriptedLeases([ApiError(503, "", "")] * 100)
    elector = LeaderElector(
        kube,  # type: ignore[arg-type]
        "kube-system",
        "me",
        lease_seconds=1,
        renew_seconds=0.05,
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(elector.keep(), 5)
    assert loop.time() - began < 1  # gave up before the lease (1 s) could pass to another
