"""The PostgreSQL fixture itself: a real server, and the throwaway fallback works."""

import sqlalchemy as sa

from custsync_pipeline.store.db import StateDB
from custsync_pipeline_tests import pg


def test_pg_url_is_a_real_empty_database(pg_url: str) -> None:
    db = StateDB(pg_url).create_all()
    assert db.dialect == "postgresql"
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from source_records")).scalar() == 0
    db.engine.dispose()


def test_throwaway_cluster_starts_from_binaries() -> None:
    with pg.throwaway_cluster() as url:
        deadline_ok = False
        for _ in range(100):
            if pg.server_answers(url):
                deadline_ok = True
                break
            import time

            time.sleep(0.2)
        assert deadline_ok, "throwaway cluster never answered"
        assert url != pg.DEFAULT_PG_URL
