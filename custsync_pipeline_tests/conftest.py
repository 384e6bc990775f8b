"""Shared fixtures: a real PostgreSQL database per test, and the session's PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from custsync_pipeline_tests import pg

# The longest test files (a minute or more on this 2-core machine), longest first. With
# --no-loadscope-reorder (scripts/test.sh) xdist hands out files in collection order, so
# these start first and the workers finish together instead of one running the soak alone
# at the end.
LONGEST_FIRST = (
    "test_soak.py",
    "test_echo.py",
    "test_multiprocess_pg.py",
    "test_ui_browser.py",
    "test_merge_scope_holes.py",
    "test_end_to_end.py",
    "test_validate_properties.py",
    "test_delete_lifecycle.py",
    "test_validate_sandbox.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first (a stable sort: the rest keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server URL (the configured one, or a throwaway cluster)."""
    with pg.admin_url() as url:
        yield url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    url = pg.create_database(pg_admin_url)
    try:
        yield url
    finally:
        pg.drop_database(pg_admin_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path):
    """A fresh state DB with every table, once on a SQLite file and once on PostgreSQL."""
    from custsync_pipeline.store.db import StateDB

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    db = StateDB(url).create_all()
    yield db.engine
    db.engine.dispose()


@pytest.fixture
def dagster_env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """The sandbox's credentials, no state-DB override and a fresh ``DAGSTER_HOME``:
    the environment of a whole-graph run (returns the monkeypatch to set more)."""
    from custsync_pipeline_tests.e2e import SANDBOX_SECRETS

    for k, v in SANDBOX_SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CUSTSYNC_STATE_DB_URL", raising=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return monkeypatch
