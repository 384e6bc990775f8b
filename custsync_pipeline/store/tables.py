"""Imports every table module so ``metadata`` knows all state-DB tables."""

from custsync_pipeline.store import (
    conflicts,  # noqa: F401
    core,  # noqa: F401
    golden,  # noqa: F401
    identity,  # noqa: F401
    lease,  # noqa: F401
    merge_scope,  # noqa: F401
    presence,  # noqa: F401
    quarantine,  # noqa: F401
    transactions,  # noqa: F401
)
