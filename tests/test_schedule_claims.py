"""Several bot processes on one database: each due post is claimed by exactly one of them, and
only by a process whose shards hold the post's guild (SQLite and PostgreSQL)."""

import asyncio

import pytest

from bot.core.conversation.schedules import CLAIM_SECONDS, Scheduler
from bot.core.shards import GuildShards, shard_of
from bot.core.storage import Schedule, Storage

NOW = 1_700_000_000.0
GUILD_ON_0 = 262_000_000_000 << 22  # a real-sized snowflake (~1.1e18) with (id >> 22) % 2 == 0
GUILD_ON_1 = GUILD_ON_0 + (1 << 22)


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


async def due_schedule(storage: Storage, guild_id: int, handle: str = "alice") -> Schedule:
    draft = Schedule(
        id=0,
        guild_id=guild_id,
        handle=handle,
        channel_id=guild_id + 1,
        interval_s=3600,
        next_run_at=NOW - 10,
        created_at=NOW - 3600,
    )
    return await storage.schedules.add(draft)


@pytest.fixture
async def two_processes(db_url):
    """Two Storage objects on one database: two processes' connection pools."""
    first, second = await Storage.open(db_url), await Storage.open(db_url)
    yield first, second
    await first.close()
    await second.close()


def test_guild_ids_used_here_sit_on_the_shards_they_claim():
    assert (shard_of(GUILD_ON_0, 2), shard_of(GUILD_ON_1, 2)) == (0, 1)


async def test_two_concurrent_claimers_get_each_due_post_once(two_processes):
    first, second = two_processes
    created = [await due_schedule(first, GUILD_ON_0 + (i << 23), f"p{i}") for i in range(12)]
    rounds = [  # eight claimers (their own names: an owner takes back what it holds) on two pools
        storage.schedules.claim_due(NOW, owner=f"host-{i}-{n}", lease_until=NOW + CLAIM_SECONDS, limit=3)
        for i in range(4)
        for n, storage in enumerate((first, second))
    ]
    claims = await asyncio.gather(*rounds)
    claimed = sorted(s.id for batch in claims for s in batch)
    assert claimed == sorted(s.id for s in created)  # every post once, none twice
    # Nothing is left to claim for anyone else while the claims hold.
    assert await second.schedules.claim_due(NOW + 1, owner="host-c", lease_until=NOW + 600) == []


async def test_the_same_due_post_raced_many_times_goes_to_one_claimer(two_processes):
    first, second = two_processes
    for attempt in range(10):
        schedule = await due_schedule(first, GUILD_ON_1, f"race{attempt}")
        results = await asyncio.gather(
            *(
                storage.schedules.claim_due(NOW, owner=owner, lease_until=NOW + CLAIM_SECONDS)
                for storage, owner in ((first, "a"), (second, "b"), (first, "c"), (second, "d"))
            )
        )
        winners = [batch for batch in results if any(s.id == schedule.id for s in batch)]
        assert len(winners) == 1
        await first.schedules.remove(GUILD_ON_1, schedule.id)


async def test_a_claim_expires_and_its_owner_takes_it_back_at_once(two_processes):
    first, second = two_processes
    schedule = await due_schedule(first, GUILD_ON_0)
    lease = NOW + CLAIM_SECONDS
    assert [s.id for s in await first.schedules.claim_due(NOW, owner="a", lease_until=lease)] == [schedule.id]
    assert await second.schedules.claim_due(NOW + 5, owner="b", lease_until=NOW + 5 + CLAIM_SECONDS) == []
    # A restart of "a" (same name) takes it back without waiting for the lease.
    taken_back = await second.schedules.claim_due(NOW + 5, owner="a", lease_until=lease)
    assert [s.id for s in taken_back] == [schedule.id]
    # "a" died for good: once the lease has passed, "b" takes the post over.
    later = lease + 1
    taken = await second.schedules.claim_due(later, owner="b", lease_until=later + CLAIM_SECONDS)
    assert [s.id for s in taken] == [schedule.id]


async def test_each_process_claims_only_the_guilds_on_its_shards(two_processes):
    first, second = two_processes
    on_0, on_1 = await due_schedule(first, GUILD_ON_0), await due_schedule(first, GUILD_ON_1)
    shard_0, shard_1 = GuildShards(2, (0,)), GuildShards(2, (1,))
    got_0 = await first.schedules.claim_due(NOW, owner="p0", lease_until=NOW + 600, shards=shard_0)
    got_1 = await second.schedules.claim_due(NOW, owner="p1", lease_until=NOW + 600, shards=shard_1)
    assert [s.id for s in got_0] == [on_0.id] and [s.id for s in got_1] == [on_1.id]


async def test_posting_releases_the_claim_for_the_next_window(db_url):
    storage = await Storage.open(db_url)
    try:
        clock = Clock()
        scheduler = Scheduler(storage, clock=clock, rng=lambda: 0.5)
        schedule = await due_schedule(storage, GUILD_ON_1)
        shards = GuildShards(2, (1,))
        [claimed] = await scheduler.claim_due(shards)
        nonce = await scheduler.begin_post(claimed)
        assert await scheduler.claim_due(GuildShards(2, (0,))) == []  # not this process's guild
        # Died before posting: the restarted process (same host, same shards) retries with the same nonce.
        [again] = await scheduler.claim_due(shards)
        assert again.id == schedule.id and again.pending_nonce == nonce
        await scheduler.finish_post(again)
        assert await scheduler.claim_due(shards) == []  # the next post is an hour away
        clock.now += 3600
        [next_window] = await Scheduler(storage, clock=clock).claim_due(None)  # released: anyone may take it
        assert next_window.id == schedule.id and next_window.pending_nonce is None
    finally:
        await storage.close()


async def test_a_refused_or_postponed_post_frees_the_next_window_for_any_process(db_url):
    storage = await Storage.open(db_url)
    try:
        schedule = await due_schedule(storage, GUILD_ON_0)
        for put_off in (storage.schedules.failed, storage.schedules.postpone):
            [claimed] = await storage.schedules.claim_due(NOW, owner="a", lease_until=NOW + CLAIM_SECONDS)
            await put_off(claimed.id, NOW + 60)  # the next window, a minute on, well inside the lease
            later = NOW + 61
            taken = await storage.schedules.claim_due(later, owner="b", lease_until=later + CLAIM_SECONDS)
            assert [s.id for s in taken] == [schedule.id]
            await storage.schedules.pause(GUILD_ON_0, schedule.id, None)  # pausing drops b's claim
            await storage.schedules.resume(GUILD_ON_0, schedule.id, next_run_at=NOW - 10)  # due again
    finally:
        await storage.close()
