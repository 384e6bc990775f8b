"""The state lease (issue 10, item 5) on a real SQLite file and a real PostgreSQL: one
owner at a time, re-entrant for its own holders, taken over only once expired, and a race
of many owners has exactly one winner."""

from __future__ import annotations

import threading
import time

import pytest

from custsync_pipeline.store import lease


def test_one_owner_at_a_time_reentrant_and_released(engine) -> None:
    assert lease.try_acquire(engine, "run-a", ttl_s=60)
    assert not lease.try_acquire(engine, "run-b", ttl_s=60)
    assert lease.try_acquire(engine, "run-a", ttl_s=60)  # a second step of the same run
    assert lease.current(engine).holders == 2
    lease.release(engine, "run-a")
    assert not lease.try_acquire(engine, "run-b", ttl_s=60)  # one holder of run-a is left
    lease.release(engine, "run-a")
    assert lease.current(engine) is None
    assert lease.try_acquire(engine, "run-b", ttl_s=60)
    lease.release(engine, "run-b")


def test_a_dead_holder_lease_expires_and_is_taken_over(engine) -> None:
    assert lease.try_acquire(engine, "killed-run", ttl_s=0.5)
    assert not lease.try_acquire(engine, "run-b", ttl_s=60)
    time.sleep(0.7)  # the holder stopped renewing
    assert lease.try_acquire(engine, "run-b", ttl_s=60)
    held = lease.current(engine)
    assert held.owner == "run-b" and held.holders == 1
    lease.release(engine, "killed-run")  # a late release of the old owner changes nothing
    assert lease.current(engine).owner == "run-b"


def test_waiting_gives_up_with_a_message_naming_the_holder(engine) -> None:
    assert lease.try_acquire(engine, "custsync-run-1", ttl_s=60)
    start = time.monotonic()
    with pytest.raises(lease.LeaseHeld, match=r"custsync-run-1.*try again") as err:
        lease.acquire(engine, "custsync-run-2", ttl_s=60, wait_s=0.5, poll_s=0.1)
    assert 0.4 < time.monotonic() - start < 5
    assert err.value.holder.owner == "custsync-run-1"


def test_the_holder_renews_while_it_works(engine) -> None:
    with lease.holding(engine, "run-a", ttl_s=0.6, wait_s=0):
        time.sleep(1.0)  # longer than the TTL: the heartbeat kept it
        assert not lease.try_acquire(engine, "run-b", ttl_s=60)
    assert lease.current(engine) is None  # released on exit


@pytest.mark.parametrize("expired_row", [False, True])
def test_a_race_of_owners_has_one_winner(engine, expired_row: bool) -> None:
    if expired_row:  # the race is over an expired row (an update), not a free one (an insert)
        assert lease.try_acquire(engine, "killed-run", ttl_s=0.1)
        time.sleep(0.3)
    won: list[str] = []
    barrier = threading.Barrier(6)

    def contend(owner: str) -> None:
        barrier.wait()
        if lease.try_acquire(engine, owner, ttl_s=60):
            won.append(owner)

    threads = [threading.Thread(target=contend, args=(f"run-{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and lease.current(engine).owner == won[0]
