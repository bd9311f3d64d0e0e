"""The Event bodies and the repeat limit both components use."""

from vmdhcp.events import MEMORY, RepeatFilter, event_body


def test_a_repeat_is_let_through_once_per_interval_and_memory_stays_bounded() -> None:
    now = [100.0]
    repeats = RepeatFilter(60.0, clock=lambda: now[0])
    assert repeats.allow(("Declined", "mac-1"))
    assert not repeats.allow(("Declined", "mac-1"))
    assert repeats.allow(("Declined", "mac-2"))
    now[0] += 60.0
    assert repeats.allow(("Declined", "mac-1"))
    for n in range(MEMORY + 10):
        repeats.allow(n)
        now[0] += 0.001
    assert len(repeats._last) <= MEMORY + 1


def test_an_event_names_its_object_and_says_warning() -> None:
    body = event_body(
        api_version="network.harvesterhci.io/v1alpha1",
        kind="IPPool",
        namespace="ns",
        name="net-48",
        uid="u1",
        reason="AddressDeclined",
        message="m",
        warning=True,
        component="vm-dhcp-agent",
    )
    assert body["type"] == "Warning"
    assert body["metadata"] == {"generateName": "net-48.", "namespace": "ns"}
    assert body["involvedObject"]["uid"] == "u1"
    assert body["source"] == {"component": "vm-dhcp-agent"}
