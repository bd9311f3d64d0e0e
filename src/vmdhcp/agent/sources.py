"""Where the agent's IPPool comes from: a manifest file, or the API server.

Both deliver whole IPPool objects (or None when the pool is gone) to one callback, so
the two modes behave the same. Neither ever stops the agent: a broken file or an
unreachable API server is logged and retried while the last good state keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vmdhcp.agent import kubeapi
from vmdhcp.api import GROUP, VERSION, IPPool
from vmdhcp.watching import list_then_watch

log = logging.getLogger(__name__)

Deliver = Callable[[IPPool | None], Awaitable[None]]
# libyaml's loader reads a 10,000-lease pool six times faster than the pure-Python one
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SourceError(ValueError):
    pass


async def _deliver_safely(deliver: Deliver, pool: IPPool | None) -> None:
    """A version that cannot be applied is logged; the source (and the agent) go on with
    the last good state instead of ending the process."""
    try:
        await deliver(pool)
    except Exception:  # the source's boundary: one bad version must not stop DHCP
        log.exception("ippool version could not be applied; keeping the previous leases")


def parse_ippool(document: Any, origin: str) -> IPPool:
    if not isinstance(document, dict):
        raise SourceError(f"{origin}: not an IPPool object")
    if document.get("kind", "IPPool") != "IPPool":
        raise SourceError(f"{origin}: kind {document.get('kind')!r} is not IPPool")
    try:
        return IPPool.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SourceError(f"{origin}: {where}: {first['msg']}") from None


def read_ippool_file(path: Path) -> IPPool:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    try:
        document = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        raise SourceError(f"{path}: not YAML or JSON: {exc}".splitlines()[0]) from None
    return parse_ippool(document, str(path))


class FileSource:
    """Polls the file's identity (inode, size, mtime) and delivers each new version."""

    def __init__(
        self,
        path: Path,
        deliver: Deliver,
        interval: float = 0.5,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.deliver = deliver
        self.interval = interval
        self.on_error = on_error
        self._seen: tuple[int, int, int] | None = None
        self._last_error: str | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    async def run(self) -> None:
        while True:
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                await self._load()
            await asyncio.sleep(self.interval)

    async def _load(self) -> None:
        try:
            pool = read_ippool_file(self.path)
        except SourceError as exc:
            if self.on_error is not None:
                self.on_error()
            if str(exc) != self._last_error:
                log.error("keeping the previous leases: %s", exc)
                self._last_error = str(exc)
            return
        self._last_error = None
        await _deliver_safely(self.deliver, pool)


WATCH_SECONDS_ENV = "VMDHCP_AGENT_WATCH_SECONDS"
"""Hidden, for tests only: how long the server keeps each watch open (default 60 s); a
short value makes the watch restarts (resumed from the last resourceVersion) happen
within a test's time."""


def _watch_seconds() -> int:
    try:
        return max(1, int(os.environ.get(WATCH_SECONDS_ENV) or 60))
    except ValueError:
        return 60


_UNSEEN = object()
"""What the agent was last given, before anything was delivered."""


class KubernetesSource:
    """Lists then watches the one IPPool (field selector on its name), in a thread.

    The initial list is delivered (upstream ignores it, so a restarted agent served
    nothing until the pool next changed); after it, ADDED/MODIFIED objects are
    delivered, and None when the pool is deleted or a relist no longer has it. A version
    the agent already has is not delivered again, so a watch restart or relist that
    brings the same pool keeps the agent's state and its reply memo: the same
    resourceVersion, or the same uid, spec and status (all the agent reads of it).
    Failures back off and retry; the loop never gives up.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        deliver: Deliver,
        kubeconfig: str | None,
        context: str | None,
        watch_timeout: int | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.deliver = deliver
        self.kubeconfig = kubeconfig
        self.context = context
        self.watch_timeout = _watch_seconds() if watch_timeout is None else watch_timeout
        self.api: Any = None
        self.on_client: Callable[[Any], None] | None = None
        self._stop = threading.Event()
        self._last: object = _UNSEEN
        """What the agent was last given (watch thread only): None (no pool), or the
        (resourceVersion, content) of a pool; a pool that failed to parse counts too, so
        the same broken version is not logged at every relist."""

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[IPPool | None] = asyncio.Queue()
        self.api = await asyncio.to_thread(kubeapi.connect, self.kubeconfig, self.context)
        if self.on_client is not None:
            self.on_client(self.api)

        def put(item: IPPool | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        thread = threading.Thread(target=self._watch_forever, args=(put,), daemon=True)
        thread.start()
        try:
            while True:
                await _deliver_safely(self.deliver, await queue.get())
        finally:
            self._stop.set()

    def _watch_forever(self, put: Callable[[IPPool | None], None]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/ippools"
        query = {"fieldSelector": f"metadata.name={self.name}"}
        api: kubeapi.Connection = self.api

        def listed(listing: dict[str, Any], first: bool) -> None:
            if not first:
                log.info(
                    "ippool %s/%s: listed again (the watch had expired)", self.namespace, self.name
                )
            items: list[Any] = listing.get("items") or []
            self._offer(items[0] if items else None, put)

        def changed(kind: str, body: dict[str, Any]) -> None:
            self._offer(None if kind == "DELETED" else body, put)

        def failed(reason: str, retry_in: float) -> None:
            log.warning(
                "ippool %s/%s: API server unreachable or refusing (%s); serving the "
                "last known leases, retrying in %.1fs",
                self.namespace,
                self.name,
                reason,
                retry_in,
            )

        list_then_watch(
            lambda: api.request("GET", path, query, timeout=15),
            lambda version: api.watch(
                path, {**query, "resourceVersion": version}, self.watch_timeout
            ),
            on_list=listed,
            on_event=changed,
            on_failure=failed,
            stop=self._stop,
        )

    def _offer(self, body: Any, put: Callable[[IPPool | None], None]) -> None:
        """Deliver `body` (None: no pool) unless the agent already has that version."""
        if body is None:
            if self._last is not None:
                self._last = None
                put(None)
            return
        if not isinstance(body, dict):
            self._last = _UNSEEN
            self._parse(body)  # logs why
            return
        metadata = body.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        version = metadata.get("resourceVersion")
        content = (metadata.get("uid"), body.get("spec"), body.get("status"))
        last = self._last
        if isinstance(last, tuple) and (
            (version is not None and last[0] == version) or last[1] == content
        ):
            # the same version, again (a relist, or a watch restart): keep the state
            self._last = (version, content)
            return
        self._last = (version, content)
        if (pool := self._parse(body)) is not None:
            put(pool)

    def _parse(self, body: Any) -> IPPool | None:
        try:
            return parse_ippool(body, f"ippool {self.namespace}/{self.name}")
        except SourceError as exc:
            log.error("keeping the previous leases: %s", exc)
            return None
