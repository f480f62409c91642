"""The registry's tables, declared once for every dialect (SQLite by default, PostgreSQL to scale out).

Types are chosen to mean the same on both: Discord ids are 64-bit (BigInteger), times are
seconds since the epoch as doubles, flags are 0/1 integers (as the first SQLite schema stored
them), and JSON documents are text. Row ids are `INTEGER PRIMARY KEY` on SQLite (the rowid)
and a BIGSERIAL-style identity on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

RowId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: the rowid alias, autoincremented
Snowflake = BigInteger  # Discord ids
Time = Double  # seconds since the epoch


def _flag(name: str, default: int = 0) -> Column:
    return Column(name, Integer, nullable=False, server_default=str(default))


models = Table(
    "models",
    metadata,
    Column("id", RowId, primary_key=True),
    Column("guild_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("avatar_url", Text),
    Column("base_model", Text, nullable=False),
    Column("method", Text, nullable=False),  # lora | full | imported
    Column("path", Text, nullable=False),  # model folder relative to MODELS_DIR
    Column("status", Text, nullable=False, server_default="ready"),
    Column("stats_json", Text, nullable=False, server_default="{}"),
    Column("metrics_json", Text, nullable=False, server_default="{}"),
    Column("created_by", Snowflake),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    # v1, v2, ...: each training of the handle (new or an update) publishes the next version.
    Column("version", Integer, nullable=False, server_default="1"),
    UniqueConstraint("guild_id", "handle"),
)

# The earlier versions of a persona kept for /models rollback (PERSONA_VERSIONS_KEPT of them): the
# registry row each had when it was current, its folder still in the model store.
model_versions = Table(
    "model_versions",
    metadata,
    Column("guild_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("record_json", Text, nullable=False),
    Column("created_at", Time, nullable=False),
    PrimaryKeyConstraint("guild_id", "handle", "version"),
)

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")

training_jobs = Table(
    "training_jobs",
    metadata,
    Column("id", RowId, primary_key=True),
    Column("guild_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("avatar_url", Text),
    Column("base_model", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("epochs", Integer, nullable=False),
    Column("requested_by", Snowflake),
    Column("channel_id", Snowflake),
    Column("corpus_json", Text, nullable=False),
    Column("stats_json", Text, nullable=False, server_default="{}"),
    Column("state", Text, nullable=False, server_default="queued"),
    Column("progress_json", Text, nullable=False, server_default="{}"),
    Column("error", Text),
    Column("interrupted", Integer, nullable=False, server_default="0"),  # times a restart found it running
    Column("created_at", Time, nullable=False),
    Column("started_at", Time),
    Column("finished_at", Time),
    Column("source_user_id", Snowflake),  # a member whose messages are the corpus
    # Trainings on workers (TRAINING_BACKEND=queue): who trains the job now, a cancel asked for by
    # the bot, the checkpoint step a take-over resumed from, and what the bot already told Discord.
    Column("worker", Text),
    _flag("cancel_requested"),
    Column("resume_step", Integer),
    _flag("announced"),
    Column("resumes_told", Integer, nullable=False, server_default="0"),
    # An update (/train update): the version of the persona it continues from; None: from the base.
    Column("continues", Integer),
    CheckConstraint(
        "state IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="training_jobs_state_check"
    ),
    Index("training_jobs_state", "state", "id"),
    Index("training_jobs_guild", "guild_id", "handle"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", RowId, primary_key=True),
    Column("guild_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("channel_id", Snowflake, nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("jitter_s", Integer, nullable=False, server_default="0"),
    Column("prompt", Text, nullable=False, server_default=""),
    Column("next_run_at", Time, nullable=False),
    _flag("paused"),
    Column("pause_reason", Text),
    Column("created_by", Snowflake),
    Column("created_at", Time, nullable=False),
    Column("daily_times", Text),  # "09:00,18:30", or NULL for every interval_s
    Column("timezone", Text, nullable=False, server_default="UTC"),
    Column("last_run_at", Time),
    Column("pending_nonce", Text),  # set before a post, cleared after it
    Column("pending_since", Time),
    Column("failures", Integer, nullable=False, server_default="0"),  # refused posts in a row
    # A process that takes a due post claims it first (several bot processes share one database):
    # who, and until when; a claim whose holder died frees itself when the time passes.
    Column("claimed_by", Text),
    Column("claimed_until", Time),
    Index("schedules_due", "paused", "next_run_at"),
)

channel_webhooks = Table(
    "channel_webhooks",
    metadata,
    Column("channel_id", Snowflake, primary_key=True, autoincrement=False),
    Column("guild_id", Snowflake, nullable=False),
    Column("webhook_id", Snowflake, nullable=False),
    Column("webhook_token", Text, nullable=False),
)

guild_options = Table(
    "guild_options",
    metadata,
    Column("guild_id", Snowflake, primary_key=True, autoincrement=False),
    _flag("persona_webhooks"),
)

generated_posts = Table(
    "generated_posts",
    metadata,
    Column("message_id", Snowflake, primary_key=True, autoincrement=False),
    Column("guild_id", Snowflake, nullable=False),
    Column("channel_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("requested_by", Snowflake),
    Column("schedule_id", BigInteger),
    Column("created_at", Time, nullable=False),
    Column("answered_message_id", Snowflake),  # the member's message a chatter answer replied to
    Index("generated_posts_guild", "guild_id", "created_at"),
)

# /chatter: personas that answer in a channel on their own (a chance per message, a gap between answers).
chatter_settings = Table(
    "chatter_settings",
    metadata,
    Column("guild_id", Snowflake, nullable=False),
    Column("channel_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("rate", Double, nullable=False),  # chance to answer each message, 0..1
    Column("cooldown_s", Integer, nullable=False),  # least time between two chime-ins in the channel
    _flag("allow_personas"),  # may answer other personas' posts (under the hourly cap)
    Column("updated_by", Snowflake),
    Column("updated_at", Time, nullable=False),
    PrimaryKeyConstraint("channel_id", "handle"),
    Index("chatter_settings_guild", "guild_id"),
)

# One row per message a persona answered (ids only, never the text): the primary key is the claim
# that makes several shards or processes answer a message once; the times give the channel's gap
# and the hourly cap on persona-to-persona answers. Rows older than a day are pruned.
chatter_answers = Table(
    "chatter_answers",
    metadata,
    Column("message_id", Snowflake, primary_key=True, autoincrement=False),
    Column("guild_id", Snowflake, nullable=False),
    Column("channel_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("kind", Text, nullable=False),  # reply | mention | chime
    _flag("to_persona"),
    Column("created_at", Time, nullable=False),
    Index("chatter_answers_channel", "channel_id", "kind", "created_at"),
    Index("chatter_answers_guild", "guild_id", "created_at"),
)

# Whose data went into a persona (a member's own data package; older personas: their collected
# history, a collection the bot no longer does), so /voice optout and /voice delete find them.
model_sources = Table(
    "model_sources",
    metadata,
    Column("guild_id", Snowflake, nullable=False),
    Column("handle", Text, nullable=False),
    Column("user_id", Snowflake, nullable=False),
    PrimaryKeyConstraint("guild_id", "handle", "user_id"),
    Index("model_sources_user", "user_id"),
)

# Files kept in the database so bot and workers share no disk: a LoRA persona's folder as one
# archive (`model/<guild>/<handle>`) and a running training's checkpoint (`checkpoint/job-<id>`).
blobs = Table(
    "blobs",
    metadata,
    Column("key", Text, primary_key=True),
    Column("guild_id", Snowflake),
    Column("digest", Text, nullable=False),  # sha256 of data: a reader knows when its copy is stale
    Column("data", LargeBinary, nullable=False),
    Column("updated_at", Time, nullable=False),
)

# /realorfake: a round shows one post, a persona's real held-out post or a generated one, and
# members vote once each. The post text is the admin's upload (or the persona's); rounds go with
# their persona. Fool rates and members' accuracy are counted from the votes.
game_rounds = Table(
    "game_rounds",
    metadata,
    Column("id", RowId, primary_key=True),
    Column("guild_id", Snowflake, nullable=False),
    Column("channel_id", Snowflake, nullable=False),
    Column("message_id", Snowflake),  # the round's message, once sent
    Column("handle", Text, nullable=False),
    _flag("is_real"),
    Column("post", Text, nullable=False),
    Column("opened_by", Snowflake),
    Column("opened_at", Time, nullable=False),
    Column("closes_at", Time, nullable=False),
    Column("closed_at", Time),
    Index("game_rounds_guild", "guild_id", "handle"),
    Index("game_rounds_open", "closed_at", "closes_at"),
    Index("game_rounds_channel", "channel_id", "opened_at"),
)

game_votes = Table(
    "game_votes",
    metadata,
    Column("round_id", RowId, nullable=False),
    Column("guild_id", Snowflake, nullable=False),
    Column("user_id", Snowflake, nullable=False),
    _flag("says_real"),
    Column("voted_at", Time, nullable=False),
    PrimaryKeyConstraint("round_id", "user_id"),  # one vote per member per round
    Index("game_votes_user", "guild_id", "user_id"),
)
