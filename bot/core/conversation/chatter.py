"""Personas in the conversation: which persona answers a message, if any, and with what prompt.

Three ways in, checked in this order for each message in a guild channel:

- **reply**: the message replies to a post a persona wrote (looked up in the generated-post log,
  so webhook posts, embeds and posts from before a restart all count): that persona answers;
- **mention**: the message mentions the bot, then a persona's handle or display name
  (`@bot js_thrill what now?`): that persona answers;
- **chime-in**: a persona set for the channel with `/chatter set` answers with its probability
  per message, at most once per its gap in the channel.

Never for system messages, other bots or webhooks. Our own persona posts (webhook or embed) only
where the answering persona's channel setting allows persona-to-persona, under a hard cap per
guild per hour, and a persona never answers its own post. Every answer takes from the guild's
per-minute budget, a direct ask (reply, mention) also from the member's cooldown; then the
message is claimed in storage, so that it is answered once across shards and processes.

The message's text, when the bot may read it (Message Content intent, or a mention), is only the
prompt of that one answer: it is not stored, logged or trained on. Prompt shapes were compared
with `bench/reply_prompts.py` (docs/quality.md).
"""

from __future__ import annotations

import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.core.errors import UserError
from bot.core.generation.generator import GenerationError, GenerationRequest
from bot.core.generation.safety import strip_links
from bot.core.handles import normalize_handle
from bot.core.limits import MAX_CHATTER_COOLDOWN, MAX_CHATTER_SETTINGS_PER_GUILD, MAX_CONTEXT_CHARS
from bot.core.storage import ChatterSetting, ModelRecord

SETTINGS_TTL_S = 60.0  # a guild's settings are re-read this often (another process may change them)
_DISCORD_MARKUP = re.compile(r"<(?:@[!&]?|#|a?:\w+:)\d+>|@(?:everyone|here)\b")
_NOT_HANDLE_CHARS = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class Incoming:
    """What the bot layer tells the core about a message (text "" when it may not read it)."""

    guild_id: int
    channel_id: int
    message_id: int
    author_id: int
    author_name: str  # the author's username: a reply-shaped prompt starts with it
    text: str = ""
    system: bool = False  # joins, pins, boosts...: never answered
    other_bot: bool = False  # a bot account or webhook that is not one of our personas
    persona_post: bool = False  # one of our personas' posts (our webhook or our own embed)
    writer: str | None = None  # for a persona post: which persona wrote it, when known
    mentions_bot: bool = False
    reply_to: int | None = None  # the id of the message it replies to


@dataclass(frozen=True)
class Answer:
    """Who answers a message and how: the prompt, and the member's text as context ("" without)."""

    model: ModelRecord
    kind: str  # reply | mention | chime
    prompt: str
    context: str = ""


class RateWindow:
    """At most `count` takes per `seconds` for each key (a sliding window, in this process)."""

    def __init__(self, count: int, seconds: float):
        self.count, self.seconds = count, seconds
        self._taken: dict[object, deque[float]] = {}

    def available(self, key: object, now: float) -> bool:
        if self.count <= 0:
            return True  # 0 = no limit
        times = self._taken.setdefault(key, deque())
        while times and times[0] <= now - self.seconds:
            times.popleft()
        return len(times) < self.count

    def retry_after(self, key: object, now: float) -> float:
        """Seconds until `key` may take again (0 when it may now)."""
        if self.available(key, now):
            return 0.0
        return max(0.0, self._taken[key][0] + self.seconds - now)

    def take(self, key: object, now: float) -> bool:
        if not self.available(key, now):
            return False
        if self.count > 0:
            self._taken[key].append(now)
        return True


def reply_prompt(author_name: str) -> str:
    """`@name`: how the person's own replies begin in an X archive (see bench/reply_prompts.py).

    No trailing space: GPT-2 writes " word" as one token, so a prompt ending in a space would leave
    the model a lone " " token it never saw in training."""
    name = _NOT_HANDLE_CHARS.sub("", author_name)[:15] or "someone"  # an X handle's alphabet and length
    return f"@{name}"


def message_context(text: str) -> str:
    """A member's message as a prompt's context: no Discord mentions, emoji ids or links, one line,
    at most a tweet's length."""
    text = strip_links(_DISCORD_MARKUP.sub(" ", text or ""))
    return text[:MAX_CONTEXT_CHARS].strip()


def match_persona(text: str, models: list[ModelRecord]) -> tuple[ModelRecord | None, str]:
    """The persona named at the start of a mention's text (its handle, or its display name), and
    the rest of the text. Longest name first, case-insensitive."""
    words = _DISCORD_MARKUP.sub(" ", text or "").split()
    if not words:
        return None, ""
    lowered = " ".join(words).lower()
    for model in sorted(models, key=lambda m: -len(m.display_name)):  # "John Stuart" before "John"
        name = " ".join(model.display_name.lower().split())
        if lowered == name or any(lowered.startswith(name + mark) for mark in " ,:"):
            return model, " ".join(words)[len(name) :].lstrip(" ,:")
    first = words[0].lstrip("@").rstrip(",:").lower()
    for model in models:
        if model.handle == first:
            return model, " ".join(words[1:])
    return None, " ".join(words)


class Chatter:
    """`service.chatter`: the /chatter settings and the decision to answer a message."""

    def __init__(
        self,
        service,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ):
        self.service = service
        self.clock = clock
        self.rng = rng  # tests pass a fixed one
        s = service.settings
        # The server's per-minute budget, shared with /impersonate (its cog takes from it too).
        self.guild_budget = RateWindow(s.impersonate_guild_per_minute, 60)
        cooldown = s.impersonate_cooldown_seconds
        self.member_cooldown = RateWindow(1 if cooldown > 0 else 0, cooldown)
        self._settings: dict[int, tuple[float, list[ChatterSetting]]] = {}

    @property
    def storage(self):
        return self.service.storage

    # -- settings -----------------------------------------------------------------------------

    async def set(
        self,
        *,
        guild_id: int,
        channel_id: int,
        handle: str,
        rate: float | None = None,
        cooldown_s: int | None = None,
        allow_personas: bool = False,
        updated_by: int | None = None,
    ) -> tuple[ModelRecord, ChatterSetting]:
        """Let a persona chime in in a channel (or change how often); defaults from the settings."""
        s = self.service.settings
        rate = s.chatter_default_rate if rate is None else rate
        cooldown_s = s.chatter_default_cooldown_seconds if cooldown_s is None else cooldown_s
        if not 0 <= rate <= 1:
            raise UserError("The rate is a chance per message, between 0 and 1 (e.g. 0.05 for 1 in 20).")
        if not 0 <= cooldown_s <= MAX_CHATTER_COOLDOWN:
            raise UserError(f"The cooldown must be between 0 and {MAX_CHATTER_COOLDOWN // 3600} hours.")
        model = await self.service.get_model(guild_id, handle)
        existing = await self.storage.chatter.list(guild_id)
        replaces = any(x.channel_id == channel_id and x.handle == model.handle for x in existing)
        if not replaces and len(existing) >= MAX_CHATTER_SETTINGS_PER_GUILD:
            raise UserError(
                f"This server already has {len(existing)} chatter settings; "
                "turn some off with `/chatter off`."
            )
        setting = await self.storage.chatter.save(
            ChatterSetting(
                guild_id=guild_id,
                channel_id=channel_id,
                handle=model.handle,
                rate=float(rate),
                cooldown_s=int(cooldown_s),
                allow_personas=allow_personas,
                updated_by=updated_by,
            )
        )
        self._settings.pop(guild_id, None)
        return model, setting

    async def list(self, guild_id: int) -> list[ChatterSetting]:
        return await self.storage.chatter.list(guild_id)

    async def off(self, guild_id: int, channel_id: int | None = None, handle: str | None = None) -> int:
        """Stop chime-ins in a channel (or everywhere), of one persona or all; returns how many."""
        handle = normalize_handle(handle) if handle else None
        removed = await self.storage.chatter.remove(guild_id, channel_id, handle)
        self._settings.pop(guild_id, None)
        return removed

    async def forget_persona(self, guild_id: int, handle: str) -> None:
        """A deleted persona chimes in nowhere."""
        await self.storage.chatter.remove(guild_id, None, handle)
        self._settings.pop(guild_id, None)

    async def channel_settings(self, guild_id: int, channel_id: int) -> list[ChatterSetting]:
        """The channel's settings, from a per-guild copy refreshed every SETTINGS_TTL_S: every
        message of every guild passes here, and most channels have none."""
        now = time.monotonic()
        cached = self._settings.get(guild_id)
        if cached is None or now - cached[0] > SETTINGS_TTL_S:
            cached = (now, await self.storage.chatter.list(guild_id))
            self._settings[guild_id] = cached
        return [s for s in cached[1] if s.channel_id == channel_id]

    # -- deciding -----------------------------------------------------------------------------

    async def decide(self, message: Incoming) -> Answer | None:
        """The answer to give to this message, already claimed; None when no persona answers."""
        if message.system or message.other_bot:
            return None
        picked = await self._pick(message)
        if picked is None:
            return None
        model, kind, setting = picked
        if message.persona_post and (
            setting is None or not setting.allow_personas or model.handle == message.writer
        ):
            return None  # personas answer personas only where a server asked for it, never themselves
        now = self.clock()
        member = (message.guild_id, message.author_id) if kind != "chime" else None
        # Looked at before the claim and spent after it: a message another process answers, or a
        # chime-in inside the channel's gap, costs nobody anything.
        if (member and not self.member_cooldown.available(member, now)) or not self.guild_budget.available(
            message.guild_id, now
        ):
            return None
        claimed = await self.storage.chatter.claim(
            message_id=message.message_id,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            handle=model.handle,
            kind=kind,
            now=now,
            gap_s=setting.cooldown_s if kind == "chime" and setting else 0,
            to_persona=message.persona_post,
            persona_cap=self.service.settings.chatter_persona_answers_per_hour,
        )
        if not claimed:
            return None
        self.guild_budget.take(message.guild_id, now)
        if member:
            self.member_cooldown.take(member, now)
        text = message.text
        if kind == "mention":
            text = match_persona(text, [model])[1]
        return Answer(model, kind, reply_prompt(message.author_name), message_context(text))

    async def _pick(self, message: Incoming) -> tuple[ModelRecord, str, ChatterSetting | None] | None:
        settings = await self.channel_settings(message.guild_id, message.channel_id)
        by_handle = {s.handle: s for s in settings}
        if message.reply_to is not None:
            post = await self.storage.guilds.post(message.guild_id, message.reply_to)
            if post is not None:
                model = await self._ready(message.guild_id, post.handle)
                return (model, "reply", by_handle.get(model.handle)) if model else None
        if message.mentions_bot and not message.persona_post:
            models = [m for m in await self.storage.models.list(message.guild_id) if m.status == "ready"]
            model = match_persona(message.text, models)[0]
            if model is None and len(settings) == 1:  # "@bot what now?" where one persona chats
                model = await self._ready(message.guild_id, settings[0].handle)
            return (model, "mention", by_handle.get(model.handle)) if model else None
        for setting in random.sample(settings, len(settings)):  # no persona always first
            if setting.handle == message.writer:
                continue  # a persona does not chime in on its own post
            if setting.rate > 0 and self.rng() < setting.rate:
                model = await self._ready(message.guild_id, setting.handle)
                return (model, "chime", setting) if model else None
        return None

    async def _ready(self, guild_id: int, handle: str) -> ModelRecord | None:
        model = await self.storage.models.get(guild_id, handle)
        return model if model is not None and model.status == "ready" else None

    # -- answering ----------------------------------------------------------------------------

    async def write(self, answer: Answer) -> str | None:
        """One post in the persona's voice for a claimed answer (generation thread, batched);
        None when the model had nothing usable to say."""
        service = self.service
        await service.local_copy(answer.model)
        request = GenerationRequest(
            service.model_location(answer.model), answer.prompt, 1, context=answer.context
        )
        try:
            texts = await service.batcher.submit(request)
        except GenerationError as exc:
            raise UserError(str(exc)) from exc
        return texts[0] if texts else None
