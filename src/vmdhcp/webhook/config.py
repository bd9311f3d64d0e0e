"""The webhook's command line and environment, parsed once into a frozen `WebhookConfig`.

Upstream's flags and environment variables (with its `--name` default fixed to read
VM_DHCP_WEBHOOK_NAME, not the agent's variable), plus `--advertise-url` and
`--kubeconfig`. Every problem is a `ConfigError` with one line of text.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from urllib.parse import urlsplit

from vmdhcp import __version__
from vmdhcp.errors import VmdhcpError
from vmdhcp.validation import DEFAULT_SERVICE_CIDR, AddressError, parse_cidr

DEFAULT_NAME = "vm-dhcp-webhook"
DEFAULT_HTTPS_PORT = 8443
DEFAULT_MAX_STALE = 120.0
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


class ConfigError(VmdhcpError):
    """A flag or environment variable the webhook cannot start with."""


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    """Name of the Service, the Secrets (`<name>-ca`, `<name>-tls`) and both webhook
    configurations."""
    namespace: str
    """Namespace of the Service and the Secrets."""
    https_port: int
    listen_address: str
    service_cidr: IPv4Network
    """Pools may not overlap it (the agent could no longer reach the API server)."""
    advertise_url: str | None
    """Register `url: <advertise_url>/...` instead of the Service (for runs outside the
    cluster and the test API server)."""
    kubeconfig: str | None
    log_level: str
    http_address: str = "0.0.0.0"
    http_port: int = 0
    """/healthz and /readyz over plain HTTP; 0: not served."""
    max_stale: float = DEFAULT_MAX_STALE
    """Seconds a watch may fail before admission requests are refused; 0: never."""

    @property
    def advertise_host(self) -> str | None:
        return urlsplit(self.advertise_url).hostname if self.advertise_url else None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(
        prog="vm-dhcp-webhook",
        description="Admission webhooks that validate and default IPPools and "
        "VirtualMachineNetworkConfigs. Required: --namespace. A flag overrides its "
        "environment variable.",
    )
    p.add_argument(
        "--name",
        default=env.get("VM_DHCP_WEBHOOK_NAME") or DEFAULT_NAME,
        help="name of the Service, the Secrets <name>-ca and <name>-tls and the webhook "
        f"configurations (env VM_DHCP_WEBHOOK_NAME, default {DEFAULT_NAME})",
    )
    p.add_argument(
        "--namespace",
        default=env.get("NAMESPACE"),
        help="namespace of the Service and the Secrets (env NAMESPACE; required)",
    )
    p.add_argument(
        "--https-port",
        type=int,
        default=DEFAULT_HTTPS_PORT,
        help=f"HTTPS listen port (default {DEFAULT_HTTPS_PORT})",
    )
    p.add_argument(
        "--listen-address", default="0.0.0.0", help="HTTPS listen address (default 0.0.0.0)"
    )
    p.add_argument(
        "--service-cidr",
        default=str(DEFAULT_SERVICE_CIDR),
        help=f"the cluster's service CIDR, which pools must not overlap "
        f"(default {DEFAULT_SERVICE_CIDR})",
    )
    p.add_argument(
        "--advertise-url",
        metavar="https://HOST:PORT",
        help="register this URL with the API server instead of the Service "
        "<namespace>/<name> (default: the Service)",
    )
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file; a path given must exist (env KUBECONFIG, default: the "
        "in-cluster configuration)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_WEBHOOK_DEBUG")),
        help="log at DEBUG (env VM_DHCP_WEBHOOK_DEBUG=true)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_WEBHOOK_TRACE")),
        help="log at TRACE, more than --debug (env VM_DHCP_WEBHOOK_TRACE=true)",
    )
    p.add_argument(
        "--http-address",
        default="0.0.0.0",
        help="listen address of /healthz and /readyz (default 0.0.0.0)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="serve /healthz and /readyz over HTTP on this port (default 0: not served)",
    )
    p.add_argument(
        "--max-stale-seconds",
        type=float,
        default=DEFAULT_MAX_STALE,
        help="refuse admission requests, and report not ready, once a watch of the cluster "
        f"has failed for this long (default {DEFAULT_MAX_STALE:.0f}; 0: answer however stale)",
    )
    for unused in ("--controller-user", "--gc-user", "--threadiness"):
        p.add_argument(unused, help="accepted for compatibility with upstream; unused")
    p.add_argument("--version", action="version", version=f"vm-dhcp-webhook {__version__}")
    return p


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> WebhookConfig:
    """Parse flags over environment defaults; raise ConfigError on anything unusable."""
    args = _parser(env).parse_args(list(argv))
    if not _NAME.fullmatch(args.name) or len(args.name) > 63:
        raise ConfigError(
            f"--name {args.name!r} is not a valid name (lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters)"
        )
    if not args.namespace:
        raise ConfigError("--namespace (or the NAMESPACE environment variable) is required")
    if not _NAME.fullmatch(args.namespace) or len(args.namespace) > 63:
        raise ConfigError(f"--namespace {args.namespace!r} is not a namespace name")
    if not 0 < args.https_port < 65536:
        raise ConfigError(f"--https-port {args.https_port} is not a port number")
    if not 0 <= args.http_port < 65536:
        raise ConfigError(f"--http-port {args.http_port} is not a port number")
    if not args.max_stale_seconds >= 0:
        raise ConfigError(
            f"--max-stale-seconds {args.max_stale_seconds} is not a number of seconds >= 0"
        )
    try:
        service_cidr = parse_cidr(args.service_cidr)
    except AddressError:
        raise ConfigError(f"--service-cidr {args.service_cidr!r} is not an IPv4 CIDR") from None
    if args.advertise_url is not None:
        url = urlsplit(args.advertise_url)
        try:
            valid = url.scheme == "https" and bool(url.hostname) and url.port != 0
        except ValueError:  # a port that is not a number
            valid = False
        if not valid or url.query or url.fragment or url.username:
            raise ConfigError(f"--advertise-url {args.advertise_url!r} is not https://HOST:PORT")
    kubeconfig = args.kubeconfig
    if kubeconfig is not None and not Path(kubeconfig).is_file():
        raise ConfigError(f"--kubeconfig {kubeconfig}: no such file")
    if kubeconfig is None:
        kubeconfig = env.get("KUBECONFIG") or None  # unset means in-cluster
    level = "TRACE" if args.trace else "DEBUG" if args.debug else "INFO"
    return WebhookConfig(
        name=args.name,
        namespace=args.namespace,
        https_port=args.https_port,
        listen_address=args.listen_address,
        service_cidr=service_cidr,
        advertise_url=args.advertise_url.rstrip("/") if args.advertise_url else None,
        kubeconfig=kubeconfig,
        log_level=level,
        http_address=args.http_address,
        http_port=args.http_port,
        max_stale=args.max_stale_seconds,
    )
