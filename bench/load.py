"""Load test against the local Discord-compatible server: many /impersonate calls while a
training runs.

300 interactions from 50 users in 6 guilds, spread over 60 seconds, with one training job
running the whole time. Checks that every interaction is acknowledged within Discord's 3 s,
that each one gets its tweets or a rate-limit answer, that none is lost, and that the gateway
heartbeat never stalls. Uses the tests' tiny GPT-2 (the point is the bot's plumbing, not the
model's speed; bench/perf.py measures that).

    python bench/load.py [--interactions 300] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from bot.config import load_settings  # noqa: E402
from bot.core.storage import ModelRecord  # noqa: E402
from bot.runtime.logs import quiet_libraries  # noqa: E402
from tests.conftest import tiny_tweets  # noqa: E402
from tests.discord_env import Clock, start_bot, stop_bot  # noqa: E402
from tests.localdiscord import LocalDiscord  # noqa: E402
from tests.tiny_model import build_tiny_gpt2  # noqa: E402


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(interactions: int, seconds: float, guild_count: int, user_count: int) -> dict:
    from bot.core.training.loop import train
    from bot.core.training.recipe import TrainConfig

    work = Path(tempfile.mkdtemp(prefix="tweetalike-load-"))
    base = str(build_tiny_gpt2(work / "base"))
    persona = work / "persona"
    train(tiny_tweets(), persona, TrainConfig(base_model=base, max_steps=5, block_size=64))
    settings = load_settings(
        {
            "DATABASE_PATH": str(work / "bot.db"),
            "MODELS_DIR": str(work / "models"),
            "BASE_MODEL": base,
            "TRAIN_EPOCHS": "20",
            "TRAIN_BATCH_SIZE": "1",
            "TRAIN_BLOCK_SIZE": "16",
            "GENERATION_MAX_NEW_TOKENS": "30",
            "GENERATION_MIN_NEW_TOKENS": "5",
        },
        dotenv=False,
    )
    async with LocalDiscord(heartbeat_interval_ms=1000) as server:
        guilds = [server.add_guild(f"guild{i}") for i in range(guild_count)]
        users = [server.add_user(f"user{i}") for i in range(user_count)]
        for i, user in enumerate(users):
            server.add_member(guilds[i % guild_count], user)
        bot, task = await start_bot(server, settings, Clock())
        import shutil

        for guild in guilds:  # one persona per guild, registered like a trained one
            target = bot.core.store.model_dir(guild, "alice")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(persona, target)
            await bot.core.storage.models.save(
                ModelRecord(
                    guild_id=guild,
                    handle="alice",
                    display_name="Alice",
                    base_model=base,
                    method="lora",
                    path=bot.core.store.relative(target),
                )
            )
        admin = server.guilds[guilds[0]]["owner_id"]
        obama = ROOT.parent / "shared" / "data" / "tweets" / "barackobama_fivethirtyeight.csv"
        corpus = (
            ("obama.csv", obama.read_bytes())
            if obama.is_file()
            else ("t.txt", "\n".join(tiny_tweets()).encode())
        )
        await server.slash(guilds[0], admin, "train new", handle="trainee", file=corpus)
        while not bot.core.queue.running:
            await asyncio.sleep(0.05)
        heartbeats_before = len(server.heartbeats)
        rng = random.Random(0)
        sent = []
        started = time.monotonic()
        for i in range(interactions):
            await asyncio.sleep(max(0.0, started + i * seconds / interactions - time.monotonic()))
            user = rng.choice(users)
            guild = guilds[users.index(user) % guild_count]
            sent.append(await server.slash(guild, user, "impersonate", handle="alice", count=1))
        training_still_running = bool(bot.core.queue.running)
        outcomes = {"tweets": 0, "rate_limited": 0, "other": 0, "lost": 0}
        for interaction in sent:
            try:
                await interaction.wait(
                    lambda i: (
                        i.callback is not None
                        and (
                            i.ephemeral
                            or (i.original and i.original.get("embeds"))
                            or "⚠️" in ((i.original or {}).get("content") or "")
                        )
                    ),
                    timeout=120,
                )
            except AssertionError:
                outcomes["lost"] += 1
                continue
            text = interaction.text()
            if interaction.original and interaction.original.get("embeds"):
                outcomes["tweets"] += 1
            elif "Slow down" in text:
                outcomes["rate_limited"] += 1
            else:
                outcomes["other"] += 1
        acks = [i.ack_latency for i in sent if i.ack_latency is not None]
        beats = server.heartbeats[heartbeats_before:]
        gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
        await bot.core.training.trainings.cancel(guilds[0], 1) if training_still_running else None
        await stop_bot(bot, task)
    return {
        "interactions": interactions,
        "seconds": seconds,
        "guilds": guild_count,
        "users": user_count,
        "ack_p50_ms": 1000 * statistics.median(acks),
        "ack_p99_ms": 1000 * percentile(acks, 0.99),
        "ack_max_ms": 1000 * max(acks),
        "acked": len(acks),
        **outcomes,
        "heartbeat_max_gap_s": max(gaps) if gaps else None,
        "heartbeats": len(beats),
        "training_ran_throughout": training_still_running,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactions", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--guilds", type=int, default=6)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    quiet_libraries()
    r = asyncio.run(run(args.interactions, args.seconds, args.guilds, args.users))
    print("| figure | value |\n| --- | --- |")
    for key, value in r.items():
        print(f"| {key} | {value:.1f} |" if isinstance(value, float) else f"| {key} | {value} |")
    ok = (
        r["lost"] == 0
        and r["ack_max_ms"] < 3000
        and r["other"] == 0
        and (r["heartbeat_max_gap_s"] or 0) < 2.0
    )
    print("\nPASS" if ok else "\nFAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
