"""Leader election on a coordination.k8s.io Lease (upstream's lock: `kube-system/
vm-dhcp-controllers`). Only the leader reconciles; losing the lease ends the process,
as upstream does, so a fresh start rebuilds everything from the API server."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from vmdhcp.k8s import ApiError, Kube

log = logging.getLogger("vmdhcp.controller.leader")

LEASE_NAME = "vm-dhcp-controllers"


def _micro(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self.leading = asyncio.Event()

    async def acquire(self) -> None:
        """Return once this process holds the lease; API errors mean "not yet" (a standby
        that gave up on an error would otherwise start as a second leader)."""
        while True:
            try:
                if await asyncio.wait_for(self._try(), self.renew_deadline):
                    break
            except (ApiError, TimeoutError) as exc:
                log.warning("cannot read the lease %s/%s: %s", self.namespace, LEASE_NAME, exc)
            await asyncio.sleep(self.retry_seconds)
        log.info("became leader (lease %s/%s)", self.namespace, LEASE_NAME)
        self.leading.set()

    @property
    def renew_deadline(self) -> float:
        """Give up leading this long after the last renewal: well before a standby may take
        the lease over (client-go's 10 s for a 15 s lease)."""
        return self.lease_seconds * 2 / 3

    async def keep(self) -> None:
        """Renew the lease until it is lost or cannot be renewed within the deadline; then
        return (the caller exits)."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self.renew_seconds)
            remaining = self.renew_deadline - (loop.time() - last_ok)
            try:
                if await asyncio.wait_for(self._try(), max(remaining, 0.1)):
                    last_ok = loop.time()
                    continue
                log.error("lost the lease %s/%s to another controller", self.namespace, LEASE_NAME)
                return
            except (ApiError, TimeoutError) as exc:
                log.warning("cannot renew the lease: %s", exc)
            if loop.time() - last_ok >= self.renew_deadline:
                log.error("could not renew the lease for %.0fs", self.renew_deadline)
                return

    async def release(self) -> None:
        """Give the lease up on a clean exit, so a standby takes over at once."""
        try:
            lease = await self.kube.read_lease(self.namespace, LEASE_NAME)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            await self.kube.replace_lease(self.namespace, LEASE_NAME, lease)
            log.info("released the lease %s/%s", self.namespace, LEASE_NAME)
        except ApiError as exc:
            log.warning("could not release the lease: %s", exc)

    async def _try(self) -> bool:
        now = datetime.now(UTC)
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro(now),
        }
        try:
            lease = await self.kube.read_lease(self.namespace, LEASE_NAME)
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = {
                "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0},
            }
            try:
                await self.kube.create_lease(self.namespace, body)
            except ApiError as create_error:
                if create_error.conflict:
                    return False
                raise
            return True
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        renewed = _parse(current.get("renewTime")) or datetime.min.replace(tzinfo=UTC)
        duration = int(current.get("leaseDurationSeconds") or self.lease_seconds)
        if holder not in (None, "", self.identity) and renewed + timedelta(seconds=duration) > now:
            return False
        new_spec = {**current, **spec}
        if holder != self.identity:
            new_spec["acquireTime"] = _micro(now)
            new_spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        lease["spec"] = new_spec
        try:
            await self.kube.replace_lease(self.namespace, LEASE_NAME, lease)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True
