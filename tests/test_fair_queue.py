"""The pricing service's request queue: each device in turn, bounded per device and in total."""

from __future__ import annotations

import threading

from pricing.fair_queue import FairQueue


def test_a_flooding_sender_waits_behind_itself_only() -> None:
    q: FairQueue[str, str] = FairQueue(per_sender=100, total=1000)
    for n in range(50):
        q.put("evil", f"e{n}")
    q.put("shop-1", "s1")
    q.put("shop-2", "s2")
    served = [q.get(0) for _ in range(4)]
    assert served == ["e0", "s1", "s2", "e1"]  # one from each line in turn
    assert q.qsize() == 48 and q.senders() == 1


def test_each_sender_is_capped_and_so_is_the_total() -> None:
    q: FairQueue[int, str] = FairQueue(per_sender=3, total=5)
    assert [q.put("evil", n) for n in range(5)] == [True, True, True, False, False]
    assert q.put("a", 1) and q.put("b", 2)
    assert not q.put("c", 3)  # the whole queue is full
    assert q.dropped == {"device_backlog": 2, "overloaded": 1}


def test_control_events_go_first_and_an_idle_get_times_out() -> None:
    q: FairQueue[int, str] = FairQueue()
    q.put("a", 1)
    q.put_control("connected:Success")
    assert q.get(0) == "connected:Success" and q.get(0) == 1
    assert q.get(0.01) is None


def test_a_waiting_get_wakes_on_put() -> None:
    q: FairQueue[int, str] = FairQueue()
    got: list[int | str | None] = []
    worker = threading.Thread(target=lambda: got.append(q.get(10)))
    worker.start()
    q.put("a", 7)
    worker.join(5)
    assert got == [7]
