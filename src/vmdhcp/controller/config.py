"""The controller's command line and environment (upstream's flags, plus a few)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

from vmdhcp import __version__
from vmdhcp.election import JITTER_FACTOR
from vmdhcp.errors import VmdhcpError

DEFAULT_SERVICE_CIDR = IPv4Network("10.53.0.0/16")
DEFAULT_AGENT_REPLICAS = 2
MAX_AGENT_REPLICAS = 9
"""Agent pods per IPPool at most (their names end in one digit)."""
DEFAULT_DECLINE_QUARANTINE = 600.0
MAX_DECLINE_QUARANTINE = 7 * 24 * 3600


class ConfigError(VmdhcpError):
    """A flag or variable the controller cannot start with; one line of text."""


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def parse_image(reference: str) -> Image:
    """Split `registry:port/repo:tag` as upstream does: the tag follows the last colon
    that comes after the last slash; no tag means `latest`."""
    if reference.count(":") > 2:
        raise ConfigError("invalid image name: multiple colons found")
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon <= slash:
        return Image(reference, "latest")
    repository, tag = reference[:colon], reference[colon + 1 :]
    if not tag:
        raise ConfigError("invalid image name: colon without tag")
    if ":" in repository[repository.rfind("/") + 1 :]:
        raise ConfigError("invalid image name: multiple colons found")
    return Image(repository, tag)


@dataclass(frozen=True)
class ControllerConfig:
    name: str
    agent_namespace: str
    agent_image: Image
    agent_service_account: str
    leader_election: bool
    leader_election_namespace: str
    no_agent: bool
    no_dhcp: bool
    cache_dump_api: bool
    install_crds: bool
    kubeconfig: str | None
    http_host: str
    http_port: int
    log_level: str
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
    """Pools may not overlap it (the webhook's rule, re-checked here)."""
    lease_seconds: int = 15
    """Leader election, as client-go's: a standby takes the Lease over only after seeing it
    unchanged this long on its own clock."""
    renew_deadline_seconds: float = 10.0
    """The leader stops writing (and exits) when no renewal succeeded for this long."""
    retry_seconds: float = 2.0
    """How often the leader renews and a standby tries."""
    status_flush_seconds: float = 0.2
    """How long allocation changes of one pool gather before its status is written."""
    resync_seconds: float = 300.0
    """How often everything watched is relisted to catch deletions a watch missed (0: never)."""
    agent_replicas: int = DEFAULT_AGENT_REPLICAS
    """Agent pods per IPPool: 1 is upstream's single pod; more run with --leader-election,
    one serving (the holder of the pool's Lease) and the others on standby."""
    agent_replace_seconds: float = 30.0
    """A replica that served and has been Terminating or not Ready this long is replaced."""
    decline_quarantine_seconds: float = DEFAULT_DECLINE_QUARANTINE
    """An address a client declined (DHCPDECLINE: another host answers for it) is given to
    nobody for this long, counted on this controller's clock from when it saw the decline
    (or, after a restart, from when it read the address's mark back)."""


MAX_RESYNC_SECONDS = 7 * 24 * 3600


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _seconds(value: str | None) -> float:
    """A number of seconds from the environment (unset or empty: the default)."""
    if not (value or "").strip():
        return DEFAULT_DECLINE_QUARANTINE
    try:
        return float(str(value).strip())
    except ValueError:
        raise ConfigError(
            f"VM_DHCP_CONTROLLER_DECLINE_QUARANTINE {value!r} is not a number of seconds"
        ) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> ControllerConfig:
    p = _Parser(
        prog="vm-dhcp-controller",
        description="IPAM and agents for VM networks. Required: --namespace, and --image "
        "unless --no-agent. A flag overrides its environment variable.",
    )
    p.add_argument(
        "--name",
        default=env.get("VM_DHCP_CONTROLLER_NAME", "vm-dhcp-controller"),
        help="instance name, in its leader election identity and as the CRDs' field manager "
        "(env VM_DHCP_CONTROLLER_NAME, default vm-dhcp-controller)",
    )
    p.add_argument(
        "--namespace",
        default=env.get("AGENT_NAMESPACE"),
        help="namespace of the agent pods (env AGENT_NAMESPACE; required)",
    )
    p.add_argument(
        "--image",
        default=env.get("AGENT_IMAGE"),
        help="agent image, REPOSITORY[:TAG] (env AGENT_IMAGE; required unless --no-agent)",
    )
    p.add_argument(
        "--service-account-name",
        default=env.get("AGENT_SERVICE_ACCOUNT_NAME", "default"),
        help="service account of the agent pods (env AGENT_SERVICE_ACCOUNT_NAME, default default)",
    )
    p.add_argument(
        "--no-leader-election",
        action="store_true",
        help="run without a Lease: only when exactly one controller runs (default: elect)",
    )
    p.add_argument(
        "--leader-election-namespace",
        default="kube-system",
        help="namespace of the leader election Lease vm-dhcp-controllers (default kube-system)",
    )
    p.add_argument(
        "--leader-election-lease-duration",
        type=int,
        default=15,
        metavar="SECONDS",
        help="a standby takes over a Lease left unrenewed this long (default 15)",
    )
    p.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the leader stops when no renewal succeeded for this long (default 10)",
    )
    # the first version's name for it (renewals every N s); kept so manifests keep working
    p.add_argument(
        "--leader-election-renew-period",
        type=float,
        dest="leader_election_renew_deadline",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the leader renews and a standby tries (default 2)",
    )
    p.add_argument(
        "--agent-replicas",
        default=env.get("AGENT_REPLICAS") or str(DEFAULT_AGENT_REPLICAS),
        metavar="N",
        help=f"agent pods per IPPool, 1 to {MAX_AGENT_REPLICAS}: one serves, the others "
        f"stand by; 1 is upstream's single pod (env AGENT_REPLICAS, "
        f"default {DEFAULT_AGENT_REPLICAS})",
    )
    p.add_argument(
        "--agent-replace-after",
        type=float,
        default=float(env.get("AGENT_REPLACE_AFTER") or 30.0),
        metavar="SECONDS",
        help="with replicas: start a new agent pod when one that served has been Terminating "
        "or not Ready (its node NotReady) this long (env AGENT_REPLACE_AFTER, default 30)",
    )
    p.add_argument(
        "--decline-quarantine",
        type=float,
        default=_seconds(env.get("VM_DHCP_CONTROLLER_DECLINE_QUARANTINE")),
        metavar="SECONDS",
        help="an address a VM declined (it is in use on the network) is given to nobody for "
        "this long, counted on this controller's clock (env "
        "VM_DHCP_CONTROLLER_DECLINE_QUARANTINE, default "
        f"{DEFAULT_DECLINE_QUARANTINE:g}; 0 sets nothing aside, but the VM still gets another "
        "address)",
    )
    p.add_argument("--no-agent", action="store_true", help="run no agent pods")
    p.add_argument(
        "--no-dhcp", action="store_true", help="agent pods run with --dry-run (no DHCP socket)"
    )
    p.add_argument(
        "--enable-cache-dump-api",
        action="store_true",
        help="serve /ipams/<ns>/<network> and /caches/<ns>/<network> on the HTTP port",
    )
    p.add_argument(
        "--skip-crds", action="store_true", help="do not install or upgrade the CRDs at start"
    )
    p.add_argument(
        "--kubeconfig",
        default=env.get("KUBECONFIG"),
        metavar="PATH",
        help="kubeconfig file; a path given must exist (env KUBECONFIG, default: the "
        "in-cluster configuration)",
    )
    p.add_argument(
        "--service-cidr",
        default="10.53.0.0/16",
        help="the cluster's service CIDR, which pools must not overlap (default 10.53.0.0/16)",
    )
    p.add_argument(
        "--http-address",
        default="0.0.0.0",
        help="listen address of /healthz, /readyz and /metrics (default 0.0.0.0)",
    )
    p.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument(
        "--resync-period",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="relist everything watched this often, to catch deletions a broken watch missed "
        "(default 300; 0 turns it off)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_CONTROLLER_DEBUG")),
        help="log at DEBUG (env VM_DHCP_CONTROLLER_DEBUG=true)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        default=_truthy(env.get("VM_DHCP_CONTROLLER_TRACE")),
        help="log at TRACE, more than --debug (env VM_DHCP_CONTROLLER_TRACE=true)",
    )
    p.add_argument("--version", action="version", version=f"vm-dhcp-controller {__version__}")
    args = p.parse_args(list(argv))
    if not args.namespace:
        raise ConfigError("--namespace (AGENT_NAMESPACE) is required: where agent pods run")
    if not args.image and not args.no_agent:
        raise ConfigError("--image (AGENT_IMAGE) is required unless --no-agent")
    if not 0 < args.http_port < 65536:
        raise ConfigError(f"--http-port {args.http_port} is not a port number")
    if not (
        0
        < args.leader_election_retry_period * JITTER_FACTOR
        < args.leader_election_renew_deadline
        < args.leader_election_lease_duration
    ):
        raise ConfigError(
            "leader election needs lease duration > renew deadline > "
            f"{JITTER_FACTOR} x retry period > 0"
        )
    if not 0 <= args.resync_period <= MAX_RESYNC_SECONDS:
        raise ConfigError(
            f"--resync-period {args.resync_period} is not between 0 and {MAX_RESYNC_SECONDS} s"
        )
    try:
        agent_replicas = int(str(args.agent_replicas).strip())
    except ValueError:
        agent_replicas = 0
    if not 1 <= agent_replicas <= MAX_AGENT_REPLICAS:
        raise ConfigError(
            f"--agent-replicas (AGENT_REPLICAS) {args.agent_replicas!r} is not a number "
            f"from 1 to {MAX_AGENT_REPLICAS}"
        )
    if not 0 < args.agent_replace_after <= 3600:
        raise ConfigError(
            f"--agent-replace-after {args.agent_replace_after} is not between 0 and 3600 s"
        )
    if not 0 <= args.decline_quarantine <= MAX_DECLINE_QUARANTINE:
        raise ConfigError(
            f"--decline-quarantine {args.decline_quarantine:g} is not between 0 and "
            f"{MAX_DECLINE_QUARANTINE} s"
        )
    try:
        service_cidr = IPv4Network(args.service_cidr, strict=False)
    except ValueError:
        raise ConfigError(f"--service-cidr {args.service_cidr!r} is not an IPv4 CIDR") from None
    return ControllerConfig(
        name=args.name,
        agent_namespace=args.namespace,
        agent_image=parse_image(args.image) if args.image else Image("", ""),
        agent_service_account=args.service_account_name,
        leader_election=not args.no_leader_election,
        leader_election_namespace=args.leader_election_namespace,
        no_agent=args.no_agent,
        no_dhcp=args.no_dhcp,
        cache_dump_api=args.enable_cache_dump_api,
        install_crds=not args.skip_crds,
        kubeconfig=args.kubeconfig,
        http_host=args.http_address,
        http_port=args.http_port,
        log_level="TRACE" if args.trace else "DEBUG" if args.debug else "INFO",
        service_cidr=service_cidr,
        lease_seconds=args.leader_election_lease_duration,
        renew_deadline_seconds=args.leader_election_renew_deadline,
        resync_seconds=args.resync_period,
        retry_seconds=args.leader_election_retry_period,
        agent_replicas=agent_replicas,
        agent_replace_seconds=args.agent_replace_after,
        decline_quarantine_seconds=args.decline_quarantine,
    )
