"""Settings, read from the environment and a `.env` file, validated once at start-up.

Every setting is listed in SETTINGS with its default and a one-line description; the
README's settings table and `.env.example` are written from the same list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if lo is not None and value < lo:
            raise ValueError(f"must be at least {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"must be at most {hi}")
        return value

    return parse


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if lo is not None and value < lo:
            raise ValueError(f"must be at least {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"must be at most {hi}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _optional_int(raw: str) -> int | None:
    return int(raw) if raw.strip() else None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _str(raw: str) -> str:
    return raw.strip()


@dataclass(frozen=True)
class Setting:
    env: str
    attr: str
    default: str
    parse: Callable[[str], Any]
    help: str


SETTINGS: list[Setting] = [
    Setting("DISCORD_TOKEN", "discord_token", "", _str, "Bot token from the Discord developer portal (required to run the bot, not the CLI)."),
    Setting("DEV_GUILD_ID", "dev_guild_id", "", _optional_int, "If set, slash commands are synced to this guild instantly instead of globally."),
    Setting("MESSAGE_CONTENT_INTENT", "message_content_intent", "false", _bool, "Request the privileged Message Content intent (needed to train on members' messages; enable it in the developer portal too)."),
    Setting("DATABASE_PATH", "database_path", "data/bot.db", _str, "SQLite registry of models, jobs and schedules."),
    Setting("MODELS_DIR", "models_dir", "models", _str, "Where fine-tuned models are stored, one folder per guild and handle."),
    Setting("BASE_MODEL", "base_model", "gpt2", _str, "Model to fine-tune: a Hugging Face hub id or a local path."),
    Setting("TRAIN_METHOD", "train_method", "lora", _choice("lora", "full"), "lora (small adapters, default) or full fine-tuning."),
    Setting("TRAIN_EPOCHS", "train_epochs", "4", _int(1, 50), "Passes over the shuffled tweets (huggingtweets used 4)."),
    Setting("TRAIN_BATCH_SIZE", "train_batch_size", "8", _int(1, 256), "Blocks per optimisation step."),
    Setting("TRAIN_BLOCK_SIZE", "train_block_size", "128", _int(16, 1024), "Tokens per training block; short tweets are packed together."),
    Setting("TRAIN_LEARNING_RATE", "train_learning_rate", "", lambda r: float(r) if r.strip() else None, "Peak learning rate (default 2e-3 for LoRA, 5e-4 for full; see docs/quality.md)."),
    Setting("TRAIN_MAX_STEPS", "train_max_steps", "0", _int(0), "Stop after this many steps (0 = no limit); useful on slow machines."),
    Setting("TRAIN_SEED", "train_seed", "42", _int(0), "Random seed for shuffling, the validation split and initialisation."),
    Setting("TRAIN_CHECKPOINT_SECONDS", "train_checkpoint_seconds", "300", _float(0, 86400), "Least time between two resumable checkpoints of a training (0 = none): a restart resumes from the last one. A full fine-tune's checkpoint is about 3x the model's size, a LoRA one a few MB."),
    Setting("LORA_RANK", "lora_rank", "16", _int(1, 256), "LoRA adapter rank (16: a GPT-2 persona is ~5 MB)."),
    Setting("TRAINING_WORKERS", "training_workers", "1", _int(1, 8), "Trainings run at the same time; others wait in the queue."),
    Setting("TORCH_THREADS", "torch_threads", "0", _int(0, 256), "CPU threads for torch (0 = torch's default)."),
    Setting("GENERATION_TOP_P", "generation_top_p", "0.95", _float(0.01, 1.0), "Nucleus sampling (huggingtweets default 0.95)."),
    Setting("GENERATION_TEMPERATURE", "generation_temperature", "1.0", _float(0.05, 5.0), "Sampling temperature."),
    Setting("GENERATION_MAX_NEW_TOKENS", "generation_max_new_tokens", "160", _int(1, 1024), "Longest generated tweet, in tokens."),
    Setting("GENERATION_MIN_NEW_TOKENS", "generation_min_new_tokens", "10", _int(0, 1024), "Shortest generated tweet, in tokens."),
    Setting("MODEL_CACHE_SIZE", "model_cache_size", "16", _int(1, 1000), "Personas kept loaded (LRU). LoRA personas share one base model, so each costs a few MB."),
    Setting("MAX_ATTACHMENT_MB", "max_attachment_mb", "25", _int(1, 500), "Largest upload /train accepts, in MiB."),
    Setting("IMPERSONATE_COOLDOWN_SECONDS", "impersonate_cooldown_seconds", "10", _float(0, 3600), "Per-user cooldown between /impersonate calls."),
    Setting("HF_LOCAL_MIRROR", "hf_local_mirror", "", _str, "Folder of local model copies named owner/name, tried before the hub by /models import (offline hosts)."),
    Setting("PROGRESS_EDIT_SECONDS", "progress_edit_seconds", "5", _float(0.1, 600), "Least time between two edits of a training's progress message."),
    Setting("SCHEDULE_TICK_SECONDS", "schedule_tick_seconds", "30", _float(0.05, 3600), "How often due auto-posts are checked."),
    Setting("IMPERSONATE_GUILD_PER_MINUTE", "impersonate_guild_per_minute", "30", _int(0, 10000), "Most /impersonate calls one server may make per minute (0 = no limit)."),
    Setting("DISCORD_API_BASE", "discord_api_base", "", _str, "Override Discord's REST base URL (tests use a local server)."),
    Setting("DISCORD_GATEWAY_URL", "discord_gateway_url", "", _str, "Override Discord's gateway URL (tests use a local server)."),
    Setting("LOG_LEVEL", "log_level", "INFO", _choice("debug", "info", "warning", "error"), "Logging level."),
]


@dataclass(frozen=True)
class Settings:
    discord_token: str
    dev_guild_id: int | None
    message_content_intent: bool
    database_path: str
    models_dir: str
    base_model: str
    train_method: str
    train_epochs: int
    train_batch_size: int
    train_block_size: int
    train_learning_rate: float | None
    train_max_steps: int
    train_seed: int
    train_checkpoint_seconds: float
    lora_rank: int
    training_workers: int
    torch_threads: int
    generation_top_p: float
    generation_temperature: float
    generation_max_new_tokens: int
    generation_min_new_tokens: int
    model_cache_size: int
    max_attachment_mb: int
    impersonate_cooldown_seconds: float
    hf_local_mirror: str
    impersonate_guild_per_minute: int
    progress_edit_seconds: float
    schedule_tick_seconds: float
    discord_api_base: str
    discord_gateway_url: str
    log_level: str

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir)

    @property
    def max_attachment_bytes(self) -> int:
        return self.max_attachment_mb * 1024 * 1024

    def require_token(self) -> None:
        if not self.discord_token:
            raise SettingsError("DISCORD_TOKEN is not set: put the bot token in .env or the environment.")

    def replace(self, **changes: Any) -> "Settings":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


def load_settings(env: dict[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Build Settings from `env` (default: os.environ after loading `.env`)."""
    if env is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(override=False)
        env = dict(os.environ)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env, setting.default)
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{setting.env}={raw!r} is invalid: {exc}") from None
    settings = Settings(**values)
    if settings.generation_min_new_tokens > settings.generation_max_new_tokens:
        raise SettingsError("GENERATION_MIN_NEW_TOKENS must not exceed GENERATION_MAX_NEW_TOKENS.")
    return settings


def render_env_example() -> str:
    """The text of `.env.example` (a test keeps the file in step with SETTINGS)."""
    lines = ["# tweetalike settings. Copy to .env and fill in DISCORD_TOKEN; everything else has a default.", ""]
    for setting in SETTINGS:
        lines += [f"# {setting.help}", f"{setting.env}={setting.default}", ""]
    return "\n".join(lines)


def render_settings_table() -> str:
    """The README's settings table."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{s.env}` | {f'`{s.default}`' if s.default else ''} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(render_env_example())
