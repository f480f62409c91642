"""Really kill the core with SIGKILL mid-training and mid-save, then restart it."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.core.service import PersonaService
from bot.core.storage import Storage, database_url
from bot.core.training.checkpoint import checkpoint_step

ROOT = Path(__file__).resolve().parents[1]


async def open_storage(settings) -> Storage:
    return await Storage.open(database_url("", settings.database_path))


def env_for(settings) -> dict:
    return {
        "DATABASE_PATH": settings.database_path,
        "MODELS_DIR": settings.models_dir,
        "BASE_MODEL": settings.base_model,
        "TRAIN_EPOCHS": "20",
        "TRAIN_BATCH_SIZE": "4",
        "TRAIN_BLOCK_SIZE": "64",
        "TRAIN_LEARNING_RATE": "0.003",
        "TRAIN_MAX_STEPS": "25",
        "VOICE_REPORT_POSTS": str(settings.voice_report_posts),
    }


def start_worker(env: dict, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", json.dumps(env), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )


def read_until(proc: subprocess.Popen, predicate, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = []  # what the worker said, so a failure shows it
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            try:
                code = proc.wait(timeout=10)  # a negative code names the signal that ended it
            except subprocess.TimeoutExpired:
                code = None
            raise AssertionError(f"worker exited early (exit code {code}) after: {seen[-8:]}")
        seen.append(line.strip())
        if predicate(line.strip()):
            return line.strip()
    raise AssertionError(f"timed out waiting for the worker after: {seen[-8:]}")


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.parametrize("moment", ["training", "saving"])
async def test_sigkill_then_restart_requeues_and_leaves_no_half_model(settings, moment):
    env = env_for(settings)
    proc = start_worker(env, "train")
    if moment == "training":
        read_until(
            proc,
            lambda line: (
                line.startswith("progress") and line.split()[2] == "training" and int(line.split()[3]) >= 3
            ),
        )
    else:
        read_until(proc, lambda line: line.startswith("progress") and line.split()[2] == "saving")
        time.sleep(0.05)  # die while weights and card are being written
    kill(proc)

    storage = await open_storage(settings)
    assert await storage.integrity_check() == "ok"
    job = (await storage.jobs.list(1))[0]
    assert job.state == "running"  # what the dead process left
    # A model is registered only after its folder is complete; none is registered yet...
    model = await storage.models.get(1, "alice")
    await storage.close()
    if model is not None:  # ...unless the kill came after the publish and registration
        assert (Path(settings.models_dir) / model.path / "adapter_config.json").is_file()

    # Restart: the job is re-queued and told about; leftovers are cleaned; it completes.
    left_behind = set((Path(settings.models_dir) / ".staging").glob("*"))
    proc = start_worker(env | {"TRAIN_MAX_STEPS": "4"}, "resume")
    recovered = read_until(proc, lambda line: line.startswith("recovered"))
    assert recovered.split()[1:] == [str(job.id)]
    # (the re-queued job may already have a staging folder of its own)
    assert not left_behind & set((Path(settings.models_dir) / ".staging").glob("*"))
    read_until(proc, lambda line: line == f"finished {job.id} done")
    read_until(proc, lambda line: line == "idle")
    proc.wait(timeout=30)

    core = PersonaService(settings)
    await core.start(run_queue=False)
    try:
        assert await core.integrity_check() == "ok"
        assert (await core.trainings.get(1, job.id)).interrupted == 1
        _, tweets = await core.generate(1, "alice", "", 2)
        assert len(tweets) == 2
        leftovers = [p for p in (Path(settings.models_dir) / ".staging").glob("*")] + [
            p for p in (Path(settings.models_dir) / ".trash").glob("*")
        ]
        assert leftovers == []
    finally:
        await core.close()


async def test_sigkill_mid_training_resumes_from_the_last_checkpoint(settings):
    env = env_for(settings) | {"TRAIN_CHECKPOINT_SECONDS": "0.000001"}  # a checkpoint after every step
    proc = start_worker(env, "train")
    read_until(
        proc,
        lambda line: (
            line.startswith("progress") and line.split()[2] == "training" and int(line.split()[3]) >= 6
        ),
    )
    kill(proc)
    checkpoint = Path(settings.models_dir) / ".checkpoints"
    (job_dir,) = checkpoint.iterdir()
    saved = checkpoint_step(job_dir)
    assert saved >= 5

    # The same settings after the restart: the job carries on after the checkpoint's step.
    proc = start_worker(env, "resume")
    read_until(proc, lambda line: line.startswith("recovered"))
    first = read_until(proc, lambda line: line.startswith("progress") and line.split()[2] == "training")
    assert int(first.split()[3]) == saved + 1
    read_until(proc, lambda line: line.endswith(" done") and line.startswith("finished"))
    read_until(proc, lambda line: line == "idle")
    proc.wait(timeout=30)
    assert not list(checkpoint.glob("*"))  # the job ended: its checkpoint is gone

    storage = await open_storage(settings)
    try:
        model = await storage.models.get(1, "alice")
        assert model.metrics["resumed_from_step"] == saved and model.metrics["steps"] == 25
    finally:
        await storage.close()


async def test_sigkill_mid_schedule_post_then_restart_posts_once(settings, tiny_base_model):
    """The real bot (`python -m bot`) dies after Discord took a scheduled post but before the
    bot heard back: after a restart the post is retried with its nonce and Discord keeps one."""
    import shutil
    import sqlite3

    from bot.core.storage import ModelRecord
    from tests.discord_env import populate
    from tests.localdiscord import LocalDiscord

    core = PersonaService(settings)
    await core.start(run_queue=False)
    async with LocalDiscord() as server:
        guild = populate(server)["guild"]
        channel = server.general(guild)
        folder = core.store.model_dir(guild, "alice")
        shutil.copytree(tiny_base_model, folder)  # a full (non-LoRA) model is a valid persona
        await core.storage.models.save(
            ModelRecord(
                guild_id=guild,
                handle="alice",
                display_name="Alice",
                base_model=tiny_base_model,
                method="full",
                path=core.store.relative(folder),
            )
        )
        _, schedule = await core.schedules.add(guild_id=guild, handle="alice", channel_id=channel, every="1h")
        await core.close()
        with sqlite3.connect(settings.database_path) as db:  # due now
            db.execute("UPDATE schedules SET next_run_at = 0 WHERE id = ?", (schedule.id,))

        env = os.environ | {
            "DISCORD_TOKEN": server.token,
            "DISCORD_API_BASE": server.api_base,
            "DISCORD_GATEWAY_URL": server.gateway_url,
            "DATABASE_PATH": settings.database_path,
            "MODELS_DIR": settings.models_dir,
            "BASE_MODEL": tiny_base_model,
            "SCHEDULE_TICK_SECONDS": "0.2",
            "GENERATION_MAX_NEW_TOKENS": "24",
            "GENERATION_MIN_NEW_TOKENS": "4",
            "HF_HUB_OFFLINE": "1",
        }
        server.stall(f"/channels/{channel}/messages")
        bot = subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            posted = await server.wait_for_message(channel, timeout=120)
            kill(bot)
        finally:
            if bot.poll() is None:
                kill(bot)

        db = sqlite3.connect(settings.database_path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        pending = db.execute("SELECT pending_nonce FROM schedules WHERE id = ?", (schedule.id,)).fetchone()[0]
        db.close()
        assert pending == posted["nonce"]  # the dead bot had recorded what it was sending

        server.unstall()
        bot = subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                db = sqlite3.connect(settings.database_path)
                row = db.execute(
                    "SELECT pending_nonce, next_run_at FROM schedules WHERE id = ?", (schedule.id,)
                ).fetchone()
                db.close()
                if row[0] is None:
                    break
                assert time.monotonic() < deadline, "the restarted bot did not finish the post"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # a few more ticks: nothing else is due
        finally:
            bot.terminate()
            await asyncio.to_thread(bot.wait, 30)  # a clean close talks to the local server
        attempts = server.requests_to(f"/channels/{channel}/messages", "POST")
        assert len(attempts) == 2 and {a.body["nonce"] for a in attempts} == {posted["nonce"]}
        assert server.channel_messages(channel) == [posted]  # Discord kept one message
        assert row[1] > time.time() + 3000  # the next post is an hour away, not a burst of missed ones


async def test_sigterm_of_the_bot_checkpoints_a_running_training_and_the_restart_resumes_it(
    settings, tiny_base_model
):
    """`docker stop` sends SIGTERM to `python -m bot`: it closes cleanly, the training saves a
    checkpoint on its way out (none is due on the clock), and the next start resumes from it."""
    import sqlite3

    from tests.discord_env import populate
    from tests.localdiscord import LocalDiscord
    from tests.test_discord_bot import CORPUS

    async with LocalDiscord() as server:
        ids = populate(server)
        guild, admin, channel = ids["guild"], ids["admin"], server.general(ids["guild"])
        env = os.environ | {
            "DISCORD_TOKEN": server.token,
            "DISCORD_API_BASE": server.api_base,
            "DISCORD_GATEWAY_URL": server.gateway_url,
            "DATABASE_PATH": settings.database_path,
            "MODELS_DIR": settings.models_dir,
            "BASE_MODEL": tiny_base_model,
            "HF_HUB_OFFLINE": "1",
            "TRAIN_EPOCHS": "20",
            "TRAIN_MAX_STEPS": "1000",
            "TRAIN_BATCH_SIZE": "1",
            "TRAIN_BLOCK_SIZE": "16",
            "TRAIN_CHECKPOINT_SECONDS": "3600",
        }

        async def start_bot() -> subprocess.Popen:
            server.commands.clear()
            bot = subprocess.Popen(
                [sys.executable, "-m", "bot"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 120
            while not (server.commands and server.live_sessions()):  # synced and connected
                assert bot.poll() is None and time.monotonic() < deadline, "the bot did not start"
                await asyncio.sleep(0.1)
            return bot

        async def stop_bot(bot: subprocess.Popen) -> int:
            bot.send_signal(signal.SIGTERM)
            return await asyncio.to_thread(bot.wait, 60)  # the local server keeps serving meanwhile

        def job_step() -> int:
            db = sqlite3.connect(settings.database_path)
            try:
                row = db.execute("SELECT progress_json FROM training_jobs WHERE id = 1").fetchone()
            finally:
                db.close()
            return json.loads(row[0]).get("step", 0) if row and row[0] else 0

        bot = await start_bot()
        try:
            reply = await server.slash(guild, admin, "train new", handle="alice", file=CORPUS)
            await reply.answered(timeout=30)
            while job_step() < 1:  # training has started (its first step is recorded at once)
                assert bot.poll() is None
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert await stop_bot(bot) == 0
        finally:
            if bot.poll() is None:
                kill(bot)
        saved = checkpoint_step(Path(settings.models_dir) / ".checkpoints" / "job-1")
        assert 1 <= saved < 1000

        bot = await start_bot()
        try:
            told = await server.wait_for_message(
                channel, lambda m: "interrupted by a restart" in m["content"], timeout=60
            )
            assert f"resumes from its checkpoint at step {saved}" in told["content"]
            await server.wait_for_message(channel, lambda m: "`alice` is ready" in m["content"], timeout=300)
        finally:
            assert await stop_bot(bot) == 0
        storage = await open_storage(settings)
        try:
            model = await storage.models.get(guild, "alice")
            job = await storage.jobs.get(guild, 1)
        finally:
            await storage.close()
        assert model.metrics["resumed_from_step"] == saved and model.metrics["steps"] == 1000
        assert job.interrupted == 1 and job.state == "done"
