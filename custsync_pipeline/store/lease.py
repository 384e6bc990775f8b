"""The state lease: only one sync writes the state DB at a time.

One row per lease name in ``state_leases``: the owner (a run id, or the lease owner a
``custsync run`` hands its runs), how many holders of that owner have it (steps of one run
run in parallel), and when it expires. Acquiring is one atomic statement that SQLite and
PostgreSQL both honour: an ``INSERT`` of the free row, else an ``UPDATE … WHERE`` the row
is ours or has expired (the primary key stops two inserts, the row lock or SQLite's single
writer stops two takeovers). A holder renews the expiry while it works (a heartbeat
thread); a holder that dies stops renewing, so its lease frees itself after the TTL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from custsync_pipeline.store.db import metadata

STATE_LEASE = "state"  # the lease of every step that writes identity, golden or outbox state

state_leases = sa.Table(
    "state_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("holders", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


class LeaseHeld(RuntimeError):
    """Another owner holds the lease; the message says who, since when, until when."""

    def __init__(self, name: str, holder: Lease | None, waited_s: float) -> None:
        self.holder = holder
        who = (
            f"owner {holder.owner} since {holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"expires {holder.expires_at:%H:%M:%S} UTC unless renewed"
            if holder
            else "another owner"
        )
        super().__init__(
            f"another sync holds the state lease {name!r} ({who}); waited {waited_s:.0f} s. "
            "Only one sync writes the state DB at a time: try again when it has finished."
        )


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    holders: int
    acquired_at: datetime
    expires_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def current(engine: Engine, name: str = STATE_LEASE) -> Lease | None:
    """The lease row as stored (expired or not), or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(state_leases).where(state_leases.c.name == name)).first()
    if row is None:
        return None
    return Lease(row.name, row.owner, row.holders, _aware(row.acquired_at), _aware(row.expires_at))


def try_acquire(engine: Engine, owner: str, ttl_s: float, name: str = STATE_LEASE) -> bool:
    """One attempt: take the lease (free, expired, or already ``owner``'s: then one more
    holder). True when ``owner`` holds it afterwards."""
    now = _now()
    expires = now + timedelta(seconds=ttl_s)
    with engine.begin() as conn:
        # ours already, or expired (its holder died): one statement, so two runs cannot
        # both take over the same expired row
        taken = conn.execute(
            state_leases.update()
            .where(state_leases.c.name == name)
            .where((state_leases.c.owner == owner) | (state_leases.c.expires_at < now))
            .values(
                holders=sa.case(
                    (state_leases.c.owner == owner, state_leases.c.holders + 1), else_=1
                ),
                acquired_at=sa.case(
                    (state_leases.c.owner == owner, state_leases.c.acquired_at), else_=now
                ),
                owner=owner,
                expires_at=expires,
            )
        ).rowcount
    if taken:
        return True
    try:
        with engine.begin() as conn:
            conn.execute(
                state_leases.insert().values(
                    name=name, owner=owner, holders=1, acquired_at=now, expires_at=expires
                )
            )
        return True
    except sa.exc.IntegrityError:  # someone else's row: held (or just taken)
        return False


def renew(engine: Engine, owner: str, ttl_s: float, name: str = STATE_LEASE) -> bool:
    """Push the expiry out; False when ``owner`` no longer holds the lease."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                state_leases.update()
                .where(state_leases.c.name == name, state_leases.c.owner == owner)
                .values(expires_at=_now() + timedelta(seconds=ttl_s))
            ).rowcount
        )


def release(engine: Engine, owner: str, name: str = STATE_LEASE) -> None:
    """One holder of ``owner`` lets go; the row goes when the last one does."""
    mine = (state_leases.c.name == name) & (state_leases.c.owner == owner)
    with engine.begin() as conn:
        conn.execute(state_leases.update().where(mine).values(holders=state_leases.c.holders - 1))
        conn.execute(state_leases.delete().where(mine, state_leases.c.holders <= 0))


def acquire(
    engine: Engine,
    owner: str,
    ttl_s: float,
    wait_s: float,
    name: str = STATE_LEASE,
    poll_s: float = 1.0,
) -> None:
    """Take the lease, waiting up to ``wait_s`` for its holder; else :class:`LeaseHeld`."""
    start = time.monotonic()
    while not try_acquire(engine, owner, ttl_s, name):
        waited = time.monotonic() - start
        if waited >= wait_s:
            raise LeaseHeld(name, current(engine, name), waited)
        time.sleep(min(poll_s, max(0.05, wait_s - waited)))


@contextmanager
def holding(
    engine: Engine,
    owner: str,
    ttl_s: float,
    wait_s: float,
    name: str = STATE_LEASE,
) -> Iterator[None]:
    """Hold the lease for the block, renewing it every third of the TTL meanwhile."""
    acquire(engine, owner, ttl_s, wait_s, name)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(ttl_s / 3):
            renew(engine, owner, ttl_s, name)

    beat = threading.Thread(target=heartbeat, name=f"lease-{name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        release(engine, owner, name)
