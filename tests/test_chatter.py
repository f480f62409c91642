"""The core of /chatter (bot/core/conversation/chatter.py): who answers which message, once,
within its limits."""

import shutil

import pytest

from bot.core.conversation.chatter import Incoming, match_persona, message_context, reply_prompt
from bot.core.errors import UserError
from bot.core.service import PersonaService
from bot.core.storage import ModelRecord

GUILD, CHANNEL, MEMBER = 1, 10, 100
_ids = iter(range(1000, 10**6))


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def core(settings, tiny_base_model):
    clock = FakeClock()
    service = PersonaService(settings.replace(impersonate_cooldown_seconds=10), clock=clock)
    await service.start(run_queue=False)
    service.test_clock = clock
    for handle, name in (("alice", "Alice Liddell"), ("bob", "Bob")):
        folder = service.store.resolve(f"{GUILD}/{handle}")
        shutil.copytree(tiny_base_model, folder)
        await service.storage.models.save(
            ModelRecord(
                guild_id=GUILD,
                handle=handle,
                display_name=name,
                base_model="tiny",
                method="full",
                path=f"{GUILD}/{handle}",
            )
        )
    yield service
    await service.close()


def message(**kw) -> Incoming:
    values = dict(
        guild_id=GUILD,
        channel_id=CHANNEL,
        message_id=next(_ids),
        author_id=MEMBER,
        author_name="mem.ber!",
        text="",
    )
    values.update(kw)
    return Incoming(**values)


async def posted_by(core, handle: str) -> int:
    post_id = next(_ids)
    await core.posts.record_post(message_id=post_id, guild_id=GUILD, channel_id=CHANNEL, handle=handle)
    return post_id


async def test_a_reply_to_a_persona_post_is_answered_by_that_persona_once(core, settings):
    post = await posted_by(core, "bob")
    incoming = message(reply_to=post, text="what do you mean?")
    answer = await core.chatter.decide(incoming)
    assert answer.model.handle == "bob" and answer.kind == "reply"
    assert answer.prompt == "@member" and answer.context == "what do you mean?"
    assert await core.chatter.decide(incoming) is None  # the same message again (a second shard)
    other = PersonaService(settings, clock=core.test_clock)  # another process on the same database
    await other.start(run_queue=False)
    try:
        assert await other.chatter.decide(incoming) is None
    finally:
        await other.close()
    # A reply to a message no persona wrote is no ask.
    assert await core.chatter.decide(message(reply_to=12345, author_id=MEMBER + 1)) is None


async def test_a_mention_names_the_persona_by_handle_or_display_name(core):
    answer = await core.chatter.decide(message(mentions_bot=True, text="<@999> alice, is it true?"))
    assert answer.model.handle == "alice" and answer.kind == "mention" and answer.context == "is it true?"
    answer = await core.chatter.decide(
        message(mentions_bot=True, author_id=MEMBER + 1, text="<@999> alice liddell what now")
    )
    assert answer.model.handle == "alice" and answer.context == "what now"
    # No persona named, none chatting here: nobody answers.
    assert (
        await core.chatter.decide(message(mentions_bot=True, author_id=MEMBER + 2, text="<@999> hi")) is None
    )
    # One persona chats in the channel: it answers an unnamed mention.
    await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="bob", rate=0)
    answer = await core.chatter.decide(message(mentions_bot=True, author_id=MEMBER + 3, text="<@999> hi"))
    assert answer.model.handle == "bob" and answer.context == "hi"


async def test_chime_in_follows_the_rate_and_the_channel_gap(core):
    await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="alice", rate=1, cooldown_s=60)
    first = await core.chatter.decide(message(author_id=1))
    assert first.kind == "chime" and first.model.handle == "alice" and first.context == ""
    assert [await core.chatter.decide(message(author_id=i)) for i in range(2, 50)] == [None] * 48
    core.test_clock.now += 61
    assert (await core.chatter.decide(message(author_id=60))).kind == "chime"
    # Rate 0: never, however long the channel was quiet.
    await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="alice", rate=0, cooldown_s=0)
    core.test_clock.now += 3600
    assert [await core.chatter.decide(message(author_id=i)) for i in range(100, 150)] == [None] * 50
    # A small rate answers about that often (the roll is the chatter's rng).
    await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="alice", rate=0.25, cooldown_s=0)
    rolls = iter([0.9, 0.3, 0.2])
    core.chatter.rng = lambda: next(rolls)
    assert [bool(await core.chatter.decide(message(author_id=i))) for i in (200, 201, 202)] == [
        False,
        False,
        True,
    ]


async def test_bots_webhooks_system_messages_and_persona_loops(core):
    await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="alice", rate=1, cooldown_s=0)
    assert await core.chatter.decide(message(system=True)) is None
    assert await core.chatter.decide(message(other_bot=True, mentions_bot=True, text="alice hi")) is None
    # Our own personas' posts: not answered unless the channel's setting allows persona-to-persona.
    bobs = await posted_by(core, "bob")
    assert await core.chatter.decide(message(persona_post=True, writer="bob", message_id=bobs)) is None
    await core.chatter.set(
        guild_id=GUILD, channel_id=CHANNEL, handle="alice", rate=1, cooldown_s=0, allow_personas=True
    )
    assert await core.chatter.decide(message(persona_post=True, writer="alice")) is None  # never itself
    cap = core.settings.chatter_persona_answers_per_hour
    answers = [await core.chatter.decide(message(persona_post=True, writer="bob")) for _ in range(cap + 5)]
    assert sum(a is not None for a in answers) == cap  # the hard cap per hour bounds any loop
    core.test_clock.now += 3601
    assert await core.chatter.decide(message(persona_post=True, writer="bob")) is not None
    # Members are still answered while the persona-to-persona cap is spent.
    core.test_clock.now += 1
    assert await core.chatter.decide(message(author_id=5)) is not None


async def test_answers_spend_the_guild_budget_and_the_member_cooldown(core, settings):
    core.chatter.guild_budget.count = 3
    post = await posted_by(core, "alice")
    assert await core.chatter.decide(message(reply_to=post, author_id=1)) is not None
    assert await core.chatter.decide(message(reply_to=post, author_id=1)) is None  # member cooldown (10 s)
    assert await core.chatter.decide(message(reply_to=post, author_id=2)) is not None
    assert await core.chatter.decide(message(reply_to=post, author_id=3)) is not None
    assert await core.chatter.decide(message(reply_to=post, author_id=4)) is None  # 3 per minute
    core.test_clock.now += 61
    assert await core.chatter.decide(message(reply_to=post, author_id=1)) is not None


async def test_settings_are_checked_listed_removed_and_follow_the_persona(core):
    with pytest.raises(UserError, match="between 0 and 1"):
        await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="alice", rate=1.5)
    with pytest.raises(UserError, match="cooldown"):
        await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="alice", cooldown_s=-1)
    with pytest.raises(UserError, match="no model called"):
        await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="nobody")
    model, setting = await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL, handle="@Alice", updated_by=7)
    assert model.handle == "alice" and setting.rate == core.settings.chatter_default_rate
    assert setting.cooldown_s == core.settings.chatter_default_cooldown_seconds
    await core.chatter.set(guild_id=GUILD, channel_id=CHANNEL + 1, handle="bob")
    assert [(s.channel_id, s.handle) for s in await core.chatter.list(GUILD)] == [
        (CHANNEL, "alice"),
        (CHANNEL + 1, "bob"),
    ]
    assert await core.chatter.list(GUILD + 1) == []
    assert await core.chatter.off(GUILD, CHANNEL + 1) == 1
    await core.delete_model(GUILD, "alice")
    assert await core.chatter.list(GUILD) == []


async def test_the_answer_is_written_from_the_prompt_and_the_context_stays_out(core):
    answer = await core.chatter.decide(
        message(mentions_bot=True, text="<@999> bob tell me about zebras", author_name="zed")
    )
    text = await core.chatter.write(answer)
    assert text.startswith("@zed") and not text.startswith("@zed tell me about zebras")


def test_prompt_helpers():
    assert reply_prompt("Some Body 🙂") == "@SomeBody"
    assert reply_prompt("🙂") == "@someone"
    assert reply_prompt("a" * 40) == "@" + "a" * 15
    text = "<@123> hey <#456> look https://example.com/x <:blob:789> @everyone " + "x" * 400
    context = message_context(text)
    assert "<" not in context and "http" not in context and "@everyone" not in context
    assert context.startswith("hey look") and len(context) <= 280
    models = [
        ModelRecord(GUILD, "js", "John Stuart", "gpt2", "lora", "p"),
        ModelRecord(GUILD, "john", "John", "gpt2", "lora", "p"),
    ]
    assert match_persona("@JS: hello", models)[0].handle == "js"
    assert match_persona("john stuart, hello there", models) == (models[0], "hello there")
    assert match_persona("John hello", models) == (models[1], "hello")
    assert match_persona("nobody hello", models) == (None, "nobody hello")
