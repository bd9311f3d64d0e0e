"""The webhook's certificates across restarts, renewal of expiring ones, and the Service
client configuration (the test API server sends Service webhooks to 127.0.0.1)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from kubernetes.client import ApiClient

from tests.agentproc import free_port
from tests.cluster import Cluster, api_request
from tests.integration.test_webhook import (
    ADMISSION_PATH,
    running_webhook,
    secret_pem,
)
from vmdhcp.webhook.certs import KeyPair, generate_ca, issue_serving_cert

pytestmark = pytest.mark.cluster


def store(api: ApiClient, namespace: str, name: str, cert: bytes, key: bytes) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }
    api_request(api, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)


def not_after(pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def test_certificates_are_reused_across_restarts(
    cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> None:
    with running_webhook(cluster, api_client, namespace, tmp_path / "1.log") as first:
        ca = secret_pem(api_client, namespace, f"{first.name}-ca")
        tls = secret_pem(api_client, namespace, f"{first.name}-tls")
    with running_webhook(
        cluster, api_client, namespace, tmp_path / "2.log", name=first.name
    ) as second:
        assert secret_pem(api_client, namespace, f"{second.name}-ca") == ca  # same resourceVersion
        assert secret_pem(api_client, namespace, f"{second.name}-tls") == tls
    assert "Created" in first.output()
    assert "Created" not in second.output()
    assert "Renewed" not in second.output()


def test_an_expiring_certificate_is_renewed_and_a_broken_one_replaced(
    cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    ca = generate_ca("seeded-ca", now)
    expiring = issue_serving_cert(ca, ["127.0.0.1"], now, validity=timedelta(days=2))
    store(api_client, namespace, "seeded-ca", ca.cert_pem, ca.key_pem)
    store(api_client, namespace, "seeded-tls", expiring.cert_pem, expiring.key_pem)
    with running_webhook(
        cluster, api_client, namespace, tmp_path / "1.log", name="seeded"
    ) as webhook:
        kept_ca = secret_pem(api_client, namespace, "seeded-ca")
        renewed, key, _ = secret_pem(api_client, namespace, "seeded-tls")
    assert kept_ca[0] == ca.cert_pem
    assert not_after(renewed) > now + timedelta(days=300)
    assert KeyPair.load(renewed, key).signed_by(ca)
    assert "Renewed the serving certificate" in webhook.output()

    store(api_client, namespace, "broken-ca", b"not a certificate", b"")
    with running_webhook(cluster, api_client, namespace, tmp_path / "2.log", name="broken"):
        replaced, key, _ = secret_pem(api_client, namespace, "broken-ca")
    assert KeyPair.load(replaced, key).cert.subject.rfc4514_string() == f"CN=broken-ca@{namespace}"


def test_the_service_client_config(
    cluster: Cluster, api_client: ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Without --advertise-url the configurations name the Service `<namespace>/<name>`
    on port 443, and the certificate is valid for `<name>.<namespace>.svc` (which the API
    server checks). The test API server sends Service webhooks to 127.0.0.1, at the port
    of the Service's `k8s-test-env/loopback-port` annotation."""
    name = "svc-webhook"
    # the Service must exist before the first admission request; its port is set later
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"port": 443, "targetPort": 8443}]},
    }
    api_request(api_client, "POST", f"/api/v1/namespaces/{namespace}/services", body=service)
    port = free_port()
    patch = {"metadata": {"annotations": {"k8s-test-env/loopback-port": str(port)}}}
    api_request(
        api_client,
        "PATCH",
        f"/api/v1/namespaces/{namespace}/services/{name}",
        body=patch,
        content_type="application/merge-patch+json",
    )
    with running_webhook(
        cluster,
        api_client,
        namespace,
        tmp_path / "svc.log",
        name=name,
        advertise=False,
        port=port,
    ):
        config = api_request(
            api_client, "GET", f"{ADMISSION_PATH}/validatingwebhookconfigurations/{name}"
        )
        for hook in config["webhooks"]:
            client = hook["clientConfig"]
            assert "url" not in client
            assert client["service"]["namespace"] == namespace
            assert client["service"]["name"] == name
            assert client["service"]["port"] == 443
