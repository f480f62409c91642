"""Consent core: opt-in, collected messages, whose data went into a persona, erasure cascades."""

import asyncio

from bot.core.service import PersonaService
from tests.conftest import tiny_tweets

STATS = {"downloaded": 400, "retweets": 0, "short": 0, "duplicates": 0, "kept": 400}
MEMBER = 4242


async def train_from_member(core: PersonaService, guild_id: int, handle: str, user_id: int | None):
    done = asyncio.get_running_loop().create_future()
    core.set_event_sink(
        lambda event, *args: event == "training_finished" and (done.done() or done.set_result(args[0]))
    )
    await core.submit_training(
        guild_id=guild_id, handle=handle, tweets=tiny_tweets(), stats=STATS, source_user_id=user_id
    )
    outcome = await asyncio.wait_for(done, 120)
    core.set_event_sink(None)
    assert outcome.state == "done"


async def test_opt_out_cascades_across_guilds(settings):
    core = PersonaService(settings)
    await core.start()
    try:
        assert not await core.opted_in(MEMBER)
        await core.set_consent(MEMBER, True)
        assert await core.opted_in(MEMBER)
        await core.save_history_page(
            1, MEMBER, 10, [(1001, "hello from guild one")], before_id=1001, finished=False
        )
        await core.save_history_page(
            2, MEMBER, 20, [(2001, "hello from guild two")], before_id=None, finished=True
        )
        assert await core.collected_messages(1, MEMBER) == ["hello from guild one"]
        assert await core.history_cursor(1, MEMBER, 10) == (1001, False)

        await train_from_member(core, 1, "member_one", MEMBER)
        await train_from_member(core, 2, "member_two", MEMBER)
        await train_from_member(core, 1, "someone_else", None)
        assert await core.personas_using(MEMBER, 1) == [(1, "member_one")]
        await core.add_schedule(guild_id=2, handle="member_two", channel_id=5, every="1h")

        report = await core.opt_out(MEMBER)
        assert sorted(report.personas) == [(1, "member_one"), (2, "member_two")]
        assert report.schedules == 1 and report.messages == 2
        assert not await core.opted_in(MEMBER)
        assert [m.handle for m in await core.list_models(1)] == ["someone_else"]
        assert await core.list_models(2) == []
        assert await core.collected_messages(1, MEMBER) == [] and await core.personas_using(MEMBER) == []
        assert not (core.store.root / "1" / "member_one").exists()
    finally:
        await core.close()


async def test_erase_in_one_guild_only_and_cancels_pending_training(settings):
    core = PersonaService(settings)
    await core.start(run_queue=False)
    try:
        await core.save_history_page(1, MEMBER, 10, [(1, "a b c")], None, True)
        await core.save_history_page(2, MEMBER, 20, [(2, "d e f")], None, True)
        job = await core.submit_training(
            guild_id=1, handle="pending", tweets=tiny_tweets(), stats=STATS, source_user_id=MEMBER
        )
        report = await core.erase_voice(MEMBER, guild_id=1)
        assert report.jobs_cancelled == 1 and report.messages == 1
        assert (await core.storage.jobs.get(1, job.id)).state == "cancelled"
        assert await core.collected_messages(2, MEMBER) == ["d e f"]
    finally:
        await core.close()
