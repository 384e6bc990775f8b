"""One writer at a time: the steps that write shared state (identity, golden records, the
outbox) hold the state-DB lease (``store.lease``) while they run.

``@holds_state_lease`` goes under the asset decorator. The owner is the run's
``custsync/lease_owner`` tag (``custsync run`` takes the lease for the whole command and
hands it to its runs) or else the run id, so parallel steps of one run share it and a
second run's step waits up to ``runs.lease_wait_s`` for it, then fails naming the holder.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TypeVar

import dagster as dg

# run tag naming the lease owner of a run; without it the owner is the run id
LEASE_OWNER_TAG = "custsync/lease_owner"

F = TypeVar("F", bound=Callable[..., Any])


def lease_owner(context: dg.AssetExecutionContext) -> str:
    return context.run.tags.get(LEASE_OWNER_TAG) or context.run_id


def _enter(context: dg.AssetExecutionContext) -> AbstractContextManager[None]:
    """Take the lease for this step (waiting for another run's), or fail the step."""
    from custsync_pipeline.config import current_config
    from custsync_pipeline.store import lease

    runs = current_config().runs
    owner = lease_owner(context)
    engine = context.resources.state_db.engine
    holder = lease.current(engine)
    if holder and holder.owner != owner and holder.expires_at > datetime.now(UTC):
        context.log.info(
            f"waiting up to {runs.lease_wait_s} s for the state lease held by {holder.owner}"
        )
    cm = lease.holding(engine, owner, runs.lease_ttl_s, runs.lease_wait_s)
    try:
        cm.__enter__()
    except lease.LeaseHeld as exc:
        raise dg.Failure(description=str(exc)) from None
    return cm


def holds_state_lease(fn: F) -> F:
    """Run the asset body while holding the state lease (its first argument is the context)."""

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any):  # noqa: ANN202
            cm = _enter(context)
            try:
                yield from fn(context, *args, **kwargs)
            finally:
                cm.__exit__(None, None, None)

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(context: dg.AssetExecutionContext, *args: Any, **kwargs: Any) -> Any:
        cm = _enter(context)
        try:
            return fn(context, *args, **kwargs)
        finally:
            cm.__exit__(None, None, None)

    return wrapper  # type: ignore[return-value]
