"""The controller's pure allocator, as a hypothesis state machine over two networks: pools
built, reshaped and forgotten, addresses allocated (lowest free, static, resumed) and
released, declined (set aside, the MAC moved) and set-aside addresses expired. After every
step: no address has two owners, the owners map and the pools agree, nothing is leaked by a
release or a forgotten pool, a reshape keeps every allocation that still fits, no set-aside
address is allocated, and the status counts add up (used + available = the spec's capacity,
one DECLINED mark per set-aside address)."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmdhcp.api.models import IPv4Config
from vmdhcp.controller.allocator import Allocator, Claim, Effects

NETWORKS = ("ns/net-a", "ns/net-b")
OWNERS = [("ns", f"vm-{n}") for n in range(6)]
MACS = [f"02:00:00:00:00:{n:02x}" for n in range(8)]


def config(exclude: tuple[str, ...] = (), end: int = 20) -> IPv4Config:
    body: dict[str, Any] = {
        "serverIP": "10.0.0.1",
        "cidr": "10.0.0.0/24",
        "pool": {"start": "10.0.0.10", "end": f"10.0.0.{end}", "exclude": list(exclude)},
    }
    return IPv4Config.model_validate(body)


SHAPES = [config(), config(("10.0.0.11", "10.0.0.12")), config(end=14), config(("10.0.0.10",))]


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alloc = Allocator()
        self.shape: dict[str, IPv4Config] = {}
        self.now = 0.0

    @rule(network=st.sampled_from(NETWORKS), shape=st.sampled_from(SHAPES))
    def build(self, network: str, shape: IPv4Config) -> None:
        before = self._held(network)
        pool_ref = ("ns", network.split("/")[1])
        problem, _ = self.alloc.build(pool_ref, network, shape, [], {}, {})
        assert problem is None
        self.shape[network] = shape
        pool = self.alloc.ipam.pool(network)
        for mac, address in before.items():
            fits = shape.to_pool().start <= address <= shape.to_pool().end and (
                str(address) not in (shape.pool.exclude or ())
            )
            if fits:  # a reshape keeps every allocation that still fits
                assert pool.lookup(mac) == address
            else:
                assert pool.lookup(mac) is None
                assert all(key != (network, mac) for key in self.alloc.owners)

    @precondition(lambda self: self.shape)
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        network = data.draw(st.sampled_from(sorted(self.shape)))
        effects = self.alloc.forget_pool(("ns", network.split("/")[1]))
        del self.shape[network]
        assert not self.alloc.serves(network)
        assert all(net != network for net, _ in self.alloc.owners)
        assert all(owner in OWNERS for owner in effects.retry)

    @rule(
        owner=st.sampled_from(OWNERS),
        network=st.sampled_from(NETWORKS),
        mac=st.sampled_from(MACS),
        static=st.one_of(st.none(), st.integers(8, 22).map(lambda n: f"10.0.0.{n}")),
    )
    def allocate(self, owner: tuple[str, str], network: str, mac: str, static: str | None) -> None:
        holder = self.alloc.owners.get((network, mac))
        address, _, _ = self.alloc.allocate(owner, network, mac, static, None)
        if network not in self.shape:
            assert isinstance(address, str)
            assert owner in self.alloc.waiting[network]
            return
        if holder is not None and holder != owner:
            assert isinstance(address, str)
            assert "already used" in address
            return
        if isinstance(address, IPv4Address):
            assert self.alloc.owners[(network, mac)] == owner
            assert self.alloc.ipam.pool(network).lookup(mac) == address
            if static is not None:
                assert str(address) == static

    @rule(owner=st.sampled_from(OWNERS), network=st.sampled_from(NETWORKS))
    def release_one(self, owner: tuple[str, str], network: str) -> None:
        held = [
            mac for (net, mac), who in self.alloc.owners.items() if who == owner and net == network
        ]
        for mac in held:
            self.alloc.release(network, mac)
            assert (network, mac) not in self.alloc.owners
            assert self.alloc.ipam.pool(network).lookup(mac) is None

    @precondition(lambda self: self.alloc.owners)
    @rule(data=st.data(), quarantine=st.sampled_from([0.0, 5.0, 50.0]))
    def decline(self, data: st.DataObject, quarantine: float) -> None:
        (network, mac), owner = data.draw(st.sampled_from(sorted(self.alloc.owners.items())))
        held = self.alloc.ipam.pool(network).lookup(mac)
        assert held is not None
        # a decline of another address than the MAC's changes nothing
        other = IPv4Address(int(held) + 1)
        assert self.alloc.decline(owner, network, mac, str(other), 0.0) == (None, Effects())
        got, effects = self.alloc.decline(owner, network, mac, str(held), self.now + quarantine)
        assert held in self.alloc.aside[network]
        assert got != held
        assert self.alloc.ipam.pool(network).owner(held) is None
        if isinstance(got, IPv4Address):
            assert self.alloc.ipam.pool(network).lookup(mac) == got
        else:
            assert owner in self.alloc.waiting[network]
        assert effects.changed == {("ns", network.split("/")[1])}
        # the same report seen again: the MAC no longer holds that address, nothing moves
        assert self.alloc.decline(owner, network, mac, str(held), self.now + 99) == (
            None,
            Effects(),
        )

    @rule(step=st.sampled_from([1.0, 10.0, 100.0]))
    def time_passes(self, step: float) -> None:
        self.now += step
        for network in self.shape:
            self.alloc.expire(network, self.now)
            assert all(until > self.now for until in self.alloc.aside[network].values())

    @rule(owner=st.sampled_from(OWNERS))
    def release_all(self, owner: tuple[str, str]) -> None:
        self.alloc.release_all(owner)
        assert self.alloc.held_by(owner) == []
        assert all(owner not in waiting for waiting in self.alloc.waiting.values())

    def _held(self, network: str) -> dict[str, IPv4Address]:
        if network not in self.alloc.ipam:
            return {}
        return {mac: ip for ip, mac in self.alloc.ipam.pool(network).allocations().items()}

    @invariant()
    def owners_and_pools_agree(self) -> None:
        for network in self.shape:
            pool = self.alloc.ipam.pool(network)
            allocations = pool.allocations()
            assert len(set(allocations)) == len(allocations)  # one owner per address
            owned = {mac for (net, mac) in self.alloc.owners if net == network}
            assert owned == set(allocations.values()), "pool and owners disagree"
            for address in allocations:
                assert pool.start <= address <= pool.end
                assert address not in pool.excluded | pool.reserved
            aside = self.alloc.aside.get(network, {})
            assert not set(aside) & set(allocations), "a set-aside address is allocated"
            spec = self.shape[network].to_pool()
            assert not set(aside) & (spec.excluded | spec.reserved)
            _, status, used, available = self.alloc.status(network)
            assert used + available == spec.capacity
            assert used == len(allocations) + len(aside)
            marked = {ip for ip, mac in status.items() if mac == "DECLINED"}
            assert marked == {str(a) for a in aside}


TestAllocator = AllocatorMachine.TestCase
TestAllocator.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_restore_reports_a_second_claim_on_one_address_and_keeps_the_first() -> None:
    alloc = Allocator()
    claims = [
        Claim("10.0.0.10", MACS[0], OWNERS[0]),
        Claim("10.0.0.10", MACS[1], OWNERS[1]),
    ]
    problem, effects = alloc.build(("ns", "net-a"), NETWORKS[0], config(), claims, {}, {})
    assert problem is None
    assert alloc.owners == {(NETWORKS[0], MACS[0]): OWNERS[0]}
    assert len(effects.conflicts) == 1
    assert "vm-1" in effects.conflicts[0]
    assert alloc.conflicts[("ns", "net-a")] == effects.conflicts


def test_a_pool_status_entry_no_vmnetcfg_names_is_released() -> None:
    alloc = Allocator()
    status = {"10.0.0.15": MACS[3], "10.0.0.16": MACS[4], "10.0.0.1": "RESERVED"}
    problem, effects = alloc.build(
        ("ns", "net-a"), NETWORKS[0], config(), [], status, {MACS[3]: OWNERS[3]}
    )
    assert problem is None
    held = alloc.ipam.pool(NETWORKS[0]).allocations()
    assert {str(ip): mac for ip, mac in held.items()} == {"10.0.0.15": MACS[3]}
    assert alloc.owners == {(NETWORKS[0], MACS[3]): OWNERS[3]}  # released with its owner
    assert any("belongs to no VirtualMachineNetworkConfig" in c for c in effects.conflicts)


def test_a_second_pool_on_a_network_is_refused() -> None:
    alloc = Allocator()
    assert alloc.build(("ns", "a"), NETWORKS[0], config(), [], {}, {})[0] is None
    problem, _ = alloc.build(("ns", "b"), NETWORKS[0], config(), [], {}, {})
    assert problem == "network ns/net-a is already served by ippool ns/a"


def test_a_waiting_vmnetcfg_is_retried_when_an_address_frees() -> None:
    alloc = Allocator()
    alloc.build(("ns", "a"), NETWORKS[0], config(end=10), [], {}, {})
    first, _, _ = alloc.allocate(OWNERS[0], NETWORKS[0], MACS[0], None, None)
    assert str(first) == "10.0.0.10"
    problem, _, _ = alloc.allocate(OWNERS[1], NETWORKS[0], MACS[1], None, None)
    assert isinstance(problem, str)
    effects = alloc.release_all(OWNERS[0])
    assert effects.retry == {OWNERS[1]}
    assert effects.changed == {("ns", "a")}


def test_a_recorded_address_is_given_back_when_free() -> None:
    alloc = Allocator()
    alloc.build(("ns", "a"), NETWORKS[0], config(), [], {}, {})
    address, fresh, _ = alloc.allocate(OWNERS[0], NETWORKS[0], MACS[0], None, "10.0.0.17")
    assert (str(address), fresh) == ("10.0.0.17", True)
    again, fresh, effects = alloc.allocate(OWNERS[0], NETWORKS[0], MACS[0], None, "10.0.0.18")
    assert (str(again), fresh, effects.changed) == ("10.0.0.17", False, set())


def test_a_declined_address_is_set_aside_marked_and_restored_after_a_restart() -> None:
    alloc = Allocator()
    alloc.build(("ns", "a"), NETWORKS[0], config(), [], {}, {})
    first, _, _ = alloc.allocate(OWNERS[0], NETWORKS[0], MACS[0], None, None)
    assert str(first) == "10.0.0.10"
    got, effects = alloc.decline(OWNERS[0], NETWORKS[0], MACS[0], "10.0.0.10", 600.0)
    assert str(got) == "10.0.0.11"
    assert effects.changed == {("ns", "a")}
    _, status, used, available = alloc.status(NETWORKS[0])
    assert status["10.0.0.10"] == "DECLINED"
    assert status["10.0.0.11"] == MACS[0]
    assert (used, available) == (2, 9)  # 11 addresses: one held, one set aside
    # nobody gets it: neither the lowest free, nor a recorded one, nor a static one
    second, _, _ = alloc.allocate(OWNERS[1], NETWORKS[0], MACS[1], None, "10.0.0.10")
    assert str(second) == "10.0.0.12"
    problem, _, _ = alloc.allocate(OWNERS[2], NETWORKS[0], MACS[2], "10.0.0.10", None)
    assert problem == (
        "designated ip 10.0.0.10 is set aside: a client declined it, another host answers "
        "for it on the network"
    )
    # a restart reads the mark back: set aside again, for a quarantine counted from then
    again = Allocator()
    claims = [Claim("10.0.0.11", MACS[0], OWNERS[0]), Claim("10.0.0.12", MACS[1], OWNERS[1])]
    again.build(("ns", "a"), NETWORKS[0], config(), claims, status, {}, aside_until=1234.0)
    assert again.aside[NETWORKS[0]] == {IPv4Address("10.0.0.10"): 1234.0}
    assert again.status(NETWORKS[0])[1:] == alloc.status(NETWORKS[0])[1:]
    assert again.next_expiry(NETWORKS[0]) == 1234.0
    # its time up, it goes back to the pool, and whoever waited is retried
    assert again.expire(NETWORKS[0], 1233.9) == Effects()
    effects = again.expire(NETWORKS[0], 1234.0)
    assert effects.changed == {("ns", "a")}
    assert again.aside[NETWORKS[0]] == {}
    third, _, _ = again.allocate(OWNERS[3], NETWORKS[0], MACS[3], None, None)
    assert str(third) == "10.0.0.10"


def test_a_declined_mark_beats_a_dynamic_claim_and_loses_to_a_pinned_one() -> None:
    """The pool's status (the mark, and the MAC's new address) was written before the
    vmnetcfg's (a crash between the two): the mark wins, the MAC keeps its new address and
    its vmnetcfg is retried; only a pinned address stays with its VM."""
    alloc = Allocator()
    claims = [Claim("10.0.0.10", MACS[0], OWNERS[0])]
    status = {"10.0.0.10": "DECLINED", "10.0.0.11": MACS[0]}
    _, effects = alloc.build(
        ("ns", "a"), NETWORKS[0], config(), claims, status, {MACS[0]: OWNERS[0]}
    )
    assert set(alloc.aside[NETWORKS[0]]) == {IPv4Address("10.0.0.10")}
    assert str(alloc.ipam.pool(NETWORKS[0]).lookup(MACS[0])) == "10.0.0.11"
    assert OWNERS[0] in effects.retry
    assert alloc.owners[(NETWORKS[0], MACS[0])] == OWNERS[0]

    alloc = Allocator()
    claims = [Claim("10.0.0.10", MACS[0], OWNERS[0], pinned=True)]
    alloc.build(("ns", "a"), NETWORKS[0], config(), claims, {"10.0.0.10": "DECLINED"}, {})
    assert alloc.aside[NETWORKS[0]] == {}
    assert str(alloc.ipam.pool(NETWORKS[0]).lookup(MACS[0])) == "10.0.0.10"


def test_a_decline_in_a_full_pool_leaves_the_mac_waiting() -> None:
    alloc = Allocator()
    alloc.build(("ns", "a"), NETWORKS[0], config(end=10), [], {}, {})
    alloc.allocate(OWNERS[0], NETWORKS[0], MACS[0], None, None)
    got, _ = alloc.decline(OWNERS[0], NETWORKS[0], MACS[0], "10.0.0.10", 5.0)
    assert got == "no more ip addresses left in network ns/net-a ipam"
    assert OWNERS[0] in alloc.waiting[NETWORKS[0]]
    effects = alloc.expire(NETWORKS[0], 5.0)
    assert effects.retry == {OWNERS[0]}
