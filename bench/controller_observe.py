"""What `bench_controller.py` observes: the controller's requests, read back from the API
server's audit log, and the moment each vmnetcfg is first seen Allocated, through a watch."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from kubernetes import watch
from kubernetes.client import ApiClient, CustomObjectsApi

GROUP, VERSION = "network.harvesterhci.io", "v1alpha1"
VMNETCFGS = "virtualmachinenetworkconfigs"
CONTROLLER_USER = "vm-dhcp-controller"
NAMESPACE = "bench"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


# -- the controller's requests, from the API server's audit log --------------------------------


class Audit:
    """Reads the audit log (Metadata level, the controller's user only, one line per request
    at ResponseComplete; watches appear only when they end)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def events(self, since: int, until: int | None = None) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(since)
            data = log.read() if until is None else log.read(until - since)
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def quiet(self, seconds: float = 1.0, timeout: float = 60.0) -> int:
        """Wait until the controller has sent no request for `seconds`; the log's size."""
        deadline = time.monotonic() + timeout
        size, since = self.mark(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.mark()
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return size
        raise RuntimeError(f"the controller did not go quiet within {timeout}s")


def resource_of(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    name = ref.get("resource") or event.get("requestURI", "?")
    if ref.get("subresource"):
        name += "/" + ref["subresource"]
    return str(name)


def writes(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        f"{e['verb']} {resource_of(e)}"
        for e in events
        if e.get("verb") in WRITE_VERBS and e.get("user", {}).get("username") == CONTROLLER_USER
    )


def requests(events: list[dict[str, Any]]) -> int:
    return sum(1 for e in events if e.get("user", {}).get("username") == CONTROLLER_USER)


# -- observing allocations ------------------------------------------------------------------------


class AllocationWatch(threading.Thread):
    """Watches the namespace's vmnetcfgs and records when each is first seen Allocated."""

    def __init__(self, api: ApiClient) -> None:
        super().__init__(daemon=True, name="vmnetcfg-watch")
        self.custom = CustomObjectsApi(api)
        self.allocated: dict[str, tuple[float, str, str]] = {}
        """name -> (time.perf_counter() when seen, mac, address)"""
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.started_watch = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        listing = cast(
            dict[str, Any],
            self.custom.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, VMNETCFGS, limit=1
            ),
        )
        version = listing["metadata"]["resourceVersion"]
        while not self.stopping.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            self.started_watch.set()
            for event in stream.stream(  # type: ignore[no-untyped-call]
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NAMESPACE,
                VMNETCFGS,
                resource_version=version,
                timeout_seconds=2,
                allow_watch_bookmarks=True,
            ):
                seen = time.perf_counter()
                body = event["object"]
                version = body["metadata"]["resourceVersion"]
                if event["type"] not in ("ADDED", "MODIFIED"):
                    continue
                entries = (body.get("status") or {}).get("networkConfigs") or []
                name = body["metadata"]["name"]
                if name in self.allocated or not entries:
                    continue
                if all(e.get("state") == "Allocated" for e in entries):
                    entry = entries[0]
                    with self.changed:
                        self.allocated[name] = (
                            seen,
                            entry["macAddress"],
                            entry["allocatedIPAddress"],
                        )
                        self.changed.notify_all()

    def wait(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not names <= self.allocated.keys():
                if self.error is not None:
                    raise RuntimeError(f"the watch failed: {self.error!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return True
