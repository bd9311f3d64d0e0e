import asyncio

from vmdhcp.controller.conditions import set_condition
from vmdhcp.controller.workqueue import WorkQueue


def test_condition_times_move_only_on_change() -> None:
    first = set_condition([], "CacheReady", False, "Error", "boom", now="t1")
    assert first == [
        {
            "type": "CacheReady",
            "status": "False",
            "reason": "Error",
            "message": "boom",
            "lastUpdateTime": "t1",
            "lastTransitionTime": "t1",
        }
    ]
    same = set_condition(first, "CacheReady", False, "Error", "boom", now="t2")
    assert same == first
    message = set_condition(first, "CacheReady", False, "Error", "other", now="t3")[0]
    assert (message["lastUpdateTime"], message["lastTransitionTime"]) == ("t3", "t1")
    flipped = set_condition(first, "CacheReady", True, now="t4")[0]
    assert flipped == {
        "type": "CacheReady",
        "status": "True",
        "reason": "",
        "message": "",
        "lastUpdateTime": "t4",
        "lastTransitionTime": "t4",
    }
    assert first[0]["status"] == "False"  # the input is not modified


async def test_queue_dedupes_serialises_and_delays() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    key = await queue.get()
    assert key == "a"
    queue.add("a")  # while "a" is being handled: once more afterwards, not concurrently
    assert len(queue) == 1
    queue.done("a")
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == ["b", "a"]
    queue.done("b")
    queue.done("a")
    queue.add_after("c", 0.01)
    queue.add_after("c", 5)  # a later due time does not postpone it
    assert not queue.idle()
    assert await asyncio.wait_for(queue.get(), 2) == "c"
    queue.done("c")
    assert queue.idle()
