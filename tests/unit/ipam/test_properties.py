"""Property-based invariants of the IPAM: whatever the sequence of operations, no address
is held by two MACs, every allocation lies in range minus reserved minus excluded, the
counts add up, and allocation is deterministic."""

from ipaddress import IPv4Address

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmdhcp.ipam import DesignationError, Pool, PoolExhausted

MACS = [f"02:00:00:00:00:{n:02x}" for n in range(24)]
START, END = IPv4Address("10.0.0.3"), IPv4Address("10.0.0.22")
EXCLUDED = [IPv4Address("10.0.0.5"), IPv4Address("10.0.0.9"), IPv4Address("10.0.0.40")]
SERVER, ROUTER = IPv4Address("10.0.0.4"), IPv4Address("10.0.0.1")


def fresh() -> Pool:
    return Pool.from_spec(
        "10.0.0.0/26", START, END, server=SERVER, router=ROUTER, exclude=EXCLUDED, name="p"
    )


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = fresh()
        self.model: dict[str, IPv4Address] = {}

    @rule(mac=st.sampled_from(MACS))
    def allocate(self, mac: str) -> None:
        try:
            address = self.pool.allocate(mac)
        except PoolExhausted:
            assert mac not in self.model
            assert len(self.model) == self.pool.capacity
            return
        if mac in self.model:
            assert address == self.model[mac]
        else:
            taken = set(self.model.values())
            allowed = [
                IPv4Address(i)
                for i in range(int(START), int(END) + 1)
                if IPv4Address(i) not in taken
                and IPv4Address(i) not in EXCLUDED
                and IPv4Address(i) != SERVER
            ]
            assert address == min(allowed)  # lowest free, deterministically
        self.model[mac] = address

    @rule(mac=st.sampled_from(MACS), offset=st.integers(min_value=-4, max_value=64))
    def designate(self, mac: str, offset: int) -> None:
        target = IPv4Address(int(START) + offset) if offset >= -3 else "0.0.0.0"
        try:
            address = self.pool.allocate(mac, target)
        except DesignationError:
            return
        except PoolExhausted:
            return
        if target != "0.0.0.0":
            assert address == target
        self.model[mac] = address

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        mac = data.draw(st.sampled_from(sorted(self.model)))
        assert self.pool.release(mac) == self.model.pop(mac)

    @invariant()
    def matches_model(self) -> None:
        assert self.pool.allocations() == {a: m for m, a in self.model.items()}

    @invariant()
    def never_two_macs_on_one_address(self) -> None:
        addresses = list(self.model.values())
        assert len(addresses) == len(set(addresses))

    @invariant()
    def allocations_only_in_allocatable_space(self) -> None:
        for address in self.model.values():
            assert START <= address <= END
            assert address not in EXCLUDED
            assert address not in (SERVER, ROUTER)

    @invariant()
    def counts_add_up(self) -> None:
        assert self.pool.used == len(self.model)
        assert self.pool.used + self.pool.available == self.pool.capacity == 17

    @invariant()
    def restore_reproduces_the_state(self) -> None:
        copy = fresh()
        claims = self.pool.snapshot().status_allocated().items()
        assert copy.restore(claims) == []
        assert copy.allocations() == self.pool.allocations()


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
