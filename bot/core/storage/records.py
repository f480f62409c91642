"""What the storage layer hands out: plain dataclasses, filled from rows by column name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_row(cls: type[T], row: Any, **overrides: Any) -> T:
    """Build `cls` from a row's columns by name; `x_json` text columns become the field `x`."""
    data = dict(row._mapping)
    for key in [k for k in data if k.endswith("_json")]:
        data[key[: -len("_json")]] = json.loads(data.pop(key))
    data.update(overrides)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class ModelRecord:
    guild_id: int
    handle: str
    display_name: str
    base_model: str
    method: str
    path: str
    avatar_url: str | None = None
    status: str = "ready"
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_by: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 1
    id: int | None = None

    @property
    def version_label(self) -> str:
        return f"v{self.version}"


@dataclass
class JobRecord:
    id: int
    guild_id: int
    handle: str
    display_name: str
    avatar_url: str | None
    base_model: str
    method: str
    epochs: int
    requested_by: int | None
    channel_id: int | None
    stats: dict[str, Any]
    state: str
    progress: dict[str, Any]
    error: str | None
    interrupted: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    source_user_id: int | None = None  # a member whose messages are the corpus
    worker: str | None = None  # the worker process training it (TRAINING_BACKEND=queue)
    cancel_requested: int = 0
    resume_step: int | None = None  # the checkpoint step its last take-over resumed from
    announced: int = 0
    resumes_told: int = 0
    continues: int | None = None  # an update: the persona version it continues from


def format_interval(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class Schedule:
    id: int
    guild_id: int
    handle: str
    channel_id: int
    interval_s: int
    jitter_s: int = 0
    prompt: str = ""
    next_run_at: float = 0.0
    paused: bool = False
    pause_reason: str | None = None
    created_by: int | None = None
    created_at: float = 0.0
    daily_times: list[str] | None = None
    timezone: str = "UTC"
    last_run_at: float | None = None
    pending_nonce: str | None = None
    pending_since: float | None = None
    failures: int = 0  # refused posts in a row

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        m = row._mapping
        return from_row(
            cls,
            row,
            paused=bool(m["paused"]),
            daily_times=m["daily_times"].split(",") if m["daily_times"] else None,
        )

    def describe(self) -> str:
        if self.daily_times:
            return f"daily at {', '.join(self.daily_times)} ({self.timezone})"
        jitter = f" ± {format_interval(self.jitter_s)}" if self.jitter_s else ""
        return f"every {format_interval(self.interval_s)}{jitter}"


@dataclass
class Post:
    """One message the bot generated, for "Who made this?"."""

    handle: str
    requested_by: int | None
    schedule_id: int | None
    created_at: float
    channel_id: int
    answered_message_id: int | None = None  # a chatter answer: the message it replied to


@dataclass
class ChatterSetting:
    """A persona that may chime in in a channel (/chatter set)."""

    guild_id: int
    channel_id: int
    handle: str
    rate: float
    cooldown_s: int
    allow_personas: bool = False
    updated_by: int | None = None
    updated_at: float = 0.0


@dataclass
class Erasure:
    """What erasing a member's voice removed."""

    personas: list[tuple[int, str]] = field(default_factory=list)
    schedules: int = 0
    jobs_cancelled: int = 0


@dataclass
class GameRound:
    """One /realorfake round: the post shown, whether it is real, and (once closed) the tally."""

    id: int
    guild_id: int
    channel_id: int
    handle: str
    is_real: bool
    post: str
    opened_at: float
    closes_at: float
    message_id: int | None = None
    opened_by: int | None = None
    closed_at: float | None = None
    real_votes: int = 0
    generated_votes: int = 0
