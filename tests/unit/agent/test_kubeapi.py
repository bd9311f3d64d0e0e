"""The agent's kubeconfig reading (the requests themselves run against the test API server in
tests/integration/test_agent_kubernetes.py)."""

import base64
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmdhcp.agent.kubeapi import KubeConfigError, connect


def kubeconfig(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {"name": "k", "cluster": cluster or {"server": "https://api.example:6443/prefix/"}}
        ],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_token_and_the_server_url(tmp_path: Path) -> None:
    connection = connect(kubeconfig(tmp_path, {"token": "secret"}))
    assert (connection.scheme, connection.host, connection.port) == ("https", "api.example", 6443)
    assert connection.base_path == "/prefix"
    assert connection.headers == {"Authorization": "Bearer secret"}
    assert connection.tls is not None
    assert connection.tls.verify_mode == ssl.CERT_REQUIRED


def test_a_token_file_is_read_for_every_request(tmp_path: Path) -> None:
    """Service account tokens rotate: each request sends what the file holds then."""
    seen: list[str | None] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "token").write_text("first\n")
        cluster = {"server": f"http://127.0.0.1:{server.server_address[1]}"}
        connection = connect(kubeconfig(tmp_path, {"tokenFile": "token"}, cluster))
        assert connection.request("GET", "/api") == {}
        (tmp_path / "token").write_text("rotated\n")
        assert connection.request("GET", "/api") == {}
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer first", "Bearer rotated"]


def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    cluster = {"server": "https://10.0.0.1", "insecure-skip-tls-verify": True}
    connection = connect(kubeconfig(tmp_path, {"token": "t"}, cluster))
    assert connection.port == 443
    assert connection.tls is not None
    assert connection.tls.verify_mode == ssl.CERT_NONE


def test_a_bad_ca_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    bogus = base64.b64encode(b"not a certificate").decode()
    cluster = {"server": "https://10.0.0.1", "certificate-authority-data": bogus}
    with pytest.raises(ssl.SSLError):
        connect(kubeconfig(tmp_path, {"token": "t"}, cluster))


@pytest.mark.parametrize(
    ("user", "cluster", "message"),
    [
        ({"exec": {"command": "aws"}}, None, "exec or auth-provider"),
        ({"auth-provider": {"name": "oidc"}}, None, "exec or auth-provider"),
        ({"token": "t"}, {"server": "api.example"}, "is not a URL"),
        ({"token": "t"}, {"server": "https://a", "tls-server-name": "b"}, "tls-server-name"),
    ],
)
def test_what_the_agent_cannot_use_is_a_clear_error(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(KubeConfigError, match=message):
        connect(kubeconfig(tmp_path, user, cluster))


def test_an_unknown_context(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no context named 'other'"):
        connect(kubeconfig(tmp_path, {"token": "t"}), context="other")


def test_no_kubeconfig_outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeConfigError, match="not running in a cluster"):
        connect(None)
