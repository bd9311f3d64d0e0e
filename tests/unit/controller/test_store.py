"""The controller's object store: last event wins, deletions are final per uid, a write's
answer is taken only over the version it was computed from."""

from __future__ import annotations

from typing import Any

from vmdhcp.controller.store import ObjectStore

KIND = "vmnetcfg"


def obj(name: str, uid: str, rv: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": rv},
        "spec": spec,
    }


def test_the_last_event_wins_whatever_its_resource_version() -> None:
    store = ObjectStore([KIND])
    store.observe(KIND, "ADDED", obj("a", "u1", "20"))
    store.observe(KIND, "MODIFIED", obj("a", "u1", "100", x=1))
    store.observe(KIND, "MODIFIED", obj("a", "u1", "9", x=2))  # opaque: "9" is not older
    assert store.get(KIND, ("ns", "a")) == obj("a", "u1", "9", x=2)


def test_a_deletion_is_final_for_its_uid_but_not_for_its_name() -> None:
    store = ObjectStore([KIND])
    store.observe(KIND, "ADDED", obj("a", "u1", "1"))
    store.observe(KIND, "DELETED", obj("a", "u1", "2"))
    assert not store.observe(KIND, "MODIFIED", obj("a", "u1", "1"))  # a late event
    assert store.get(KIND, ("ns", "a")) is None
    assert not store.remember(KIND, obj("a", "u1", "3"), None)  # a late write answer
    assert store.get(KIND, ("ns", "a")) is None
    assert store.observe(KIND, "ADDED", obj("a", "u2", "4"))  # created again
    assert store.get(KIND, ("ns", "a")) == obj("a", "u2", "4")


def test_the_deletion_of_an_old_uid_leaves_its_successor() -> None:
    store = ObjectStore([KIND])
    store.observe(KIND, "ADDED", obj("a", "u2", "4"))
    store.observe(KIND, "DELETED", obj("a", "u1", "2"))
    assert store.get(KIND, ("ns", "a")) == obj("a", "u2", "4")


def test_a_write_answer_is_taken_only_over_the_version_it_was_computed_from() -> None:
    store = ObjectStore([KIND])
    base = obj("a", "u1", "1")
    store.observe(KIND, "ADDED", base)
    assert store.remember(KIND, obj("a", "u1", "2", x=1), base)
    assert store.get(KIND, ("ns", "a")) == obj("a", "u1", "2", x=1)
    # the watch moved on meanwhile: the answer to a write based on "1" is not taken
    store.observe(KIND, "MODIFIED", obj("a", "u1", "3", x=3))
    assert not store.remember(KIND, obj("a", "u1", "4", x=4), base)
    assert store.get(KIND, ("ns", "a")) == obj("a", "u1", "3", x=3)
    # a create's answer only while nothing is stored
    assert not store.remember(KIND, obj("a", "u9", "5"), None)
    assert store.remember(KIND, obj("b", "u5", "6"), None)


def test_drop_forgets_without_burying() -> None:
    store = ObjectStore([KIND])
    store.observe(KIND, "ADDED", obj("a", "u1", "1"))
    store.drop(KIND, obj("a", "u1", "1"))
    assert store.get(KIND, ("ns", "a")) is None
    # the watch still reports it terminating (finalizers): it is taken
    assert store.observe(KIND, "MODIFIED", obj("a", "u1", "2"))


def test_tombstones_are_bounded() -> None:
    store = ObjectStore([KIND], tombstones=3)
    for n in range(10):
        store.observe(KIND, "DELETED", obj(f"o{n}", f"u{n}", "1"))
    assert [store.is_gone(f"u{n}") for n in range(10)] == [False] * 7 + [True] * 3
