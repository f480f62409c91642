"""Settings, read from the environment and a `.env` file, validated once at start-up.

Each setting is declared once, below, as a field of `Settings`: its type, default, bounds and
help text. pydantic-settings reads it from the environment (variable = field name in capitals)
and `.env`; the README's settings table and `.env.example` are rendered from the same fields,
and a test fails when either drifts.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def setting(default: Any, help: str, **bounds: Any) -> Any:
    """One setting: its default, its help text (README and .env.example) and its bounds."""
    return Field(default, description=help, **bounds)


# Set while Settings are built from an explicit mapping (tests, benches): then that mapping is the
# whole environment, and neither os.environ nor .env is read.
_ONLY_GIVEN_VALUES: ContextVar[bool] = ContextVar("only_given_values", default=False)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_file_encoding="utf-8")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        if _ONLY_GIVEN_VALUES.get():
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    discord_token: str = setting(
        "",
        "Bot token from the Discord developer portal (required to run the bot, not the CLI).",
    )
    dev_guild_id: int | None = setting(
        None,
        "If set, slash commands are synced to this guild instantly instead of globally.",
    )
    message_content_intent: bool = setting(
        False,
        "Request the privileged Message Content intent (enable it in the developer portal too). Training "
        "never needs it: the bot does not train on messages it reads.",
    )
    database_path: str = setting("data/bot.db", "SQLite registry of models, jobs and schedules.")
    database_url: str = setting(
        "",
        "postgresql://user:password@host/db to keep the registry in PostgreSQL instead of the SQLite "
        "file (needs requirements-scale.txt).",
    )
    models_dir: str = setting(
        "models",
        "Where fine-tuned models are stored, one folder per guild and handle.",
    )
    base_model: str = setting(
        "gpt2", "Model to fine-tune: a Hugging Face hub id, a local model folder or a .gguf file."
    )
    train_method: Literal["lora", "full"] = setting(
        "lora",
        "lora (small adapters, default) or full fine-tuning.",
    )
    train_epochs: int | None = setting(
        None,
        "Passes over the shuffled tweets (default 2 for LoRA on 1,000 posts or more, else 4, as "
        "huggingtweets used; see docs/quality.md).",
        ge=1,
        le=50,
    )
    train_patience: int = setting(
        1,
        "Stop when this many epochs in a row do not fit the held-out posts better (0 = always run "
        "TRAIN_EPOCHS); the best epoch is kept either way.",
        ge=0,
        le=50,
    )
    train_batch_size: int = setting(8, "Blocks per optimisation step.", ge=1, le=256)
    train_block_size: int = setting(
        128,
        "Tokens per training block; short tweets are packed together.",
        ge=16,
        le=1024,
    )
    train_learning_rate: float | None = setting(
        None,
        "Peak learning rate (default 2e-3 for LoRA adapters, 2e-4 for full; see docs/quality.md).",
        gt=0,
    )
    train_max_steps: int = setting(
        0,
        "Stop after this many steps (0 = no limit); useful on slow machines.",
        ge=0,
    )
    train_seed: int = setting(42, "Random seed for shuffling, the validation split and initialisation.", ge=0)
    train_checkpoint_seconds: float = setting(
        300,
        "Least time between two resumable checkpoints of a training (0 = none): a restart resumes from "
        "the last one. A full fine-tune's checkpoint is about 3x the model's size, a LoRA one a few MB.",
        ge=0,
        le=86400,
    )
    lora_rank: int = setting(16, "LoRA adapter rank (16: ~4.7 MB of a GPT-2 persona).", ge=1, le=256)
    lora_token_rows: int = setting(
        1000,
        "LoRA also trains the embedding (and tied output) rows of this many of the person's most "
        "frequent tokens (0 = off; 1000: ~1.5 MB more per GPT-2 persona, ~6.3 MB in all; "
        "see docs/quality.md).",
        ge=0,
        le=50000,
    )
    train_token_rows_learning_rate: float | None = setting(
        None,
        "Learning rate of the LoRA token rows, their own optimizer group without weight decay "
        "(default 4e-4; see docs/quality.md).",
        gt=0,
    )
    training_workers: int = setting(
        1,
        "Trainings run at the same time; others wait in the queue.",
        ge=1,
        le=8,
    )
    training_backend: Literal["auto", "local", "queue"] = setting(
        "auto",
        "Where trainings run: local (this process's thread pool), queue (procrastinate jobs for "
        "`python -m bot.worker` processes, needs DATABASE_URL=postgresql://...), auto (queue on PostgreSQL, "
        "else local).",
    )
    worker_heartbeat_seconds: float = setting(
        10,
        "Training workers: seconds between heartbeats; a worker silent for 3 heartbeats is presumed dead "
        "and its training resumes on another worker from its last checkpoint.",
        ge=0.2,
        le=600,
    )
    queue_poll_seconds: float = setting(
        2,
        "With trainings on workers: how often the bot reads their progress and results.",
        ge=0.1,
        le=600,
    )
    torch_threads: int = setting(0, "CPU threads for torch (0 = torch's default).", ge=0, le=256)
    generation_top_p: float = setting(0.95, "Nucleus sampling (huggingtweets default 0.95).", ge=0.01, le=1.0)
    generation_temperature: float = setting(1.0, "Sampling temperature.", ge=0.05, le=5.0)
    generation_max_new_tokens: int = setting(
        160,
        "Longest generated tweet, in tokens (1-512: prompt plus new tokens must fit the model's "
        "positions, 1024 for GPT-2; a smaller model gets fewer).",
        ge=1,
        le=512,
    )
    generation_min_new_tokens: int = setting(10, "Shortest generated tweet, in tokens.", ge=0, le=1024)
    generation_int8: bool = setting(
        True,
        "Decode GPT-2 and Llama-family bases (Llama, SmolLM2, Qwen2) with int8 weights on CPUs with "
        "fast int8 kernels (AVX-512 VNNI, AMX); false keeps bf16/fp32 (docs/performance.md).",
    )
    voice_report_posts: int = setting(
        200,
        "Posts a persona writes after its training for the voice report (does it sound like the "
        "person?); 0 = no report.",
        ge=0,
        le=2000,
    )
    persona_versions_kept: int = setting(
        2,
        "Earlier versions of each persona kept for /models rollback (a training or update makes the "
        "next version); older ones are deleted with their files. 0 = keep none.",
        ge=0,
        le=20,
    )
    realorfake_round_seconds: int = setting(
        120, "How long a /realorfake round takes votes before the answer is shown.", ge=10, le=86400
    )
    realorfake_votes_to_close: int = setting(
        10, "Votes that end a /realorfake round early (one per member).", ge=1, le=1000
    )
    realorfake_channel_gap_seconds: int = setting(
        30,
        "Least time between two /realorfake rounds in one channel (one open round at a time).",
        ge=0,
        le=86400,
    )
    model_cache_size: int = setting(
        16,
        "Personas kept loaded (LRU). LoRA personas share one base model, so each costs a few MB.",
        ge=1,
        le=1000,
    )
    max_attachment_mb: int = setting(25, "Largest upload /train accepts, in MiB.", ge=1, le=500)
    url_max_mb: int = setting(
        2048,
        "Most a `url:` download may cost, in MiB: a whole file, or for an archive .zip on a server with "
        "range requests only its tweets' bytes (a .zip without them goes to a temporary file).",
        ge=1,
        le=1_048_576,
    )
    url_timeout_seconds: float = setting(
        30,
        "`url:` downloads: seconds to connect, and most seconds between two reads.",
        gt=0,
        le=3600,
    )
    allow_private_urls: bool = setting(
        False,
        "Let `url:` reach private, loopback and link-local addresses (tests and closed networks only: "
        "otherwise anyone with /train could make the bot fetch from its own network).",
    )
    impersonate_cooldown_seconds: float = setting(
        10,
        "Per-user cooldown between /impersonate calls.",
        ge=0,
        le=3600,
    )
    hf_local_mirror: str = setting(
        "",
        "Folder of local model copies named owner/name, tried before the hub by /models import (offline "
        "hosts).",
    )
    progress_edit_seconds: float = setting(
        5,
        "Least time between two edits of a training's progress message.",
        ge=0.1,
        le=600,
    )
    schedule_tick_seconds: float = setting(30, "How often due auto-posts are checked.", ge=0.05, le=3600)
    impersonate_guild_per_minute: int = setting(
        30,
        "Most /impersonate calls one server may make per minute (0 = no limit).",
        ge=0,
        le=10000,
    )
    chatter_default_rate: float = setting(
        0.02,
        "Chance that a persona set with /chatter answers a message on its own, when /chatter set gives "
        "no rate.",
        ge=0,
        le=1,
    )
    chatter_default_cooldown_seconds: int = setting(
        300,
        "Least time between two chime-ins in a channel, when /chatter set gives no cooldown.",
        ge=0,
        le=86400,
    )
    chatter_persona_answers_per_hour: int = setting(
        6,
        "Most answers per server per hour to other personas' posts, where /chatter allows persona-to-persona "
        "(a hard cap on loops; 0 = never).",
        ge=0,
        le=1000,
    )
    discord_api_base: str = setting("", "Override Discord's REST base URL (tests use a local server).")
    discord_gateway_url: str = setting("", "Override Discord's gateway URL (tests use a local server).")
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "Logging level.")
    shard_count: Annotated[int, Field(ge=0, le=65536)] | Literal["auto"] = setting(
        0,
        "Gateway shards of the whole bot: 0 = one unsharded connection (up to 2,500 servers), auto = "
        "as many as Discord recommends, or a number (every process of one deployment sets the same).",
    )
    shard_ids: str = setting(
        "",
        "The shards this process runs, e.g. 0-3 or 0,1 (empty = all of SHARD_COUNT). Run one process "
        "per range, all on one DATABASE_URL.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any, info) -> Any:
        """`NAME=` in .env means "the default", as it does for every line of .env.example."""
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                return cls.model_fields[info.field_name].default
            if info.field_name in ("train_method", "log_level", "training_backend", "shard_count"):
                return value.lower()
        return value

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Settings:
        if self.generation_min_new_tokens > self.generation_max_new_tokens:
            raise ValueError("GENERATION_MIN_NEW_TOKENS must not exceed GENERATION_MAX_NEW_TOKENS")
        _ = self.shards  # SHARD_IDS parses and fits SHARD_COUNT, or a SettingsError names them
        return self

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir)

    @property
    def max_attachment_bytes(self) -> int:
        return self.max_attachment_mb * 1024 * 1024

    @property
    def shards(self) -> tuple[int, ...] | None:
        """The shard ids this process runs, or None: unsharded, or all of SHARD_COUNT."""
        if not self.shard_ids:
            return None
        if not isinstance(self.shard_count, int) or self.shard_count < 1:
            raise ValueError("SHARD_IDS needs SHARD_COUNT set to the number of shards of the whole bot")
        ids = parse_shard_ids(self.shard_ids)
        if ids[-1] >= self.shard_count:
            raise ValueError(
                f"SHARD_IDS={self.shard_ids!r} names shard {ids[-1]}, but shard ids run from 0 "
                f"to SHARD_COUNT-1 ({self.shard_count - 1})"
            )
        return ids

    def require_token(self) -> None:
        if not self.discord_token:
            raise SettingsError("DISCORD_TOKEN is not set: put the bot token in .env or the environment.")

    def replace(self, **changes: Any) -> Settings:
        return self.model_copy(update=changes)


def parse_shard_ids(text: str) -> tuple[int, ...]:
    """'0-3' -> (0, 1, 2, 3); '0,2' -> (0, 2); '0-1,4' -> (0, 1, 4). Sorted, each once."""
    ids: set[int] = set()
    for part in text.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"SHARD_IDS={text!r} is invalid: use a range such as 0-3 or a list such as 0,1")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"SHARD_IDS={text!r} is invalid: {part} runs backwards")
        ids.update(range(low, high + 1))
    return tuple(sorted(ids))


def env_name(field: str) -> str:
    return field.upper()


def load_settings(env: dict[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Build Settings from `env` (default: the environment, then `.env`), naming any bad variable."""
    try:
        if env is None:
            return Settings(_env_file=".env" if dotenv else None)
        values = {field: env[env_name(field)] for field in Settings.model_fields if env_name(field) in env}
        token = _ONLY_GIVEN_VALUES.set(True)
        try:
            return Settings(**values)
        finally:
            _ONLY_GIVEN_VALUES.reset(token)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, env)) from None


def _describe(exc: ValidationError, env: dict[str, str] | None) -> str:
    error = exc.errors()[0]
    if not error["loc"]:  # a check across settings: its message names them
        return error["msg"].removeprefix("Value error, ")
    name = env_name(str(error["loc"][0]))
    raw = error.get("input")
    return f"{name}={raw!r} is invalid: {error['msg']}"


def _default_text(field: str) -> str:
    default = Settings.model_fields[field].default
    if default is None:
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def render_env_example() -> str:
    """The text of `.env.example` (a test keeps the file in step with the fields)."""
    header = "# tweetalike settings. Copy to .env and fill in DISCORD_TOKEN; everything else has a default."
    lines = [header, ""]
    for field, info in Settings.model_fields.items():
        lines += [f"# {info.description}", f"{env_name(field)}={_default_text(field)}", ""]
    return "\n".join(lines)


def render_settings_table() -> str:
    """The README's settings table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field, info in Settings.model_fields.items():
        default = _default_text(field)
        rows.append(f"| `{env_name(field)}` | {f'`{default}`' if default else ''} | {info.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "env"
    sys.stdout.write(render_settings_table() + "\n" if target == "table" else render_env_example())
