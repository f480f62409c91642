"""Shared fixtures: a tiny GPT-2 built once per session, settings pointing at temp folders."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub from tests
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bot.config import load_settings  # noqa: E402
from tests.tiny_model import build_tiny_gpt2  # noqa: E402

SHARED_TWEETS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tweets"
TINY_CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"


@pytest.fixture(autouse=True)
def _async_tests_leave_no_task(request):
    """Every async test ends with no task left running in its event loop (see below)."""
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("_cancel_leftover_tasks")


@pytest.fixture
async def _cancel_leftover_tasks():
    """After the test and its own fixtures (this one is set up before them), end what they left
    running, as the bot does at exit: the event loop's teardown cancels leftover tasks only once
    and then waits for them forever (whole CI runs hung there after a discord test)."""
    from bot.runtime.shutdown import cancel_leftover_tasks

    yield
    left = await cancel_leftover_tasks()
    assert not left, f"tasks still running after the test and its fixtures ended: {left}"


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> str:
    """A 2-layer GPT-2 with its own byte-level BPE tokenizer, saved like any hub model."""
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2")))


@pytest.fixture
def settings(tmp_path, tiny_base_model):
    """Settings as the bot would read them, with a temp database and store and the tiny model."""
    env = {
        "DATABASE_PATH": str(tmp_path / "data" / "bot.db"),
        "MODELS_DIR": str(tmp_path / "models"),
        "BASE_MODEL": tiny_base_model,
        "TRAIN_EPOCHS": "2",
        "TRAIN_BATCH_SIZE": "8",
        "TRAIN_BLOCK_SIZE": "64",
        "TRAIN_LEARNING_RATE": "0.003",
        "TRAIN_MAX_STEPS": "12",
        "GENERATION_MAX_NEW_TOKENS": "24",
        "GENERATION_MIN_NEW_TOKENS": "4",
        "IMPERSONATE_COOLDOWN_SECONDS": "0",
        "VOICE_REPORT_POSTS": "20",  # the report runs after every training: a small one
    }
    return load_settings(env)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session, or a skip that says what is missing.

    CI sets TWEETALIKE_REQUIRE_POSTGRES=1: there a missing server fails instead of skipping.
    """
    from tests.postgres import PostgresServer, find_bin_dir

    missing = pytest.fail if os.environ.get("TWEETALIKE_REQUIRE_POSTGRES") == "1" else pytest.skip
    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing("PostgreSQL server binaries are not installed (apt-get install postgresql; .ci/run does it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -r requirements-scale.txt)")
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """The same test on both dialects: a SQLite file, then a fresh PostgreSQL database."""
    from bot.core.storage import database_url

    if request.param == "sqlite":
        return database_url("", tmp_path / "db" / "bot.db")
    return database_url(request.getfixturevalue("postgres_server").new_database(), "")


def shared_corpus(name: str) -> Path:
    path = SHARED_TWEETS / name
    if not path.is_file():
        pytest.skip(f"real tweet corpus {path} is not available (../shared/data/tweets/ is absent)")
    return path


def listen(core, callback) -> None:
    """Add `callback(event, *args)` to the core's training events, keeping the sink already set."""
    previous = core.queue.emit

    def sink(event, *args):
        if previous is not None:
            previous(event, *args)
        callback(event, *args)

    core.set_event_sink(sink)


def on_finished(core, callback) -> None:
    listen(core, lambda event, *args: callback(args[0]) if event == "training_finished" else None)


def tiny_tweets() -> list[str]:
    return [line.strip() for line in TINY_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
async def discord_env(settings):
    """The real bot against a local Discord-compatible server (127.0.0.1 only)."""
    from tests.discord_env import Clock, DiscordEnv, populate, start_bot, stop_bot
    from tests.localdiscord import LocalDiscord

    async with LocalDiscord() as server:
        ids = populate(server)
        clock = Clock()
        bot, task = await start_bot(server, settings.replace(schedule_tick_seconds=0.2), clock)
        env = DiscordEnv(server=server, bot=bot, task=task, clock=clock, **ids)
        try:
            yield env
        finally:
            await stop_bot(env.bot, env.task)
