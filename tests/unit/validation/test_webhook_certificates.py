"""The webhook's certificates (vmdhcp.webhook.certs and .tls), without a cluster: what is
issued, when it is renewed, and that a TLS client trusting the CA bundle accepts it.

(Pure tests of the webhook package; kept beside the validators' tests.)
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from vmdhcp import k8s
from vmdhcp.webhook import tls
from vmdhcp.webhook.certs import (
    CertificateError,
    KeyPair,
    generate_ca,
    issue_serving_cert,
)

NOW = datetime.now(UTC).replace(microsecond=0)  # handshakes check the real clock
NAMES = ["wh.ns.svc", "wh", "127.0.0.1"]


def handshake(ca_bundle: Path, pem: Path, hostname: str) -> None:
    """A TLS handshake in memory: server with `pem`, client trusting `ca_bundle`."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pem, pem)
    client_ctx = ssl.create_default_context(cafile=str(ca_bundle))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for end, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_the_ca_signs_a_serving_certificate_for_every_name() -> None:
    ca = generate_ca("wh-ca@ns", NOW)
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert = issue_serving_cert(ca, NAMES, NOW)
    assert cert.signed_by(ca)
    assert cert.covers(NAMES)
    assert not cert.covers([*NAMES, "other.ns.svc"])
    assert not cert.signed_by(generate_ca("wh-ca@ns", NOW))  # same name, other key
    assert cert.cert.subject.rfc4514_string() == "CN=wh.ns.svc"
    assert cert.not_after == NOW + timedelta(days=365)


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    ca = generate_ca("short", NOW, validity=timedelta(days=10))
    assert issue_serving_cert(ca, NAMES, NOW).not_after == ca.not_after


def test_renewal_is_due_before_expiry() -> None:
    cert = issue_serving_cert(generate_ca("ca", NOW), NAMES, NOW, validity=timedelta(days=60))
    assert not cert.renewal_due(NOW + timedelta(days=29), timedelta(days=30))
    assert cert.renewal_due(NOW + timedelta(days=30), timedelta(days=30))
    assert cert.renewal_due(NOW - timedelta(hours=1), timedelta(days=30))  # not valid yet


def test_loading_checks_the_key() -> None:
    ca, other = generate_ca("a", NOW), generate_ca("b", NOW)
    assert KeyPair.load(ca.cert_pem, ca.key_pem).cert == ca.cert
    with pytest.raises(CertificateError, match="does not belong"):
        KeyPair.load(ca.cert_pem, other.key_pem)
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's own parse error
        KeyPair.load(b"garbage", b"")


# -- CertificateManager, with Secrets in a dict -------------------------------------------


class Secrets:
    """`k8s.read_secret`/`write_secret` over a dict, with resourceVersion conflicts."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[dict[str, bytes], str]] = {}
        self.writes = 0
        self.racer: dict[str, bytes] | None = None  # written by "another replica" first

    async def read(
        self, kube: object, namespace: str, name: str
    ) -> tuple[dict[str, bytes], str] | None:
        return self.data.get(name)

    async def write(
        self, kube: object, namespace: str, name: str, data: dict[str, bytes], **kw: object
    ) -> None:
        current = self.data.get(name)
        if self.racer is not None:
            self.data[name] = (self.racer, f"{len(self.data)}r")
            self.racer = None
            raise k8s.ApiError(409, "Conflict", "the object has been modified")
        if current is not None and kw.get("resource_version") != current[1]:
            raise k8s.ApiError(409, "Conflict", "the object has been modified")
        self.writes += 1
        self.data[name] = (dict(data), str(self.writes))


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    store = Secrets()
    monkeypatch.setattr(k8s, "read_secret", store.read)
    monkeypatch.setattr(k8s, "write_secret", store.write)
    return store


def manager(tmp_path: Path, clock: list[datetime]) -> tls.CertificateManager:
    return tls.CertificateManager(
        None,  # type: ignore[arg-type]  # only the patched functions use it
        namespace="ns",
        name="wh",
        hostnames=NAMES,
        directory=tmp_path / "tls",
        clock=lambda: clock[0],
    )


def pair(store: Secrets, name: str) -> KeyPair:
    data = store.data[name][0]
    return KeyPair.load(data["tls.crt"], data["tls.key"])


def test_creates_then_reuses(secrets: Secrets, tmp_path: Path) -> None:
    clock = [NOW]
    due = asyncio.run(manager(tmp_path, clock).ensure())
    assert secrets.writes == 2
    ca, cert = pair(secrets, "wh-ca"), pair(secrets, "wh-tls")
    assert cert.signed_by(ca)
    assert due == cert.not_after - timedelta(days=30)
    files = tls.TlsFiles(tmp_path / "tls")
    assert files.ca.read_bytes() == ca.cert_pem
    assert files.pem.read_bytes() == cert.cert_pem + cert.key_pem
    handshake(files.ca, files.pem, "wh.ns.svc")
    handshake(files.ca, files.pem, "127.0.0.1")

    clock[0] = NOW + timedelta(days=300)  # a restart later: nothing is due yet
    asyncio.run(manager(tmp_path, clock).ensure())
    assert secrets.writes == 2


def test_renews_the_certificate_before_it_expires(secrets: Secrets, tmp_path: Path) -> None:
    clock = [NOW]
    asyncio.run(manager(tmp_path, clock).ensure())
    old = pair(secrets, "wh-tls")
    clock[0] = old.not_after - timedelta(days=29)
    asyncio.run(manager(tmp_path, clock).ensure())
    new = pair(secrets, "wh-tls")
    assert new.not_after == clock[0] + timedelta(days=365)
    assert new.signed_by(pair(secrets, "wh-ca"))


def test_a_certificate_missing_a_name_is_reissued(secrets: Secrets, tmp_path: Path) -> None:
    clock = [NOW]
    asyncio.run(manager(tmp_path, clock).ensure())
    renamed = tls.CertificateManager(
        None,  # type: ignore[arg-type]
        namespace="ns",
        name="wh",
        hostnames=[*NAMES, "10.0.0.9"],
        directory=tmp_path / "tls",
        clock=lambda: clock[0],
    )
    asyncio.run(renamed.ensure())
    assert pair(secrets, "wh-tls").covers(["10.0.0.9"])


def test_a_renewed_ca_reissues_the_certificate_and_bundles_both(
    secrets: Secrets, tmp_path: Path
) -> None:
    clock = [NOW]
    certificates = manager(tmp_path, clock)
    asyncio.run(certificates.ensure())
    old_ca = pair(secrets, "wh-ca")
    clock[0] = old_ca.not_after - timedelta(days=300)
    asyncio.run(certificates.ensure())
    new_ca, cert = pair(secrets, "wh-ca"), pair(secrets, "wh-tls")
    assert new_ca.cert != old_ca.cert
    assert cert.signed_by(new_ca)
    bundle = (tmp_path / "tls" / "ca.crt").read_bytes()
    assert bundle == new_ca.cert_pem + old_ca.cert_pem  # clients with either CA keep working


def test_a_lost_race_adopts_the_winners_certificate(secrets: Secrets, tmp_path: Path) -> None:
    winner = generate_ca("winner", NOW)
    secrets.racer = {"tls.crt": winner.cert_pem, "tls.key": winner.key_pem}
    asyncio.run(manager(tmp_path, [NOW]).ensure())
    assert pair(secrets, "wh-ca").cert == winner.cert
    assert pair(secrets, "wh-tls").signed_by(winner)


def test_an_unusable_secret_is_replaced(secrets: Secrets, tmp_path: Path) -> None:
    secrets.data["wh-ca"] = ({"tls.crt": b"junk"}, "7")
    asyncio.run(manager(tmp_path, [NOW]).ensure())
    assert pair(secrets, "wh-tls").signed_by(pair(secrets, "wh-ca"))
