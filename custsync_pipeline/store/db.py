"""The state DB engine: one SQLAlchemy Core code path for SQLite (default) and PostgreSQL.

Tables live in the sibling modules and register on the shared ``metadata``;
``StateDB.create_all`` creates every one of them, and ``add_missing_columns`` and
``add_missing_indexes`` bring an older state DB up to date (new nullable columns and new
indexes are added in place).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()
SQLITE_CACHE_KIB = 64 * 1024


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - SQLAlchemy event signature
    # WAL lets readers run beside the one writer; the busy timeout waits out short
    # write locks instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # a page cache of up to 64 MiB per connection (the default is 2 MiB): a bulk insert of
    # millions of rows updates its indexes without re-reading pages from the OS
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.close()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy's default driver is psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Engine for a state-DB URL; creates the folder of a SQLite file."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class StateDBError(Exception):
    """A state DB that a command reading or reviewing state cannot use: no such file or
    database, no custsync state in it, unreachable, or an unparseable or unsupported URL.
    The message is one line and never holds the URL's password."""


STATE_TABLE = "source_records"  # made by every ``custsync run``: a state DB without it is none
SUPPORTED_URLS = "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE"


def shown_url(url: str) -> str:
    """``url`` for a message: its password hidden (``***``), also when it does not parse."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - unparseable: hide whatever may be a password
        scheme, sep, rest = url.partition("://")
        if not sep:  # no URL shape at all: only a plain path-like text is safe to repeat
            return (
                url if ":" not in url and "@" not in url else "(not shown: it may hold a password)"
            )
        userinfo, at, host = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return url
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def one_line_error(exc: BaseException, password: str | None) -> str:
    """The driver's own message (of a SQLAlchemy error: its DBAPI error's), on one line and
    without the password."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    return _one_line(exc, password)


def _one_line(exc: BaseException, password: str | None) -> str:
    """The driver's own message, on one line and without the password."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if password:
        text = text.replace(password, "***")
    return text.split(" (Background on this error at:")[0]


def _sqlite_tables(url: sa.engine.URL, shown: str, hint: str) -> set[str]:
    where = f"the state DB {shown}"
    path = url.database
    if not path or path == ":memory:" or url.query.get("mode") == "memory":
        raise StateDBError(
            f"{where} is an in-memory database, which holds no state: name the file "
            "`custsync run` writes (sqlite:///PATH)"
        )
    file = Path(path)
    if not file.is_file():
        what = "is not a file" if file.exists() else "does not exist"
        raise StateDBError(f"no state DB at {shown}: {file.absolute()} {what}; {hint}")
    try:  # read-only: a look must not create, convert or lock anything
        conn = sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StateDBError(f"cannot read {where} as SQLite ({exc}); {hint}") from None
    return {str(r[0]) for r in rows}


def _postgresql_tables(url: sa.engine.URL, where: str) -> set[str]:
    check = "check the URL and that the server is running and accepts it"
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 10})
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StateDBError(f"cannot use {where}: no driver ({exc})") from None
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    except sa.exc.DBAPIError as exc:
        reason = one_line_error(exc, url.password)
        raise StateDBError(f"cannot connect to {where}: {reason}; {check}") from None
    finally:
        engine.dispose()


def existing_engine(url: str, origin: str = "") -> Engine:
    """Engine for a state DB that exists and holds custsync state (``custsync run`` made
    it); else ``StateDBError``. Unlike ``make_engine`` it creates no file, folder or table.
    ``origin`` says where the URL came from (`` (from --db)``), for the message."""
    shown = shown_url(url) + origin
    hint = "run `custsync run` first to create it, or check the URL"
    try:
        parsed = sa.engine.make_url(normalize_url(url))
    except (sa.exc.ArgumentError, ValueError):
        raise StateDBError(
            f"cannot parse the state DB URL {shown}: expected {SUPPORTED_URLS}"
        ) from None
    backend = parsed.drivername.split("+", 1)[0]
    if backend == "sqlite":
        names = _sqlite_tables(parsed, shown, hint)
    elif backend == "postgresql":
        names = _postgresql_tables(parsed, f"the state DB {shown}")
    else:
        raise StateDBError(
            f"unsupported state DB URL {shown}: custsync keeps its state in SQLite or "
            f"PostgreSQL ({SUPPORTED_URLS})"
        )
    if STATE_TABLE not in names:
        raise StateDBError(
            f"the state DB {shown} holds no custsync state (no {STATE_TABLE} table); {hint}"
        )
    return make_engine(url)


def _drop_retired(engine: Engine) -> None:
    """Drop the tables an older release made that this one replaced (their data lives in
    the new ones after the next merge, which the code change forces)."""
    from custsync_pipeline.store.golden import RETIRED_TABLES

    names = set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        for name in RETIRED_TABLES:
            if name in names:  # IF EXISTS: two processes starting together both drop it
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))


_up_to_date: set[tuple[str, str, str]] = set()  # (url, table, "columns" or "indexes")


def _bring_up(
    engine: Engine,
    tables: Iterable[sa.Table],
    part: str,
    names_of: Callable[[str], set[str]],
    wanted: Callable[[sa.Table], Iterable[tuple[str, Callable[[], None]]]],
) -> list[str]:
    """Make each ``wanted`` (name, create) part of each table that ``names_of`` the table
    lacks, once per engine URL, table and ``part``; returns ``table.name`` of those made.
    Two processes racing to make the same one is harmless (the loser finds it there)."""
    url = engine.url.render_as_string(hide_password=True)
    made: list[str] = []
    for table in tables:
        if (url, table.name, part) in _up_to_date:
            continue
        have = names_of(table.name)
        for name, create in wanted(table):
            if name in have:
                continue
            try:
                create()
                made.append(f"{table.name}.{name}")
            except sa.exc.DBAPIError:
                if name not in names_of(table.name):
                    raise
        _up_to_date.add((url, table.name, part))
    return made


def add_missing_columns(engine: Engine, tables: Iterable[sa.Table]) -> list[str]:
    """Add the model's nullable columns an existing table lacks (a state DB made by an
    older release). Returns ``table.column`` added.

    Only additive, nullable changes are made here: anything else needs a real migration.
    """

    def add(table: sa.Table, col: sa.Column) -> None:
        ddl = col.type.compile(dialect=engine.dialect)
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {ddl}'))

    return _bring_up(
        engine,
        tables,
        "columns",
        lambda name: {c["name"] for c in sa.inspect(engine).get_columns(name)},
        lambda table: [
            (col.name, functools.partial(add, table, col)) for col in table.columns if col.nullable
        ],
    )


def add_missing_indexes(engine: Engine, tables: Iterable[sa.Table]) -> list[str]:
    """Create the model's indexes an existing table lacks (a state DB made by an older
    release). Returns ``table.index`` made."""
    return _bring_up(
        engine,
        tables,
        "indexes",
        lambda name: {i["name"] for i in sa.inspect(engine).get_indexes(name)},
        lambda table: [
            (str(index.name), functools.partial(index.create, engine))
            for index in sorted(table.indexes, key=lambda i: i.name or "")
        ],
    )


class StateDB:
    """The state DB of one sync: engine plus every table, created on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def create_all(self) -> StateDB:
        # importing the table modules registers them on ``metadata``
        from custsync_pipeline.store import tables  # noqa: F401

        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                break
            except sa.exc.DBAPIError as exc:
                # two processes starting together both saw a table missing and both
                # created it: the loser's CREATE fails; the table is there, look again
                if "already exists" not in str(exc).lower() or attempt == 2:
                    raise
        add_missing_columns(self.engine, metadata.sorted_tables)
        add_missing_indexes(self.engine, metadata.sorted_tables)
        _drop_retired(self.engine)
        return self

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name
