"""The engine: one SQLAlchemy Core async engine, SQLite by default, PostgreSQL by URL.

Everything a dialect does differently is decided here or beside the query that needs it
(upserts, row locks for job claims); nothing above the storage package sees SQL.

SQLite keeps the crash guarantees of the first releases: WAL journal with synchronous=NORMAL
(durable across process kills), foreign keys on, a busy timeout for the CLI running beside the
bot, and real transactions: we issue BEGIN ourselves (BEGIN IMMEDIATE for writes, so a write
transaction never fails half-way on a lock upgrade) instead of the driver's implicit ones.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from bot.core.storage import migrations

log = logging.getLogger(__name__)

_WRITE = "tweetalike_write"  # execution option: this transaction writes


def database_url(url: str | None, sqlite_path: str | Path) -> str:
    """DATABASE_URL when given (postgresql://... uses psycopg), else the SQLite file DATABASE_PATH."""
    if url:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed.render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{sqlite_path}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver's implicit transactions off: see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


class Database:
    """The engine and its transactions. Open with `await Database.open(url)`."""

    def __init__(self, engine: AsyncEngine, url: str):
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(**{_WRITE: True})

    @classmethod
    async def open(cls, url: str) -> Database:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = cls._sqlite_engine(parsed.database or ":memory:", url)
        else:
            engine = create_async_engine(url, pool_pre_ping=True)  # a restarted server: reconnect
        database = cls(engine, url)
        await database.migrate()
        return database

    @staticmethod
    def _sqlite_engine(path: str, url: str) -> AsyncEngine:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url)
        else:
            engine = create_async_engine(url, poolclass=StaticPool)  # one connection holds the database
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self._writer.begin() as conn:
            yield conn

    def insert(self, table):
        """INSERT with the dialect's ON CONFLICT clauses (both spell them the same way)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def migrate(self) -> None:
        while True:
            async with self.write() as conn:
                reached = await conn.run_sync(migrations.migrate_step)
            if reached is None:
                return
            log.info("Database schema is now at version %s", reached)

    async def schema_version(self) -> int:
        async with self.read() as conn:
            return await conn.run_sync(migrations.read_version)

    async def integrity_check(self) -> str:
        """SQLite's own check of the file; 'ok' elsewhere (the server guards its pages)."""
        if self.dialect != "sqlite":
            return "ok"
        async with self.read() as conn:
            return str((await conn.exec_driver_sql("PRAGMA integrity_check")).scalar_one())

    async def journal_mode(self) -> str:
        if self.dialect != "sqlite":
            return "server"
        async with self.read() as conn:
            return str((await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one())

    async def scalar(self, statement) -> object:
        async with self.read() as conn:
            return (await conn.execute(statement)).scalar()


__all__ = ["Database", "database_url", "text"]
