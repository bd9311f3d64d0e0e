"""VirtualMachineNetworkConfig rules: upstream's NAD-to-IPPool resolution, and the checks of
MAC addresses and static addresses (upstream PR 157's messages) that upstream lacks."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address

from vmdhcp.api import IPPool, VirtualMachineNetworkConfig, split_network_name
from vmdhcp.api.constants import (
    DECLINED_MARK,
    EXCLUDED_MARK,
    LABEL_IPPOOL_NAME,
    LABEL_IPPOOL_NAMESPACE,
    RESERVED_MARK,
)
from vmdhcp.mac import InvalidMac, normalize_mac
from vmdhcp.validation.addresses import AddressError, parse_addr, parse_cidr
from vmdhcp.validation.errors import Operation, new_reasons, raise_if
from vmdhcp.validation.ippool import being_deleted, nad_not_found
from vmdhcp.validation.view import ClusterView, network_key, object_key

IPPOOL_RESOURCE = "ippools.network.harvesterhci.io"

ANY_ADDRESS = "0.0.0.0"
"""An `ipAddress` that asks for no address in particular (as upstream's IPAM reads it)."""


def resolve_ippool(network_name: str, view: ClusterView) -> tuple[IPPool | None, str | None]:
    """The IPPool serving a network, found as upstream finds it (NAD, then its
    `ippool-namespace` and `ippool-name` labels, then the pool), or the reason it is not."""
    namespace, name = split_network_name(network_name)
    labels = view.nad_labels(namespace, name)
    if labels is None:
        return None, nad_not_found(name)
    if LABEL_IPPOOL_NAMESPACE not in labels:
        return None, f"{LABEL_IPPOOL_NAMESPACE} label not found"
    if LABEL_IPPOOL_NAME not in labels:
        return None, f"{LABEL_IPPOOL_NAME} label not found"
    pool_name = labels[LABEL_IPPOOL_NAME]
    pool = view.ippool(labels[LABEL_IPPOOL_NAMESPACE], pool_name)
    if pool is None:
        return None, f'{IPPOOL_RESOURCE} "{pool_name}" not found'
    return pool, None


def parse_static_ip(text: str) -> IPv4Address:
    """A static address; AddressError `ip address X is not an IPv4 address` otherwise."""
    try:
        return parse_addr(text)
    except AddressError:
        raise AddressError(f"ip address {text} is not an IPv4 address") from None


def static_ip_problem(text: str, pool: IPPool, mac: str | None = None) -> str | None:
    """Why `text` cannot be the static address of `mac` in `pool`, or None if it can.

    For `spec.networkConfigs[].ipAddress` and for the VM annotation
    `static-ip.harvesterhci.io/<nic>` alike. A pool whose own spec does not parse is not
    judged here (its own validation says why). Empty and `0.0.0.0` ask for no address
    in particular, which is always fine.
    """
    if not text or text == ANY_ADDRESS:
        return None
    try:
        ip = parse_static_ip(text)
    except AddressError as exc:
        return str(exc)
    config = pool.spec.ipv4_config
    if config is None:
        return None
    try:
        network = parse_cidr(config.cidr)
        start = parse_addr(config.pool.start)
        end = parse_addr(config.pool.end)
    except AddressError:
        return None
    if ip not in network:
        return f"ip address {ip} is not within subnet {network}"
    if ip == network.network_address:
        return f"ip address {ip} is the same as network ip"
    if ip == network.broadcast_address:
        return f"ip address {ip} is the same as broadcast ip"
    if not start <= ip <= end:
        return f"ip address {ip} is not within pool range {start}-{end}"
    if ip in _addresses((config.server_ip, config.router, *(config.pool.exclude or ()))):
        return f"ip address {ip} is not allocatable"
    status = pool.status
    allocated = (status.ipv4.allocated if status and status.ipv4 else None) or {}
    holder = next((mac for text, mac in allocated.items() if _addresses((text,)) == {ip}), None)
    if holder in (EXCLUDED_MARK, RESERVED_MARK):
        return f"ip address {ip} is not allocatable"
    if holder == DECLINED_MARK:
        return (
            f"ip address {ip} is set aside: a VM declined it (another host uses it on the "
            "network); pin another address, or wait until the controller gives it back"
        )
    if holder is not None and not _same_mac(holder, mac):
        return f"ip address {ip} is already allocated to mac {holder}"
    return None


def _addresses(texts: Iterable[str | None]) -> set[IPv4Address]:
    """The valid addresses among `texts`."""
    found: set[IPv4Address] = set()
    for text in texts:
        if text:
            try:
                found.add(parse_addr(text))
            except AddressError:
                continue
    return found


def _same_mac(a: str, b: str | None) -> bool:
    if b is None:
        return False
    try:
        return normalize_mac(a) == normalize_mac(b)
    except InvalidMac:
        return a == b


def mac_key(text: str) -> str | None:
    """A MAC in its normal form, or None when it is not one (how the rules compare MACs)."""
    try:
        return normalize_mac(text)
    except InvalidMac:
        return None


def static_key(text: str | None) -> str | None:
    """The static address asked for, normalised, or None (unset, `0.0.0.0` or invalid):
    how the rules compare desired addresses."""
    if not text or text == ANY_ADDRESS:
        return None
    try:
        return str(parse_addr(text))
    except AddressError:
        return None


def vmnetcfg_problems(cfg: VirtualMachineNetworkConfig, view: ClusterView) -> list[str]:
    """Every reason `cfg` cannot be served, NIC by NIC; empty when it is fine."""
    reasons: list[str] = []
    me = (cfg.metadata.namespace, cfg.metadata.name)
    macs: set[tuple[str, str]] = set()
    ips: set[tuple[str, str]] = set()
    for nc in cfg.spec.network_configs or ():
        key = network_key(nc.network_name)
        pool, unresolved = resolve_ippool(nc.network_name, view)
        if unresolved is not None:
            reasons.append(unresolved)
        try:
            mac: str | None = normalize_mac(nc.mac_address)
        except InvalidMac as exc:
            reasons.append(str(exc))
            mac = None
        others = [
            other
            for other in view.vmnetcfgs_on_network(key)
            if (other.metadata.namespace, other.metadata.name) != me
        ]
        if mac is not None:
            if (key, mac) in macs:
                reasons.append(f"duplicate mac address {mac} on network {key}")
            macs.add((key, mac))
            for other in others:
                if any(
                    network_key(onc.network_name) == key and mac_key(onc.mac_address) == mac
                    for onc in other.spec.network_configs or ()
                ):
                    owner = object_key(other.metadata.namespace, other.metadata.name)
                    reasons.append(
                        f"mac address {mac} is already used on network {key} "
                        f"by VirtualMachineNetworkConfig {owner}"
                    )
                    break
        if not nc.ip_address or nc.ip_address == ANY_ADDRESS:
            continue
        if pool is not None:
            problem = static_ip_problem(nc.ip_address, pool, mac)
            if problem is not None:
                reasons.append(problem)
        else:
            try:
                parse_static_ip(nc.ip_address)
            except AddressError as exc:
                reasons.append(str(exc))
        ip = static_key(nc.ip_address)
        if ip is None:
            continue
        duplicate = (key, ip) in ips or any(
            network_key(onc.network_name) == key
            and static_key(onc.ip_address) == ip
            and (mac is None or mac_key(onc.mac_address) != mac)
            for other in others
            for onc in other.spec.network_configs or ()
        )
        if duplicate:
            reasons.append(f"duplicate desired ip {ip} on network {key}")
        ips.add((key, ip))
    return reasons


def validate_vmnetcfg_create(cfg: VirtualMachineNetworkConfig, view: ClusterView) -> None:
    """Raise ValidationError (`cannot create VirtualMachineNetworkConfig ns/name because
    ...`) for a bad configuration."""
    meta = cfg.metadata
    raise_if(vmnetcfg_problems(cfg, view), Operation.CREATE, cfg.kind, meta.namespace, meta.name)


def validate_vmnetcfg_update(
    old: VirtualMachineNetworkConfig | None,
    new: VirtualMachineNetworkConfig,
    view: ClusterView,
) -> None:
    """Raise ValidationError for problems an update brings (upstream does not check updates
    at all). Objects being deleted are not checked; problems `old` had are not repeated."""
    if being_deleted(new.metadata):
        return
    reasons = new_reasons(
        vmnetcfg_problems(new, view), None if old is None else vmnetcfg_problems(old, view)
    )
    meta = new.metadata
    raise_if(reasons, Operation.UPDATE, new.kind, meta.namespace, meta.name)
