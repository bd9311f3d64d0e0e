"""DHCPDECLINE, end to end: another host (a namespace on the VM network) already holds the
address the controller allocates to a VM; the VM's real dhclient, whose hook script checks
the offered address with ARP (duplicate address detection, `arping -D`) before configuring
it, finds it taken and exits non-zero, so dhclient sends DHCPDECLINE; the agent (serving
the pool from the test API server, under the chart's grants) stops offering that address
to that MAC and reports it in its report Lease; the real controller sets it aside (marked
`DECLINED` in the IPPool status), gives the MAC the next address and says why in an Event
on the vmnetcfg; dhclient, trying again, is offered the new address, finds it free and
binds it.

Needs root and the lab's binaries (tests/netns) besides the test API server."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from tests.agentproc import wait_for
from tests.integration.test_rogue_report import GROUP, VERSION, World, world
from tests.netns.lab import Dhclient, DhcpResult, Netns, Proc, skip_reason

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox (arping) is missing"),
]
log = logging.getLogger(__name__)
__all__ = ["world"]  # the fixture, shared with the rogue report's test

VM_MAC = "02:00:00:00:48:41"
TAKEN = IPv4Address("192.168.48.82")  # the first address the seed pool gives
NEXT = IPv4Address("192.168.48.83")

# The lab's dhclient hook, with the ARP check a distribution's dhclient-script may do (Red
# Hat's does): before configuring an offered address, ask whether anyone answers for it;
# if so, exit 1, and dhclient declines the address (ISC dhclient: a failing BOUND script
# means DHCPDECLINE) and starts over.
_ARP_CHECKING_HOOK = """#!/bin/sh
env -0 > "{dir}/.partial.$$" && mv "{dir}/.partial.$$" "{dir}/$(date +%s%N).$reason.env"
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|REBOOT)
    if ! busybox arping -D -q -c 2 -w 2 -I "$interface" "$new_ip_address"; then
      echo "$new_ip_address" >> "{dir}/../conflicts"
      exit 1
    fi
    ip -4 address flush dev "$interface"
    ip address add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  RENEW|REBIND)
    ip -4 address flush dev "$interface"
    ip address add "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 address flush dev "$interface" ;;
esac
exit 0
"""


class ArpCheckingDhclient(Dhclient):
    hook_template = _ARP_CHECKING_HOOK

    def run(self) -> Proc:
        """dhclient in the foreground for good (no `-1`: after a decline it starts over),
        at once, not ten seconds later (`--decline-wait-time 0`): the agent must not offer
        the declined address again meanwhile, or the check finds it taken twice."""
        argv = self._argv("-d", "--decline-wait-time", "0")
        return self.ns.popen(argv, self.log)

    def conflicts(self) -> list[str]:
        path = self.dir / "conflicts"
        return path.read_text().split() if path.exists() else []

    def bound(self) -> DhcpResult | None:
        """The address dhclient configured: a BOUND whose ARP check passed."""
        result = self.last_result()
        if result is None or result.ip is None or str(result.ip) in self.conflicts():
            return None
        addresses = [i.ip for i in self.ns.addresses()]
        return result if result.ip in addresses else None


def vmnetcfg(world: World, name: str) -> dict[str, Any]:
    body: dict[str, Any] = world.custom.get_namespaced_custom_object(
        GROUP, VERSION, world.ns, "virtualmachinenetworkconfigs", name
    )
    return body


def vmnetcfg_events(world: World, reason: str) -> list[Any]:
    items = world.core.list_namespaced_event(world.ns).items
    return [
        e
        for e in items
        if e.reason == reason and e.involved_object.kind == "VirtualMachineNetworkConfig"
    ]


def allocated(world: World) -> dict[str, str]:
    ipv4 = (world.pool().get("status") or {}).get("ipv4") or {}
    return dict(ipv4.get("allocated") or {})


def squat(world: World, address: IPv4Address) -> Netns:
    """Another host on the VM network that already uses `address` (and answers ARP)."""
    node = world.lab.add_client()
    node.set_address(IPv4Interface(f"{address}/{world.lab.network.prefixlen}"))
    return node


def test_a_vm_declines_an_address_in_use_and_binds_another_through_the_controller(
    world: World, kubectl: Callable[..., str]
) -> None:
    agent = world.start("net-48-agent", address=True)
    squatter = squat(world, TAKEN)
    world.vm("vm-1", VM_MAC)
    assert wait_for(lambda: world.allocated("vm-1"), 15, "the allocation") == str(TAKEN)
    wait_for(lambda: allocated(world).get(str(TAKEN)), 15, "the allocation in the pool status")

    client = ArpCheckingDhclient(world.lab.add_client(mac=VM_MAC), timeout=10)
    began = time.monotonic()
    proc = client.run()
    try:
        bound = wait_for(client.bound, 60, f"dhclient to bind an address\n{proc.tail()}")
    finally:
        proc.stop()
    took = time.monotonic() - began
    # it was offered the taken address first, found it in use, declined it; then bound the next
    assert client.conflicts() == [str(TAKEN)], proc.output()
    assert "DHCPDECLINE" in proc.output()
    assert bound.ip == NEXT
    assert IPv4Interface(f"{NEXT}/24") in client.ns.addresses()
    assert IPv4Interface(f"{TAKEN}/24") in squatter.addresses()  # nobody touched the other

    # what the user sees: the vmnetcfg's status and Event, the pool's status and counts
    assert world.allocated("vm-1") == str(NEXT)
    (event,) = vmnetcfg_events(world, "AddressDeclined")
    assert event.type == "Warning"
    assert f"declined {TAKEN}" in event.message
    assert f"it now has {NEXT}" in event.message
    status = allocated(world)
    assert status[str(TAKEN)] == "DECLINED"
    assert status[str(NEXT)] == VM_MAC
    ipv4 = world.pool()["status"]["ipv4"]
    assert (ipv4["used"], ipv4["available"]) == (2, 6)
    table = kubectl("get", "ippl", "net-48", "-n", world.ns, "--no-headers")
    assert table.split()[2:4] == ["6", "2"], table  # NAME NETWORK AVAILABLE USED ...
    events = kubectl("get", "events", "-n", world.ns, "--field-selector", "reason=AddressDeclined")
    assert f"declined {TAKEN}" in events, events
    assert agent.metric("vmdhcp_agent_declines_total", result="withheld") == 1
    # the agent dropped the entry once the pool moved the MAC: the report is empty again
    wait_for(lambda: _report_declined(world) == [], 10, "the report to drop the entry")
    log.info("declined and bound another address in %.1fs", took)


def _report_declined(world: World) -> list[Any]:
    for lease in world.report_leases():
        annotations = lease.metadata.annotations or {}
        data = json.loads(annotations.get(f"{GROUP}/agent-report") or "{}")
        return list(data.get("declined") or [])
    return []


PINNED = IPv4Address("192.168.48.85")


def pinned_vm(world: World, name: str, mac: str, address: IPv4Address) -> None:
    """A VM whose NIC's address is pinned with the static-ip annotation."""
    nic = {"name": "nic-1", "bridge": {}, "macAddress": mac}
    network = {"name": "nic-1", "multus": {"networkName": f"{world.ns}/net-48"}}
    template = {"spec": {"domain": {"devices": {"interfaces": [nic]}}, "networks": [network]}}
    body = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "annotations": {"static-ip.harvesterhci.io/nic-1": str(address)},
        },
        "spec": {"template": template},
    }
    world.custom.create_namespaced_custom_object(
        "kubevirt.io", "v1", world.ns, "virtualmachines", body
    )


def conflict(world: World, name: str) -> dict[str, Any] | None:
    for found in (vmnetcfg(world, name).get("status") or {}).get("conditions") or []:
        if found["type"] == "AddressConflict":
            return dict(found)
    return None


def test_a_pinned_address_in_use_is_reported_not_moved(
    world: World, kubectl: Callable[..., str]
) -> None:
    world.start("net-48-agent", address=True)
    squat(world, PINNED)
    pinned_vm(world, "vm-pinned", VM_MAC, PINNED)
    assert wait_for(lambda: world.allocated("vm-pinned"), 15, "the allocation") == str(PINNED)
    wait_for(lambda: allocated(world).get(str(PINNED)), 15, "the allocation in the pool status")

    client = ArpCheckingDhclient(world.lab.add_client(mac=VM_MAC), timeout=10)
    proc = client.run()
    try:
        found = wait_for(
            lambda: (c := conflict(world, "vm-pinned")) and c["status"] == "True" and c,
            30,
            f"the AddressConflict condition\n{proc.tail()}",
        )
        assert found["reason"] == "PinnedAddressDeclined"
        assert f"pinned address {PINNED}" in found["message"]
        assert client.conflicts() == [str(PINNED)]  # declined once, not offered it again
        assert client.bound() is None
    finally:
        proc.stop()
    (event,) = vmnetcfg_events(world, "PinnedAddressConflict")
    assert event.type == "Warning"
    # nothing moved: the pin stands, nothing is set aside
    assert world.allocated("vm-pinned") == str(PINNED)
    assert "DECLINED" not in allocated(world).values()
    assert vmnetcfg_events(world, "AddressDeclined") == []
    described = kubectl("describe", "vmnetcfg", "vm-pinned", "-n", world.ns)
    assert "AddressConflict" in described, described
