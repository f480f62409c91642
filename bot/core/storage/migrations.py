"""Schema versions, in one place.

A new database gets the current schema from `schema.metadata` in one go and is stamped with
SCHEMA_VERSION. An older one is brought forward by the UPGRADES after its version, each in its
own transaction. The version lives in `PRAGMA user_version` on SQLite (where the first releases
kept it) and in a one-row `schema_version` table elsewhere.

To change the schema: edit the table in schema.py, bump SCHEMA_VERSION and add the step that
takes an existing database there (`add_column` covers the usual case).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Column, Connection, Table, inspect, text

from bot.core.storage import schema

SCHEMA_VERSION = 10

# Steps from the SQLite-only releases (1.x): only old SQLite files ever need them.
_V2 = """
ALTER TABLE schedules ADD COLUMN daily_times TEXT;
ALTER TABLE schedules ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE schedules ADD COLUMN last_run_at REAL;
ALTER TABLE schedules ADD COLUMN pending_nonce TEXT;
ALTER TABLE schedules ADD COLUMN pending_since REAL
"""
_V3 = "ALTER TABLE training_jobs ADD COLUMN source_user_id INTEGER"


def _run_script(script: str, tables: list[Table]) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        for statement in filter(None, (s.strip() for s in script.split(";"))):
            conn.exec_driver_sql(statement)
        schema.metadata.create_all(conn, tables=tables)  # the step's new tables, as declared now

    return step


def add_column(conn: Connection, table: Table, column: Column) -> None:
    """ALTER TABLE ... ADD COLUMN for the column as declared in schema.py, in the dialect's words."""
    column_type = column.type.compile(dialect=conn.dialect)
    default = f" DEFAULT {column.server_default.arg}" if column.server_default is not None else ""
    null = "" if column.nullable else " NOT NULL"
    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column_type}{default}{null}")


def _v5(conn: Connection) -> None:
    """Trainings on workers: job ownership and announcement columns, and the blobs table."""
    for name in ("worker", "cancel_requested", "resume_step", "announced", "resumes_told"):
        add_column(conn, schema.training_jobs, schema.training_jobs.c[name])
    schema.metadata.create_all(conn, tables=[schema.blobs])
    conn.exec_driver_sql("UPDATE training_jobs SET announced = 1 WHERE state NOT IN ('queued', 'running')")


def _claimed_schedules(conn: Connection) -> None:
    """Several bot processes: a due post is claimed by one of them, for a lease."""
    for name in ("claimed_by", "claimed_until"):
        add_column(conn, schema.schedules, schema.schedules.c[name])


def _chatter(conn: Connection) -> None:
    """/chatter: its settings and answer claims, and what a generated post answered."""
    schema.metadata.create_all(conn, tables=[schema.chatter_settings, schema.chatter_answers])
    # Upgrade 2 creates generated_posts as declared now: a database that old already has the column.
    if "answered_message_id" not in {c["name"] for c in inspect(conn).get_columns("generated_posts")}:
        add_column(conn, schema.generated_posts, schema.generated_posts.c.answered_message_id)


# The bot no longer reads members' messages to train (Discord's Developer Policy forbids training
# on message content obtained through the API): the text it collected, where collection stopped,
# the consent to it and the channels kept out of it are erased. Personas already trained stay
# (model_sources still finds them for /voice optout and /voice delete).
COLLECTED_HISTORY_TABLES = (
    "collected_messages",
    "history_cursors",
    "voice_consent",
    "guild_excluded_channels",
)


def _no_collected_history(conn: Connection) -> None:
    for table in COLLECTED_HISTORY_TABLES:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def _versions(conn: Connection) -> None:
    """Personas that grow: a persona's version, its earlier versions, and what an update continues."""
    for table, column in ((schema.models, "version"), (schema.training_jobs, "continues")):
        if column not in {c["name"] for c in inspect(conn).get_columns(table.name)}:
            add_column(conn, table, table.c[column])
    schema.metadata.create_all(conn, tables=[schema.model_versions])


UPGRADES: dict[int, Callable[[Connection], None]] = {
    2: _run_script(_V2, [schema.channel_webhooks, schema.guild_options, schema.generated_posts]),
    # 3 also made the history-collection tables that 8 drops; they are no longer declared.
    3: _run_script(_V3, [schema.model_sources]),
    # 4: a schedule's refused posts in a row (MAX_SCHEDULE_FAILURES in core/limits.py pause it).
    4: lambda conn: add_column(conn, schema.schedules, schema.schedules.c.failures),
    5: _v5,
    6: _claimed_schedules,
    7: _chatter,
    8: _no_collected_history,
    # 9: /realorfake's rounds and votes.
    9: lambda conn: schema.metadata.create_all(conn, tables=[schema.game_rounds, schema.game_votes]),
    10: _versions,
}


def read_version(conn: Connection) -> int:
    if conn.dialect.name == "sqlite":
        return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    return int(conn.execute(text("SELECT coalesce(max(version), 0) FROM schema_version")).scalar_one())


def write_version(conn: Connection, version: int) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
        return
    conn.execute(text("DELETE FROM schema_version"))
    conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})


def lock_for_migration(conn: Connection) -> None:
    """Two processes starting together on one PostgreSQL must not both create the tables."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7217051)")


def migrate_step(conn: Connection) -> int | None:
    """Apply the next pending step in this transaction; return the version reached, None when current."""
    lock_for_migration(conn)
    current = read_version(conn)
    if current >= SCHEMA_VERSION:
        return None
    if current == 0:
        schema.metadata.create_all(conn)
        write_version(conn, SCHEMA_VERSION)
        return SCHEMA_VERSION
    UPGRADES[current + 1](conn)
    write_version(conn, current + 1)
    return current + 1
