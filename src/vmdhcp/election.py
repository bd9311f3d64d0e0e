"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's `tools/leaderelection`
does it, for the controller and the DHCP agents alike. A candidate never compares another
machine's timestamps with its own clock: it takes a lease held by someone else only after
seeing the record unchanged for the lease's duration on its own monotonic clock, so clock
skew is harmless. No `vmdhcp.k8s` or `kubernetes` here: the agent does not load them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from vmdhcp.errors import ApiError

log = logging.getLogger("vmdhcp.election")

JITTER_FACTOR = 1.2
RELEASE_ATTEMPTS = 3
EXPIRY_MARGIN = 0.05
"""client-go's: acquire attempts are spaced retry_period * (1 + JITTER_FACTOR * U[0, 1))."""

_FIELDS = ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions", "leaseDurationSeconds")

T = TypeVar("T")


class LeaseClient(Protocol):
    """What election needs of an API client (`vmdhcp.k8s.Kube` and the agent's own client).
    Errors are `ApiError`; TimeoutError and OSError are treated as transient too."""

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _micro(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: LeaseClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        jitter: float = JITTER_FACTOR,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if retry_period <= 0 or renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError("renew_deadline must exceed JITTER_FACTOR * retry_period > 0")
        if int(lease_duration) <= renew_deadline:
            raise ValueError("lease_duration (whole seconds) must exceed renew_deadline")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = int(lease_duration)
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.jitter = jitter
        self._monotonic = monotonic
        self._wall = wall
        self._sleep = sleep
        self._lease: dict[str, Any] | None = None  # last object read or written
        self._observed_key: tuple[Any, ...] | None = None
        self._observed_time = 0.0
        self._leading = False
        self._releasing = False
        self._nudged = asyncio.Event()
        self._renewed_at = 0.0  # start of the last successful acquire or renew attempt
        self.leading_since: float | None = None
        """Monotonic time at which we last became leader; None while not leading."""

    @property
    def _spec(self) -> dict[str, Any]:
        return dict((self._lease or {}).get("spec") or {})

    @property
    def observed_holder(self) -> str:
        return str(self._spec.get("holderIdentity") or "")

    @property
    def leader_transitions(self) -> int:
        return int(self._spec.get("leaseTransitions") or 0)

    def is_leader(self) -> bool:
        """Ask before every protected write. A renewal reached the server at some moment
        after its attempt started, and standbys count lease_duration from when they see it,
        so counting renew_deadline from the attempt's start (as client-go does) is the
        conservative bound; it also covers a process that was paused and woke up."""
        return self._leading and self._monotonic() - self._renewed_at < self.renew_deadline

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: read the lease, then take or renew it if allowed. True when we
        hold it now; errors, conflicts and a lease held by a live peer give False."""
        start = self._monotonic()
        try:
            return await self._try(start, _micro(self._wall()))
        except ApiError as exc:
            level = logging.DEBUG if exc.conflict else logging.WARNING
            log.log(level, "lease %s/%s: %s", self.namespace, self.name, exc)
        except (TimeoutError, OSError) as exc:
            log.warning("lease %s/%s: %r", self.namespace, self.name, exc)
        return False

    def time_left(self) -> float:
        """Seconds this leader may still write (0 when not leading): what a write's
        timeout must not exceed, so that no write of ours lands after a standby took over."""
        return max(0.0, self._time_left()) if self.is_leader() else 0.0

    def nudge(self) -> None:
        """The Lease changed (a watch saw it): a candidate tries now instead of at the end
        of its retry period, so a released Lease is taken within moments. The rules of
        taking it are unchanged; only the moment of looking is."""
        self._nudged.set()

    async def acquire(self) -> None:
        """Return once we lead; cancel to stop contending."""
        self._releasing = False
        while True:
            self._nudged.clear()  # before the attempt: a change seen during it counts
            if await self._attempt(self.renew_deadline):
                return
            pause = asyncio.ensure_future(self._sleep(self._next_try_in()))
            nudged = asyncio.ensure_future(self._nudged.wait())
            try:
                await asyncio.wait({pause, nudged}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                pause.cancel()
                nudged.cancel()

    async def renew_until_lost(self) -> None:
        """Renew every retry_period while leading; return once leadership is lost: another
        holder was seen, or no renewal succeeded within renew_deadline of the last one."""
        while self._leading:
            await self._sleep(self.retry_period)
            while self._leading:
                if self._time_left() > 0 and await self._attempt(self._time_left()):
                    break
                if self._time_left() <= 0:
                    self._stop(f"no renewal within {self.renew_deadline:g}s", logging.ERROR)
                elif self._leading:
                    await self._sleep(min(self.retry_period, self._time_left()))

    def _next_try_in(self) -> float:
        """The jittered retry period, but no later than just after the lease we saw held
        by another would expire on our clock: a dead leader's successor takes over then,
        not up to a retry period later."""
        wait = self.retry_period * (1 + self.jitter * random.random())
        holder = self.observed_holder
        if holder and holder != self.identity:
            duration = int(self._spec.get("leaseDurationSeconds") or self.lease_duration)
            expiry = self._observed_time + duration - self._monotonic()
            wait = min(wait, max(expiry, 0.0) + EXPIRY_MARGIN)
        return wait

    def _time_left(self) -> float:
        return self._renewed_at + self.renew_deadline - self._monotonic()

    async def run(
        self,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], Awaitable[None]],
    ) -> None:
        """Contend forever, calling back on each change (a leader that loses becomes a
        candidate again). Cancelling it stops leading, calls back, then releases."""
        try:
            while True:
                await self.acquire()
                try:  # a cancel while starting must also run the stop callback
                    await on_started_leading()
                    await self.renew_until_lost()
                finally:
                    self._stop("cancelled", logging.WARNING)
                    await on_stopped_leading()
        finally:
            await self.release()

    async def release(self) -> bool:
        """Give the lease up, if our last observed record says we hold it, so a standby
        takes over at once. We stop leading before the write is sent."""
        if self._lease is None or self.observed_holder != self.identity:
            return False
        self._releasing = True  # a renewal still in flight must not make us lead again
        self._stop("releasing the lease", logging.WARNING)
        for _ in range(RELEASE_ATTEMPTS):
            now = _micro(self._wall())
            spec = self._spec | {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            body = (self._lease or {}) | {"spec": spec}
            try:
                written = await self._bounded(
                    self.client.replace_lease(self.namespace, self.name, body),
                    self.renew_deadline,
                )
            except ApiError as exc:
                if not exc.conflict:
                    log.warning("could not release the lease %s/%s: %s", *self._id(), exc)
                    return False
                # a renewal of ours landed first (it outlives its cancelled caller): read
                # the new version, and release that one if it is still ours
                try:
                    self._lease = await self.client.read_lease(self.namespace, self.name)
                except (ApiError, TimeoutError, OSError):
                    return False
                if self.observed_holder != self.identity:
                    return False
                continue
            except (TimeoutError, OSError) as exc:
                log.warning("could not release the lease %s/%s: %s", *self._id(), exc)
                return False
            self._observe(written)
            log.info("released the lease %s/%s", self.namespace, self.name)
            return True
        return False

    def _id(self) -> tuple[str, str]:
        return self.namespace, self.name

    async def _try(self, start: float, now: str) -> bool:
        try:
            lease = await self.client.read_lease(self.namespace, self.name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._record(now, now, 0),
            }
            return self._won(await self.client.create_lease(self.namespace, body), start)
        self._observe(lease)
        spec = self._spec
        holder = self.observed_holder
        if holder not in ("", self.identity):
            self._stop(f"the lease is now held by {holder}", logging.ERROR)
            duration = int(spec.get("leaseDurationSeconds") or self.lease_duration)
            if self._monotonic() < self._observed_time + duration:
                return False
        transitions = self.leader_transitions
        if holder == self.identity:
            record = self._record(spec.get("acquireTime") or now, now, transitions)
        else:
            record = self._record(now, now, transitions + 1)
        body = lease | {"spec": spec | record}  # keeps metadata.resourceVersion: 409 if stale
        return self._won(await self.client.replace_lease(self.namespace, self.name, body), start)

    def _record(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        key = tuple(spec.get(field) for field in _FIELDS)
        if key != self._observed_key:
            holder = spec.get("holderIdentity") or ""
            if holder and holder not in (self.observed_holder, self.identity):
                log.info("lease %s/%s is held by %s", self.namespace, self.name, holder)
            self._observed_key = key
            self._observed_time = self._monotonic()
        self._lease = lease

    def _won(self, lease: dict[str, Any], start: float) -> bool:
        self._observe(lease)
        if self._releasing:
            return False
        self._renewed_at = start
        if not self._leading:
            self._leading = True
            self.leading_since = self._monotonic()
            log.info("became leader (lease %s/%s)", self.namespace, self.name)
        return True

    def _stop(self, reason: str, level: int) -> None:
        if self._leading:
            self._leading = False
            self.leading_since = None
            log.log(level, "stopped leading (lease %s/%s): %s", self.namespace, self.name, reason)

    async def _attempt(self, within: float) -> bool:
        try:
            return await self._bounded(self.try_acquire_or_renew(), within)
        except TimeoutError:
            log.warning("lease %s/%s: no answer within %.1fs", self.namespace, self.name, within)
            return False

    async def _bounded(self, call: Awaitable[T], within: float) -> T:
        """Like asyncio.wait_for, but timed by the injected sleep (tests use virtual time)."""
        task = asyncio.ensure_future(call)
        timer = asyncio.ensure_future(self._sleep(within))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            timed_out = not task.done()
            if timed_out:
                task.cancel()
        if timed_out:
            raise TimeoutError(f"no answer within {within:.1f}s")
        return task.result()
