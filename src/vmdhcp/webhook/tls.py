"""The webhook's certificates, kept in Secrets so that restarts and replicas share them.

`<name>-ca` holds the CA, `<name>-tls` the serving certificate (both `kubernetes.io/tls`:
`tls.crt`, `tls.key`), in the webhook's namespace, as upstream keeps them. Existing ones
are reused; missing, unreadable, expiring or mismatched ones are replaced. A replica that
loses a race to create or replace one adopts the winner's. The files handed to the HTTPS
server are written atomically: one PEM with the certificate and its key (so the server
never reads a certificate with another's key) and the CA bundle (the current CA, plus the
previous one while it is valid, so that a CA rotation does not cut the API server off).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vmdhcp import k8s
from vmdhcp.webhook.certs import (
    CA_RENEW_BEFORE,
    CA_VALIDITY,
    CERT_RENEW_BEFORE,
    CERT_VALIDITY,
    CertificateError,
    KeyPair,
    generate_ca,
    issue_serving_cert,
)

logger = logging.getLogger(__name__)

TLS_SECRET_TYPE = "kubernetes.io/tls"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
MANAGED_BY = {"app.kubernetes.io/managed-by": "vm-dhcp-webhook"}
RECHECK = timedelta(hours=1)
"""At most this long between two looks at the Secrets (another replica may renew them)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def service_names(name: str, namespace: str) -> list[str]:
    """The names a Service `<namespace>/<name>` is reached by; `<name>.<namespace>.svc`
    (what the API server checks) first, as upstream's common name."""
    return [
        f"{name}.{namespace}.svc",
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc.cluster.local",
    ]


@dataclass(frozen=True)
class TlsFiles:
    """What the HTTPS server loads: `pem` has the certificate and key, `ca` the bundle."""

    directory: Path
    pem: Path = field(init=False)
    ca: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pem", self.directory / "tls.pem")
        object.__setattr__(self, "ca", self.directory / "ca.crt")


def _write_atomically(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


class CertificateManager:
    """Keeps `<name>-ca` and `<name>-tls` valid and the files in `directory` up to date."""

    def __init__(
        self,
        kube: k8s.Kube,
        *,
        namespace: str,
        name: str,
        hostnames: Sequence[str],
        directory: Path,
        clock: Callable[[], datetime] = utcnow,
        ca_validity: timedelta = CA_VALIDITY,
        ca_renew_before: timedelta = CA_RENEW_BEFORE,
        cert_validity: timedelta = CERT_VALIDITY,
        cert_renew_before: timedelta = CERT_RENEW_BEFORE,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.ca_secret = f"{name}-ca"
        self.tls_secret = f"{name}-tls"
        self.ca_name = f"{name}-ca@{namespace}"
        self.hostnames = list(dict.fromkeys(hostnames))
        self.files = TlsFiles(directory)
        self.clock = clock
        self.ca_validity = ca_validity
        self.ca_renew_before = ca_renew_before
        self.cert_validity = cert_validity
        self.cert_renew_before = cert_renew_before
        self.previous_ca: KeyPair | None = None

    async def _read(self, secret: str) -> tuple[KeyPair | None, str | None]:
        """The pair in `secret` (None if absent or unusable) and the version read."""
        found = await k8s.read_secret(self.kube, self.namespace, secret)
        if found is None:
            return None, None
        data, version = found
        try:
            return KeyPair.load(data.get(CERT_KEY, b""), data.get(KEY_KEY, b"")), version
        except (CertificateError, ValueError) as exc:
            logger.warning(
                "Secret %s/%s is unusable (%s): replacing it", self.namespace, secret, exc
            )
            return None, version

    async def _store(self, secret: str, pair: KeyPair, version: str | None) -> bool:
        """Write `pair`; False when another writer got there first."""
        try:
            await k8s.write_secret(
                self.kube,
                self.namespace,
                secret,
                {CERT_KEY: pair.cert_pem, KEY_KEY: pair.key_pem},
                secret_type=TLS_SECRET_TYPE,
                labels=MANAGED_BY,
                resource_version=version,
            )
        except k8s.ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    async def _ensure_ca(self) -> KeyPair:
        while True:
            ca, version = await self._read(self.ca_secret)
            now = self.clock()
            if ca is not None and not ca.renewal_due(now, self.ca_renew_before):
                return ca
            fresh = generate_ca(self.ca_name, now, self.ca_validity)
            if await self._store(self.ca_secret, fresh, version):
                logger.info(
                    "%s the CA in Secret %s/%s (valid until %s)",
                    "Created" if ca is None else "Renewed",
                    self.namespace,
                    self.ca_secret,
                    fresh.not_after.isoformat(),
                )
                if ca is not None and ca.not_after > now:
                    self.previous_ca = ca
                return fresh

    async def _ensure_cert(self, ca: KeyPair) -> KeyPair:
        while True:
            cert, version = await self._read(self.tls_secret)
            now = self.clock()
            if (
                cert is not None
                and not cert.renewal_due(now, self.cert_renew_before)
                and cert.signed_by(ca)
                and cert.covers(self.hostnames)
            ):
                return cert
            fresh = issue_serving_cert(ca, self.hostnames, now, self.cert_validity)
            if await self._store(self.tls_secret, fresh, version):
                logger.info(
                    "%s the serving certificate in Secret %s/%s for %s (valid until %s)",
                    "Created" if cert is None else "Renewed",
                    self.namespace,
                    self.tls_secret,
                    ", ".join(self.hostnames),
                    fresh.not_after.isoformat(),
                )
                return fresh

    async def ensure(self) -> datetime:
        """Make the Secrets and files current; return when the next renewal is due."""
        ca = await self._ensure_ca()
        cert = await self._ensure_cert(ca)
        bundle = ca.cert_pem
        previous = self.previous_ca
        if previous is not None and previous.not_after > self.clock():
            bundle += previous.cert_pem
        self.files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomically(self.files.ca, bundle)  # first: it accepts the old and new cert
        _write_atomically(self.files.pem, cert.cert_pem + cert.key_pem)
        return min(ca.not_after - self.ca_renew_before, cert.not_after - self.cert_renew_before)

    async def run(self) -> None:
        """Renew for ever: at the due time, and every RECHECK to pick up other replicas'."""
        while True:
            try:
                due = await self.ensure()
            except k8s.ApiError as exc:
                logger.warning("Cannot check the certificates, retrying in 30s: %s", exc)
                await asyncio.sleep(30)
                continue
            wait = min(max((due - self.clock()).total_seconds(), 1.0), RECHECK.total_seconds())
            await asyncio.sleep(wait)
