"""A real PostgreSQL for tests: the server at ``$CUSTSYNC_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``) or, when none answers, a throwaway
cluster started from the PostgreSQL binaries. Never a silent skip: with neither, it fails.

Each test gets its own fresh database, so parallel runs never collide.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _sa_url(url: str) -> str:
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def server_answers(url: str) -> bool:
    try:
        engine = sa.create_engine(_sa_url(url), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(
            f"no PostgreSQL server answers at $CUSTSYNC_TEST_PG_URL and no '{name}' binary was found "
            "to start a throwaway one: install PostgreSQL or point CUSTSYNC_TEST_PG_URL at a server"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start on a free port; yields its URL; removes it afterwards."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="custsync-pg-"))
    data, port = root / "data", _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *prefix,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def admin_url() -> Iterator[str]:
    url = os.environ.get("CUSTSYNC_TEST_PG_URL", DEFAULT_PG_URL)
    if server_answers(url):
        yield url
        return
    with throwaway_cluster() as fallback:
        deadline = time.monotonic() + 20
        while not server_answers(fallback):
            if time.monotonic() > deadline:
                raise RuntimeError("the throwaway PostgreSQL cluster did not come up")
            time.sleep(0.2)
        yield fallback


def create_database(admin: str) -> str:
    """A fresh database on the server of ``admin``; returns its plain postgresql:// URL."""
    name = f"custsync_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(_sa_url(admin), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin.rsplit("/", 1)[0] + "/" + name


def drop_database(admin: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(_sa_url(admin), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
