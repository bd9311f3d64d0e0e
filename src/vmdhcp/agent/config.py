"""The agent's command line and environment, parsed once into a frozen `AgentConfig`.

Flags and environment variables are upstream's, so the controller and the chart launch
this agent exactly as they launch upstream's; `--ippool-file` and the HTTP address are
additions. Every problem is a `ConfigError` with one line of text.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmdhcp import __version__
from vmdhcp.agent.replies import DEFAULT_CAPACITY
from vmdhcp.errors import VmdhcpError

DEFAULT_NIC = "eth1"
DEFAULT_HTTP_PORT = 8080
MAX_REPLY_CACHE = 65_536
DEFAULT_ROGUE_CHECK_INTERVAL = 60.0
MIN_ROGUE_CHECK_INTERVAL, MAX_ROGUE_CHECK_INTERVAL = 0.5, 86_400.0


class ConfigError(VmdhcpError):
    """A flag, environment variable or file the agent cannot start with."""


@dataclass(frozen=True)
class AgentConfig:
    name: str
    """Instance name, for logs and Events (the controller sets the pod name)."""
    nic: str
    """Interface the DHCP server binds to (the Multus interface, eth1)."""
    ippool_namespace: str | None
    ippool_name: str | None
    """The IPPool to serve, from `--ippool-ref <namespace>/<name>`."""
    ippool_file: Path | None
    """Serve from an IPPool manifest instead of the API server (re-read on change)."""
    kubeconfig: str | None
    kubecontext: str | None
    dry_run: bool
    """No DHCP socket; leases are still loaded and served over HTTP."""
    enable_cache_dump_api: bool
    http_host: str
    http_port: int
    log_level: str
    file_poll_interval: float = 0.5
    reply_cache_size: int = DEFAULT_CAPACITY
    """Replies remembered per IPPool version for byte-identical requests (0: none)."""
    leader_election: bool = False
    """Replicas of this pool's agent: only the one holding the pool's Lease serves."""
    namespace: str = ""
    """Where that Lease lives (the agent pod's namespace)."""
    uid: str = ""
    """The pod's uid (env POD_UID): with the name, this replica's identity in the election,
    so that a new pod of a reused name is never taken for the old one."""
    rogue_check_interval: float = DEFAULT_ROGUE_CHECK_INTERVAL
    """Seconds between two probes for other DHCP servers on the network (0: no check)."""

    @property
    def identity(self) -> str:
        return f"{self.name}_{self.uid}" if self.uid else self.name

    @property
    def ippool_ref(self) -> str:
        if self.ippool_file is not None:
            return str(self.ippool_file)
        return f"{self.ippool_namespace}/{self.ippool_name}"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = _Parser(
        prog="vm-dhcp-agent",
        description="DHCP server of one IPPool, serving the leases the controller allocated. "
        "Required: one of --ippool-ref and --ippool-file. A flag overrides its environment "
        "variable.",
    )
    p.add_argument(
        "--name",
        default=env.get("VM_DHCP_AGENT_NAME") or env.get("POD_NAME", ""),
        help="instance name, and identity in the leader election (env VM_DHCP_AGENT_NAME "
        "or POD_NAME; required with --leader-election)",
    )
    p.add_argument(
        "--leader-election",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_AGENT_LEADER_ELECTION")),
        help="one of several replicas: serve only while holding the pool's Lease "
        "(env VM_DHCP_AGENT_LEADER_ELECTION=true)",
    )
    p.add_argument(
        "--namespace",
        default=env.get("POD_NAMESPACE", ""),
        help="where the pool's Lease lives (env POD_NAMESPACE; required with --leader-election)",
    )
    p.add_argument(
        "--kubeconfig",
        default=env.get("KUBECONFIG"),
        metavar="PATH",
        help="kubeconfig file; a path given must exist (env KUBECONFIG, default: the "
        "in-cluster configuration)",
    )
    p.add_argument(
        "--kubecontext",
        default=env.get("KUBECONTEXT"),
        help="kubeconfig context (env KUBECONTEXT, default: its current-context)",
    )
    p.add_argument(
        "--ippool-ref",
        default=env.get("IPPOOL_REF"),
        metavar="NAMESPACE/NAME",
        help="the IPPool to serve (env IPPOOL_REF; this or --ippool-file is required)",
    )
    p.add_argument(
        "--ippool-file",
        type=Path,
        default=env.get("IPPOOL_FILE"),
        metavar="PATH",
        help="serve an IPPool manifest (YAML or JSON, with status.ipv4.allocated) without "
        "Kubernetes; re-read when it changes (env IPPOOL_FILE)",
    )
    p.add_argument(
        "--nic", default=DEFAULT_NIC, help=f"interface to serve on (default {DEFAULT_NIC})"
    )
    p.add_argument("--dry-run", action="store_true", help="open no DHCP socket")
    p.add_argument("--enable-cache-dump-api", action="store_true", help="serve /leases")
    p.add_argument(
        "--http-address", default="0.0.0.0", help="HTTP listen address (default 0.0.0.0)"
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"HTTP port of /healthz, /readyz, /metrics, /leases (default {DEFAULT_HTTP_PORT})",
    )
    p.add_argument(
        "--reply-cache-size",
        type=int,
        default=env.get("VM_DHCP_AGENT_REPLY_CACHE_SIZE", DEFAULT_CAPACITY),
        metavar="N",
        help="replies remembered per IPPool version for requests that repeat byte for byte "
        "but for their transaction id, about 0.8 KB each; 0 turns it off "
        f"(env VM_DHCP_AGENT_REPLY_CACHE_SIZE, default {DEFAULT_CAPACITY})",
    )
    p.add_argument(
        "--rogue-check-interval",
        type=float,
        default=env.get("VM_DHCP_AGENT_ROGUE_CHECK_INTERVAL", DEFAULT_ROGUE_CHECK_INTERVAL),
        metavar="SECONDS",
        help="the serving agent probes the network for other DHCP servers this often "
        "(jittered by 10%%) and reports those seen in the last three checks; 0 turns it off "
        f"(env VM_DHCP_AGENT_ROGUE_CHECK_INTERVAL, default {DEFAULT_ROGUE_CHECK_INTERVAL:g})",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_AGENT_DEBUG")),
        help="log at DEBUG (env VM_DHCP_AGENT_DEBUG=true)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_AGENT_TRACE")),
        help="log every packet and decision (env VM_DHCP_AGENT_TRACE=true)",
    )
    p.add_argument("--version", action="version", version=f"vm-dhcp-agent {__version__}")
    return p


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> AgentConfig:
    """Parse flags over environment defaults; raise ConfigError on anything unusable."""
    args = _parser(env).parse_args(list(argv))
    namespace = name = None
    if args.ippool_file is None:
        if not args.ippool_ref:
            raise ConfigError(
                "one of --ippool-ref NAMESPACE/NAME or --ippool-file PATH is required"
            )
        namespace, sep, name = args.ippool_ref.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ConfigError(f"--ippool-ref {args.ippool_ref!r} is not NAMESPACE/NAME")
    elif args.ippool_ref:
        raise ConfigError("--ippool-ref and --ippool-file are mutually exclusive")
    elif not args.ippool_file.is_file():
        raise ConfigError(f"--ippool-file {args.ippool_file}: no such file")
    if not 0 < args.http_port < 65536:
        raise ConfigError(f"--http-port {args.http_port} is not a port number")
    if not 0 <= args.reply_cache_size <= MAX_REPLY_CACHE:
        raise ConfigError(
            f"--reply-cache-size {args.reply_cache_size} is not between 0 and {MAX_REPLY_CACHE}"
        )
    interval = args.rogue_check_interval
    if interval != 0 and not MIN_ROGUE_CHECK_INTERVAL <= interval <= MAX_ROGUE_CHECK_INTERVAL:
        raise ConfigError(
            f"--rogue-check-interval {interval:g} is neither 0 (off) nor between "
            f"{MIN_ROGUE_CHECK_INTERVAL:g} and {MAX_ROGUE_CHECK_INTERVAL:g} seconds"
        )
    if not args.nic or len(args.nic) > 15 or "/" in args.nic:
        raise ConfigError(f"--nic {args.nic!r} is not an interface name")
    if args.leader_election:
        if args.ippool_file is not None:
            raise ConfigError("--leader-election needs --ippool-ref (the Lease is in Kubernetes)")
        if not args.namespace or not args.name:
            raise ConfigError(
                "--leader-election needs --namespace (POD_NAMESPACE) and --name (POD_NAME)"
            )
    level = "TRACE" if args.trace else "DEBUG" if args.debug else "INFO"
    return AgentConfig(
        name=args.name,
        nic=args.nic,
        ippool_namespace=namespace,
        ippool_name=name,
        ippool_file=args.ippool_file,
        kubeconfig=args.kubeconfig,
        kubecontext=args.kubecontext,
        dry_run=args.dry_run,
        enable_cache_dump_api=args.enable_cache_dump_api,
        http_host=args.http_address,
        http_port=args.http_port,
        log_level=level,
        reply_cache_size=args.reply_cache_size,
        leader_election=args.leader_election,
        namespace=args.namespace,
        uid=env.get("POD_UID", ""),
        rogue_check_interval=interval,
    )
