"""IPPool rules: upstream's checks and messages, its fixes, and the rules upstream lacks.

Every function is pure; the cluster comes in through a `ClusterView`. The reasons are
collected in upstream's order (parse, NAD, service CIDR, pool range, server IP, router),
followed by the additions, and reported together.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from vmdhcp.api import IPPool, split_network_name
from vmdhcp.api.constants import IPPOOL_KIND, RESERVED_MARK
from vmdhcp.api.models import IPv4Config, ObjectMeta
from vmdhcp.validation.addresses import AddressError, parse_addr, parse_cidr
from vmdhcp.validation.errors import Operation, ValidationError, new_reasons, raise_if
from vmdhcp.validation.view import ClusterView, network_key, object_key

DEFAULT_SERVICE_CIDR = IPv4Network("10.53.0.0/16")
"""Upstream's `--service-cidr` default (RKE2's, hence Harvester's)."""

NAD_RESOURCE = "network-attachment-definitions.k8s.cni.cncf.io"

MAX_LEASE_TIME = 0xFFFFFFFF
"""Option 51 is 32 bits (this value means infinite, RFC 2131). Unset, 0 or a negative
`leaseTime` means one year, as upstream and the CRD say: those are accepted."""


def nad_not_found(name: str) -> str:
    """The API server's NotFound message for a NetworkAttachmentDefinition, as upstream
    passes it on."""
    return f'{NAD_RESOURCE} "{name}" not found'


def being_deleted(meta: ObjectMeta) -> bool:
    return bool((meta.model_extra or {}).get("deletionTimestamp"))


def _address(text: str | None, reasons: list[str]) -> IPv4Address | None:
    """An optional address: empty means not given (the mutator fills it in)."""
    if not text:
        return None
    try:
        return parse_addr(text)
    except AddressError as exc:
        reasons.append(str(exc))
        return None


def _endpoint_reasons(what: str, ip: IPv4Address, network: IPv4Network) -> list[str]:
    if ip not in network:
        return [f"{what} ip {ip} is not within subnet"]
    if ip == network.network_address:
        return [f"{what} ip {ip} is the same as network ip"]
    if ip == network.broadcast_address:
        return [f"{what} ip {ip} is the same as broadcast ip"]
    return []


def _occupied(pool: IPPool) -> set[IPv4Address]:
    """Addresses `status.ipv4.allocated` gives to a MAC or marks EXCLUDED (RESERVED is the
    server and router themselves, so it does not count: harvester#5225)."""
    status = pool.status
    allocated = status.ipv4.allocated if status and status.ipv4 else None
    occupied: set[IPv4Address] = set()
    for text, holder in (allocated or {}).items():
        if holder == RESERVED_MARK:
            continue
        try:
            occupied.add(parse_addr(text))
        except AddressError:
            continue
    return occupied


def _network_reasons(pool: IPPool, view: ClusterView) -> list[str]:
    reasons: list[str] = []
    namespace, name = split_network_name(pool.spec.network_name)
    if view.nad_labels(namespace, name) is None:
        reasons.append(nad_not_found(name))
    key = network_key(pool.spec.network_name)
    me = (pool.metadata.namespace, pool.metadata.name)
    others = sorted(
        object_key(p.metadata.namespace, p.metadata.name)
        for p in view.ippools_on_network(key)
        if (p.metadata.namespace, p.metadata.name) != me
    )
    if others:
        reasons.append(f"network {key} is already served by IPPool {', '.join(others)}")
    return reasons


def _list_reasons(config: IPv4Config, network: IPv4Network | None) -> list[str]:
    """The additions: exclude and dns entries, lease time."""
    reasons: list[str] = []
    for text in config.pool.exclude or ():
        try:
            ip = parse_addr(text)
        except AddressError as exc:
            reasons.append(str(exc))
            continue
        if network is not None and ip not in network:
            reasons.append(f"exclude ip {ip} is not within subnet")
    for text in config.dns or ():
        try:
            parse_addr(text)
        except AddressError:
            reasons.append(f"dns server {text} is not an IPv4 address")
    if config.lease_time is not None and config.lease_time > MAX_LEASE_TIME:
        reasons.append(f"lease time {config.lease_time} is more than {MAX_LEASE_TIME} seconds")
    return reasons


def _excluded(config: IPv4Config) -> set[IPv4Address]:
    excluded: set[IPv4Address] = set()
    for text in config.pool.exclude or ():
        try:
            excluded.add(parse_addr(text))
        except AddressError:
            continue
    return excluded


def ippool_problems(
    pool: IPPool,
    view: ClusterView,
    *,
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR,
    check_occupied: bool = False,
) -> list[str]:
    """Every reason `pool` cannot be served, in upstream's order; empty when it is fine.

    `check_occupied` adds upstream's update-only rule: the server IP must not be an
    address `status.ipv4.allocated` gives to a MAC or marks EXCLUDED.
    """
    reasons: list[str] = []
    config = pool.spec.ipv4_config
    network: IPv4Network | None = None
    try:
        network = parse_cidr(config.cidr if config else "")
    except AddressError as exc:
        reasons.append(str(exc))
    start = _address(config.pool.start if config else None, reasons)
    end = _address(config.pool.end if config else None, reasons)
    server = _address(config.server_ip if config else None, reasons)
    router = _address(config.router if config else None, reasons)

    reasons += _network_reasons(pool, view)
    if network is not None and network.overlaps(service_cidr):
        cidr = config.cidr if config else ""
        reasons.append(f"cidr {cidr} overlaps cluster service cidr {service_cidr}")

    if network is not None:
        if start is not None:
            reasons += _endpoint_reasons("start", start, network)
        if end is not None:
            reasons += _endpoint_reasons("end", end, network)
    if start is not None and end is not None and end < start:
        reasons.append(f"end ip address {end} is less than start ip address {start}")

    if network is not None and server is not None and config is not None:
        found = _endpoint_reasons("server", server, network)
        if not found and router is not None and server == router:
            found = [f"server ip {server} is the same as router ip"]
        if not found and (
            server in _excluded(config) or (check_occupied and server in _occupied(pool))
        ):
            found = [f"server ip {server} is already occupied"]
        reasons += found

    if network is not None and router is not None:
        if router not in network:
            reasons.append(f"router ip {router} is not within subnet")
        elif router == network.network_address:
            reasons.append(f"router ip {router} is the same as network ip")
        elif router == network.broadcast_address:
            reasons.append(f"router ip {network.broadcast_address} is the same as broadcast ip")

    if config is not None:
        reasons += _list_reasons(config, network)
    return reasons


def validate_ippool_create(
    pool: IPPool, view: ClusterView, *, service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR
) -> None:
    """Raise ValidationError (`cannot create IPPool ns/name because ...`) for a bad pool.

    The controller calls this for pools that reached it without the webhook.
    """
    meta = pool.metadata
    raise_if(
        ippool_problems(pool, view, service_cidr=service_cidr),
        Operation.CREATE,
        IPPOOL_KIND,
        meta.namespace,
        meta.name,
    )


def validate_ippool_update(
    old: IPPool | None,
    new: IPPool,
    view: ClusterView,
    *,
    service_cidr: IPv4Network = DEFAULT_SERVICE_CIDR,
) -> None:
    """Raise ValidationError (`cannot update IPPool ...`) for problems the update brings.

    A pool being deleted is not checked (upstream). Problems `old` already had are not
    reported again (see `new_reasons`); without `old` every problem counts.
    """
    if being_deleted(new.metadata):
        return

    def problems(pool: IPPool) -> list[str]:
        return ippool_problems(pool, view, service_cidr=service_cidr, check_occupied=True)

    reasons = new_reasons(problems(new), None if old is None else problems(old))
    raise_if(reasons, Operation.UPDATE, IPPOOL_KIND, new.metadata.namespace, new.metadata.name)


def ippool_users(pool: IPPool, view: ClusterView) -> list[str]:
    """`ns/name` of the VirtualMachineNetworkConfigs that keep `pool` from being deleted.

    Keyed by the pool's `spec.networkName` (upstream keys it by the pool's own name,
    harvester#10380). None when another IPPool also serves the network: removing one of
    two pools on a network (which upstream let users create) must stay possible.
    """
    key = network_key(pool.spec.network_name)
    me = (pool.metadata.namespace, pool.metadata.name)
    if any((p.metadata.namespace, p.metadata.name) != me for p in view.ippools_on_network(key)):
        return []
    return sorted(
        object_key(cfg.metadata.namespace, cfg.metadata.name)
        for cfg in view.vmnetcfgs_on_network(key)
    )


def validate_ippool_delete(pool: IPPool, view: ClusterView) -> None:
    """Raise ValidationError while VirtualMachineNetworkConfigs use the pool's network."""
    users = ippool_users(pool, view)
    if users:
        raise ValidationError(
            Operation.DELETE,
            pool.kind,
            pool.metadata.namespace,
            pool.metadata.name,
            [
                f"it's still used by VirtualMachineNetworkConfig(s) {', '.join(users)}, "
                "which must be removed at first"
            ],
        )
