"""Trainings on workers, end to end: the real bot on the local Discord-compatible server, a real
PostgreSQL, and two `python -m bot.worker` processes, each in its own working directory.

Run with `pytest -m scale` (deselected from the default run: each test starts processes).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.storage import Storage, checkpoint_key, database_url
from tests.conftest import TINY_CORPUS
from tests.discord_env import Clock, DiscordEnv, populate, start_bot, stop_bot
from tests.localdiscord import LocalDiscord

pytestmark = pytest.mark.scale

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ("alice_tweets.txt", TINY_CORPUS.read_bytes())
HEARTBEAT = "0.5"  # a killed worker is presumed dead after 3 heartbeats


def long_corpus(lines: int = 3000) -> tuple[str, bytes]:
    """Enough distinct posts for a training that runs long enough to be killed half-way."""
    base = [line for line in TINY_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return "long.txt", "\n".join(f"{base[i % len(base)]} ({i})" for i in range(lines)).encode()


class Worker:
    """One `python -m bot.worker` process with its own working directory and model store."""

    def __init__(self, folder: Path, env: dict[str, str]):
        folder.mkdir(parents=True)
        self.folder = folder
        self.log = folder / "worker.log"
        environment = {**os.environ, **env, "MODELS_DIR": str(folder / "models"), "PYTHONPATH": str(ROOT)}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot.worker"],
                cwd=folder,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker_env(settings, url: str, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": url,
        "BASE_MODEL": settings.base_model,
        "TRAIN_EPOCHS": str(settings.train_epochs),
        "TRAIN_BATCH_SIZE": str(settings.train_batch_size),
        "TRAIN_BLOCK_SIZE": str(settings.train_block_size),
        "TRAIN_LEARNING_RATE": str(settings.train_learning_rate),
        "TRAIN_MAX_STEPS": str(settings.train_max_steps),
        "WORKER_HEARTBEAT_SECONDS": HEARTBEAT,
        "TORCH_THREADS": "1",
        "LOG_LEVEL": "info",
        "HF_HUB_OFFLINE": "1",
    }
    return env | extra


@pytest.fixture
def pg_url(postgres_server) -> str:
    return postgres_server.new_database()


@pytest.fixture
async def scale_env(settings, pg_url, tmp_path):
    """The bot (trainings on workers, since the registry is PostgreSQL) on the local Discord server."""
    bot_settings = settings.replace(
        database_url=pg_url,
        schedule_tick_seconds=0.2,
        queue_poll_seconds=0.2,
        models_dir=str(tmp_path / "bot-models"),
    )
    async with LocalDiscord() as server:
        ids = populate(server)
        clock = Clock()
        bot, task = await start_bot(server, bot_settings, clock)
        env = DiscordEnv(server=server, bot=bot, task=task, clock=clock, **ids)
        try:
            yield env
        finally:
            await stop_bot(env.bot, env.task)
            # Run finalizers now: a task that died with an unread exception is logged with a
            # traceback when collected, and formatting it inside a later ast.parse (pytest's import
            # hook) trips CPython 3.11's "AST constructor recursion depth mismatch".
            gc.collect()


@pytest.fixture
def start_workers(settings, pg_url, tmp_path):
    started: list[Worker] = []

    def start(count: int = 2, **extra: str) -> list[Worker]:
        for _ in range(count):
            started.append(Worker(tmp_path / f"worker-{len(started)}", worker_env(settings, pg_url, **extra)))
        return started[-count:]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def storage(pg_url):
    """The registry as the test reads it (to find a job's worker and its checkpoint)."""
    opened = await Storage.open(database_url(pg_url, ""))
    yield opened
    await opened.close()


async def until(condition, timeout: float = 90, what: str = "the condition"):
    for _ in range(int(timeout / 0.1)):
        value = await condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def train(env, handle="alice", guild=None, file=CORPUS, timeout: float = 120):
    server, guild = env.server, guild or env.guild
    user = env.admin if guild == env.guild else env.outsider_admin
    reply = await server.slash(guild, user, "train new", handle=handle, file=file)
    await reply.answered()
    return reply


async def finished(env, handle: str, guild=None, timeout: float = 120) -> dict:
    channel = env.server.general(guild or env.guild)
    return await env.server.wait_for_message(
        channel,
        lambda m: (
            f"`{handle}` is ready" in (m["content"] or "") or f"`{handle}` failed" in (m["content"] or "")
        ),
        timeout=timeout,
    )


async def impersonate(env, handle: str, guild=None, user=None):
    answer = await env.server.slash(
        guild or env.guild, user or env.member, "impersonate", handle=handle, count=2
    )
    await answer.wait(lambda i: i.original and (i.original.get("embeds") or i.original.get("content")))
    return answer


async def test_a_worker_trains_and_the_bot_answers(scale_env, start_workers, storage):
    env = scale_env
    workers = start_workers(2)
    reply = await train(env)
    done = await finished(env, "alice")
    assert "is ready" in done["content"] and done["attachments"][0]["filename"] == "alice-loss.png"
    assert any("✅ Done" in (e.get("description") or "") for e in reply.original["embeds"])

    job = (await storage.jobs.list(env.guild))[0]
    assert job.state == "done" and any(f"-{w.pid}/" in job.worker for w in workers)  # a worker trained it
    answer = await impersonate(env, "alice")
    assert len(answer.original["embeds"]) == 2  # generated in the bot, from the persona it unpacked
    assert (Path(env.bot.settings.models_dir) / str(env.guild) / "alice" / "adapter_config.json").is_file()

    # The other guild sees nothing of it, and trains its own `alice` beside it.
    refused = await impersonate(env, "alice", guild=env.other_guild, user=env.outsider_admin)
    assert "no model called `alice`" in refused.text()
    await train(env, guild=env.other_guild, file=("b.txt", b"\n".join(CORPUS[1].splitlines()[::-1])))
    await finished(env, "alice", guild=env.other_guild)
    ours, theirs = (
        (await storage.models.get(env.guild, "alice")),
        (await storage.models.get(env.other_guild, "alice")),
    )
    assert ours.metrics["bundle"] != theirs.metrics["bundle"]
    assert len(
        (await impersonate(env, "alice", guild=env.other_guild, user=env.outsider_admin)).original["embeds"]
    )


async def test_a_killed_worker_s_training_resumes_on_the_other_from_its_checkpoint(
    scale_env, start_workers, storage
):
    env = scale_env
    workers = start_workers(
        2, TRAIN_MAX_STEPS="300", TRAIN_EPOCHS="20", TRAIN_BATCH_SIZE="2", TRAIN_CHECKPOINT_SECONDS="0.5"
    )
    await train(env, handle="long", file=long_corpus())

    async def checkpointed():
        jobs = await storage.jobs.list(env.guild)
        job = jobs[0] if jobs else None
        if job and job.state == "running" and (job.progress.get("step") or 0) >= 20:
            return job if await storage.blobs.digest(checkpoint_key(job.id)) else None
        return None

    job = await until(checkpointed, what="a checkpoint in the database")
    victim = next(w for w in workers if f"-{w.pid}/" in job.worker)
    survivor = next(w for w in workers if w is not victim)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()

    notice = await env.server.wait_for_message(
        env.channel, lambda m: "another worker took it over" in (m["content"] or ""), timeout=120
    )
    assert "resumes from its checkpoint at step" in notice["content"]
    step = int(notice["content"].rsplit("step ", 1)[1].rstrip("."))
    assert step >= 1
    await finished(env, "long", timeout=240)
    job = await storage.jobs.get(env.guild, job.id)
    assert job.state == "done" and f"-{survivor.pid}/" in job.worker and job.interrupted == 1
    model = await storage.models.get(env.guild, "long")
    assert model.metrics["resumed_from_step"] == step  # nothing trained twice from scratch
    assert f"resuming from step {step}" in survivor.text()
    assert await storage.blobs.digest(checkpoint_key(job.id)) is None  # nothing left behind
    assert len((await impersonate(env, "long")).original["embeds"]) == 2


async def test_postgresql_restarts_mid_training_and_nothing_is_lost(
    scale_env, start_workers, storage, postgres_server
):
    env = scale_env
    start_workers(
        2, TRAIN_MAX_STEPS="200", TRAIN_EPOCHS="20", TRAIN_BATCH_SIZE="2", TRAIN_CHECKPOINT_SECONDS="0.5"
    )
    await train(env, handle="long", file=long_corpus())

    async def training():
        jobs = await storage.jobs.list(env.guild)
        return jobs and jobs[0].state == "running" and (jobs[0].progress.get("step") or 0) >= 10

    await until(training, what="the training to run")
    await asyncio.to_thread(postgres_server.restart)
    await finished(env, "long", timeout=240)
    assert len((await impersonate(env, "long")).original["embeds"]) == 2
    # Bot and workers are still connected: a new training goes the whole way.
    await train(env, handle="after")
    assert "is ready" in (await finished(env, "after"))["content"]
    jobs = await storage.jobs.list(env.guild)
    assert [j.state for j in jobs] == ["done", "done"]
    assert env.bot.get_cog("AutopostCog").tick.is_running()  # the schedules' loop outlived the outage


async def test_a_stopped_worker_hands_its_training_back(scale_env, start_workers, storage):
    """SIGTERM (docker stop): checkpoint, back to the queue; the next worker resumes it."""
    env = scale_env
    slow = dict(TRAIN_MAX_STEPS="300", TRAIN_EPOCHS="20", TRAIN_BATCH_SIZE="2", TRAIN_CHECKPOINT_SECONDS="30")
    (first,) = start_workers(1, **slow)
    await train(env, handle="long", file=long_corpus())

    async def running():
        jobs = await storage.jobs.list(env.guild)
        return jobs and jobs[0].state == "running" and (jobs[0].progress.get("step") or 0) >= 10

    await until(running, what="the training to run")
    first.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.process.wait, 60) == 0
    job = (await storage.jobs.list(env.guild))[0]
    assert job.state == "queued" and job.interrupted == 1
    assert await storage.blobs.digest(checkpoint_key(job.id))  # saved on the way out, not after 30 s

    (second,) = start_workers(1, **slow)
    notice = await env.server.wait_for_message(
        env.channel, lambda m: "another worker took it over" in (m["content"] or ""), timeout=120
    )
    step = int(notice["content"].rsplit("step ", 1)[1].rstrip("."))
    await finished(env, "long", timeout=240)
    model = await storage.models.get(env.guild, "long")
    assert step >= 10 and model.metrics["resumed_from_step"] == step


async def test_a_persona_updated_on_a_worker_keeps_its_versions(scale_env, start_workers, storage):
    """/train update on workers: the worker unpacks the current version from the database, trains on
    from it and uploads v2 beside v1; the bot serves v2, and /models rollback brings v1 back."""
    env, server = scale_env, scale_env.server
    start_workers(1)
    posts = TINY_CORPUS.read_text(encoding="utf-8").splitlines()
    await train(env, file=("first.txt", "\n".join(posts[:200]).encode()))
    await finished(env, "alice")
    reply = await server.slash(
        env.guild,
        env.admin,
        "train update",
        handle="alice",
        file=("later.txt", "\n".join(posts[150:]).encode()),
    )
    await reply.answered()
    done = await server.wait_for_message(
        env.channel,
        lambda m: "(v2, continued" in m["content"] or "`alice` failed" in m["content"],
        timeout=120,
    )
    assert "is ready (v2, continued from v1 with" in done["content"], done["content"]
    v1, v2 = (
        (await storage.models.versions(env.guild, "alice"))[0],
        await storage.models.get(env.guild, "alice"),
    )
    assert (v1.version, v2.version) == (1, 2) and v1.metrics["bundle"] != v2.metrics["bundle"]
    assert len((await impersonate(env, "alice")).original["embeds"]) == 2
    back, _ = await env.bot.core.versions.rollback(env.guild, "alice")
    assert (
        back.version == 1
        and (await storage.models.get(env.guild, "alice")).metrics["bundle"] == v1.metrics["bundle"]
    )
    assert len((await impersonate(env, "alice")).original["embeds"]) == 2
