"""Guilds per bot process: memory and start-up time of the real bot with many servers.

The local Discord-compatible server (tests/localdiscord/) holds N guilds, each with a few
channels, roles and members; the real bot (`python -m bot`, SQLite, no personas) connects
unsharded or with SHARD_COUNT shards in one process. We record the bot's resident memory once
every guild arrived (from its log) and the time from start to ready. The guild cache is what
grows with servers; personas' models are measured in docs/performance.md.

    python bench/gateway_capacity.py                 # 500, 1,000 and 2,500 guilds
    python bench/gateway_capacity.py --guilds 200    # one size
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.localdiscord import LocalDiscord  # noqa: E402


def populate(server: LocalDiscord, guilds: int) -> None:
    users = [server.add_user(f"user{i}") for i in range(20)]
    for g in range(guilds):
        guild = server.add_guild(f"guild{g}")
        for name in ("news", "memes", "bots", "off-topic"):
            server.add_channel(guild, name)
        server.add_role(guild, "mods", 1 << 5)
        for user in users[g % 10 : g % 10 + 3]:
            server.add_member(guild, user)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(guilds: int, shard_count: int, work: Path) -> tuple[float, float]:
    """(seconds from start to ready, resident MiB when ready) of one bot process that got every guild."""
    async with LocalDiscord(heartbeat_interval_ms=40000, max_guilds_per_session=guilds) as server:
        populate(server, guilds)
        log = work / f"bot-{guilds}-{shard_count}.log"
        env = os.environ | {
            "DISCORD_TOKEN": server.token,
            "DISCORD_API_BASE": server.api_base,
            "DISCORD_GATEWAY_URL": server.gateway_url,
            "DATABASE_PATH": str(work / f"{guilds}-{shard_count}.db"),
            "MODELS_DIR": str(work / "models"),
            "SHARD_COUNT": str(shard_count),
            "HF_HUB_OFFLINE": "1",
        }
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            while "Logged in" not in log.read_text():
                if proc.poll() is not None:
                    raise RuntimeError(log.read_text()[-2000:])
                await asyncio.sleep(0.1)
            seconds, mib = time.monotonic() - start, rss_mib(proc.pid)
            seen = re.search(r"Logged in as .* in (\d+) guilds", log.read_text())
            assert seen and int(seen.group(1)) == guilds, log.read_text()[-2000:]
            return seconds, mib
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 60)


async def run(sizes: list[int], work: Path) -> None:
    rows = []
    for guilds in sizes:
        for shard_count in (0, 2):
            seconds, mib = await measure(guilds, shard_count, work)
            print(
                f"{guilds} guilds, SHARD_COUNT={shard_count}: ready in {seconds:.1f} s, {mib:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
            rows.append((guilds, shard_count, seconds, mib))
    print("\n| guilds | SHARD_COUNT (one process) | start to ready | resident memory |")
    print("| --- | --- | --- | --- |")
    for guilds, shard_count, seconds, mib in rows:
        print(f"| {guilds:,} | {shard_count} | {seconds:.1f} s | {mib:.0f} MiB |")
    base = {shard_count: mib for guilds, shard_count, _, mib in rows if guilds == sizes[0]}
    top = {shard_count: mib for guilds, shard_count, _, mib in rows if guilds == sizes[-1]}
    if len(sizes) > 1:
        per_guild = (top[0] - base[0]) * 1024 / (sizes[-1] - sizes[0])
        span = f"{sizes[0]:,} -> {sizes[-1]:,} guilds"
        print(f"\nGrowth: about {per_guild:.0f} KiB per guild (unsharded, {span})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guilds", type=int, action="append", help="guild counts (default 500, 1000, 2500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.guilds or [500, 1000, 2500], Path(tmp)))


if __name__ == "__main__":
    main()
