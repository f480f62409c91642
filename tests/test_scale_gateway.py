"""Two bot processes (`python -m bot`, SHARD_COUNT=2, one shard each) on one real PostgreSQL,
against the local Discord server with guilds on both shards: each guild's commands reach and are
answered by one process only, and each guild's scheduled post goes out exactly once, sent by the
process whose shard holds the guild."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.core.service import PersonaService
from bot.core.storage import ModelRecord, Storage, database_url
from tests.localdiscord import MANAGE_GUILD, LocalDiscord

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.scale


async def wait_until(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def add_persona(
    core: PersonaService, server: LocalDiscord, guild: int, tiny_base_model: str, models_dirs: list[Path]
) -> int:
    """A ready persona `alice` in `guild` (its files in every process's store) with a post due now."""
    relative = f"{guild}/alice"
    for models_dir in models_dirs:
        shutil.copytree(tiny_base_model, models_dir / relative)
    await core.storage.models.save(
        ModelRecord(
            guild_id=guild,
            handle="alice",
            display_name="Alice",
            base_model=tiny_base_model,
            method="full",
            path=relative,
        )
    )
    _, schedule = await core.schedules.add(
        guild_id=guild, handle="alice", channel_id=server.general(guild), every="1h"
    )
    await core.storage.schedules.resume(guild, schedule.id, next_run_at=0)  # due now
    return schedule.id


def start_bot(server: LocalDiscord, url: str, shard: int, models_dir: Path, base_model: str, log: Path):
    env = os.environ | {
        "DISCORD_TOKEN": server.token,
        "DISCORD_API_BASE": server.api_base,
        "DISCORD_GATEWAY_URL": server.gateway_url,
        "DATABASE_URL": url,
        "MODELS_DIR": str(models_dir),
        "BASE_MODEL": base_model,
        "SHARD_COUNT": "2",
        "SHARD_IDS": str(shard),
        "SCHEDULE_TICK_SECONDS": "0.2",
        "TORCH_THREADS": "1",
        "GENERATION_MAX_NEW_TOKENS": "24",
        "GENERATION_MIN_NEW_TOKENS": "4",
        "HF_HUB_OFFLINE": "1",
    }
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_for_schedules_to_move_on(url: str, guilds: list[int], schedule_ids: list[int]) -> None:
    """Until each schedule's post is recorded: nonce cleared, next run an hour away."""
    storage = await Storage.open(database_url(url, ""))
    try:
        deadline = time.monotonic() + 180
        while True:
            rows = [await storage.schedules.get(g, s) for g, s in zip(guilds, schedule_ids, strict=True)]
            an_hour_on = time.time() + 3000
            if all(r.last_run_at and r.pending_nonce is None and r.next_run_at > an_hour_on for r in rows):
                return
            assert time.monotonic() < deadline, f"the schedules did not move on: {rows}"
            await asyncio.sleep(0.2)
    finally:
        await storage.close()


def posts(server: LocalDiscord, guild: int) -> list[dict]:
    return [m for m in server.channel_messages(server.general(guild)) if m.get("embeds")]


async def test_two_processes_one_shard_each_share_the_guilds_and_post_once(
    postgres_server, tiny_base_model, settings, tmp_path
):
    url = postgres_server.new_database()
    models_dirs = [tmp_path / "models-0", tmp_path / "models-1"]
    logs = [tmp_path / "bot-0.log", tmp_path / "bot-1.log"]
    async with LocalDiscord() as server:
        admin = server.add_user("admin")
        guilds = [server.add_guild(f"g{shard}", on_shard=(shard, 2)) for shard in (0, 1)]
        core = PersonaService(settings.replace(database_url=url))
        await core.start(run_queue=False)
        try:
            schedules = []
            for guild in guilds:
                server.add_member(guild, admin, [server.add_role(guild, "mods", MANAGE_GUILD)])
                schedules.append(await add_persona(core, server, guild, tiny_base_model, models_dirs))
        finally:
            await core.close()

        procs = [
            start_bot(server, url, shard, models_dirs[shard], tiny_base_model, logs[shard])
            for shard in (0, 1)
        ]
        try:
            await wait_until(
                lambda: (
                    all("Logged in" in log.read_text() for log in logs)
                    or any(p.poll() is not None for p in procs)
                ),
                "both processes to log in",
            )
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            assert sorted(i["shard"] for i in server.identifies) == [[0, 2], [1, 2]]
            for shard, guild in enumerate(guilds):  # each command reaches one process, answered once
                reply = await (await server.slash(guild, admin, "models list")).answered(timeout=120)
                assert reply.delivered_to == [(shard, 2)] and reply.callback_attempts == 1
                assert "@alice" in reply.text()

            # Each guild's due post goes out once, from the process serving its shard.
            await wait_until(lambda: all(posts(server, g) for g in guilds), "both scheduled posts")
            await wait_for_schedules_to_move_on(url, guilds, schedules)
            await asyncio.sleep(1.0)  # a few more ticks of both processes: nothing else is due
        finally:
            await stop(procs)
        for shard, guild in enumerate(guilds):
            assert len(posts(server, guild)) == 1
            sends = server.requests_to(f"/channels/{server.general(guild)}/messages", "POST")
            assert len(sends) == 1  # no second process even tried
            served, other = logs[shard].read_text(), logs[1 - shard].read_text()
            assert f"Schedule {schedules[shard]} posted in guild {guild}" in served
            assert f"in guild {guild}" not in other
