"""A small Discord-compatible server on 127.0.0.1 for end-to-end tests.

The real discord.py client connects to it unmodified (the bot's DISCORD_API_BASE and
DISCORD_GATEWAY_URL settings point at it). It speaks:

- the gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats (their arrival
  times are recorded), RESUME -> RESUMED, and INTERACTION_CREATE pushed by tests;
- MESSAGE_CREATE for every message posted in a channel (members' messages sent by tests with
  `member_says`, the bot's messages, webhook messages with `webhook_id`, system messages), only to
  sessions that asked for GUILD_MESSAGES, with the Message Content intent honoured as Discord does
  (gateway.mdx "Message Content Intent"): without it `content`, `embeds`, `attachments` and
  `components` are empty, except in messages the app sent and messages that mention it; replies
  carry `message_reference` and `referenced_message` (type 19); a privileged intent the portal
  has not enabled closes the session with 4014;
- sharding as Discord does it: IDENTIFY's `shard: [shard_id, num_shards]` gives a session the guilds
  with `(guild_id >> 22) % num_shards == shard_id` and their events (events without a guild go to
  shard 0), an invalid shard closes with 4010, a session over `max_guilds_per_session` guilds
  with 4011 (sharding required), and GET /gateway/bot recommends a number of shards;
- the REST routes the bot uses under /api/v10: login and application info, command sync,
  interaction callbacks and webhooks (original response, follow-ups), channel messages (with
  `enforce_nonce`), history pagination, channel webhooks, active threads; files in multipart;
- a CDN route serving attachment bytes, so `/train` downloads a real file; interactions carry
  `attachment_size_limit` (10 MiB, Discord's default for users without Nitro on unboosted servers)
  and, like Discord's clients, `slash` refuses to attach a file over it: the bot never sees one;
  an interaction token works for `interaction_token_lifetime` (15 minutes), then 401 (50027).

It is as strict as Discord: a payload over one of the documented limits (message content, embeds,
autocomplete choices, webhook names), a malformed URL, a second interaction callback, a callback
after 3 s, or a follow-up/edit before the callback is refused with Discord's status, code and
error body (50035 "Invalid Form Body" names the field path). Refusals are kept in `refusals`.

Everything the bot sends is recorded in `requests`; tests drive users through `slash`,
`autocomplete`, `click` and `message_command`, and inject faults (`drop_gateway`, `rate_limit`,
`fail`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

ALL_PERMISSIONS = (1 << 51) - 1
MANAGE_GUILD = 1 << 5
MANAGE_WEBHOOKS = 1 << 29
BASIC_MEMBER = (
    (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
)  # view, send, embed, attach, history, use commands
OPTION_TYPES = {
    "subcommand": 1,
    "group": 2,
    "string": 3,
    "integer": 4,
    "boolean": 5,
    "user": 6,
    "channel": 7,
    "role": 8,
    "mentionable": 9,
    "number": 10,
    "attachment": 11,
}

GUILDS_INTENT = 1 << 0
GUILD_MESSAGES_INTENT = 1 << 9
MESSAGE_CONTENT_INTENT = 1 << 15
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | MESSAGE_CONTENT_INTENT  # members, presences, message content
# resources/message "Message Types": the ones tests send.
MESSAGE_DEFAULT, MESSAGE_USER_JOIN, MESSAGE_PINNED, MESSAGE_REPLY = 0, 7, 6, 19
SYSTEM_MESSAGE_TYPES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 21, 22, 24, 25}

_counter = itertools.count()
DISCORD_EPOCH_MS = 1420070400000


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """JSON with exactly `application/json` (discord.py compares the header verbatim)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


# -- Discord's documented limits ---------------------------------------------------------------------
# resources/message "Create Message": content up to 2000 characters, up to 10 embeds.
# resources/message "Embed Limits": per-field limits and 6000 characters in all embeds of a message,
#   leading and trailing whitespace not counted.
# interactions/receiving-and-responding "Autocomplete": max of 25 choices; interactions/application-
#   commands "Application Command Option Choice Structure": name 1-100 characters, string value <= 100.
# resources/webhook "Create Webhook" + resources/user "Usernames and Nicknames": names 1-80 characters,
#   no "clyde"/"discord" (case-insensitive); zero-width characters removed, whitespace trimmed first.
# interactions/receiving-and-responding: the first response within 3 seconds, else the token is invalid.
CONTENT_LIMIT = 2000
EMBED_LIMITS = {"title": 256, "description": 4096}
EMBED_TOTAL = 6000
CALLBACK_DEADLINE_S = 3.0
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_URL_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


def well_formed_url(url: Any) -> bool:
    """An absolute http(s) (or attachment://) URL made only of the characters RFC 3986 allows."""
    if not isinstance(url, str) or not _URL_CHARS.match(url) or re.search(r"%(?![0-9A-Fa-f]{2})", url):
        return False
    if url.startswith("attachment://"):
        return len(url) > len("attachment://")
    try:
        parts = urlsplit(url)
        if parts.port is not None and parts.port == 0:
            return False
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _error(errors: dict, path: list, code: str, message: str) -> None:
    node = errors
    for key in path:
        node = node.setdefault(str(key), {})
    node.setdefault("_errors", []).append({"code": code, "message": message})


def _check_length(errors: dict, path: list, value: Any, limit: int, minimum: int = 0) -> int:
    """Length as Discord counts it (trimmed); records an error when outside [minimum, limit]."""
    length = len(value.strip()) if isinstance(value, str) else 0
    if length > limit:
        _error(errors, path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
    elif length < minimum:
        _error(errors, path, "BASE_TYPE_MIN_LENGTH", f"Must be {minimum} or more in length.")
    return length


def _check_url(errors: dict, path: list, value: Any) -> None:
    if value is not None and not well_formed_url(value):
        _error(errors, path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")


def _check_embed(errors: dict, i: int, embed: dict) -> int:
    total = sum(
        _check_length(errors, ["embeds", i, key], embed.get(key), limit)
        for key, limit in EMBED_LIMITS.items()
    )
    fields = embed.get("fields") or []
    if len(fields) > 25:
        _error(errors, ["embeds", i, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for j, f in enumerate(fields):
        total += _check_length(errors, ["embeds", i, "fields", j, "name"], f.get("name"), 256, 1)
        total += _check_length(errors, ["embeds", i, "fields", j, "value"], f.get("value"), 1024, 1)
    author, footer = embed.get("author") or {}, embed.get("footer") or {}
    if author:
        total += _check_length(errors, ["embeds", i, "author", "name"], author.get("name"), 256, 1)
    if footer:
        total += _check_length(errors, ["embeds", i, "footer", "text"], footer.get("text"), 2048, 1)
    for holder, key, path in (
        (embed, "url", ["url"]),
        (author, "url", ["author", "url"]),
        (author, "icon_url", ["author", "icon_url"]),
        (footer, "icon_url", ["footer", "icon_url"]),
        (embed.get("thumbnail") or {}, "url", ["thumbnail", "url"]),
        (embed.get("image") or {}, "url", ["image", "url"]),
    ):
        _check_url(errors, ["embeds", i, *path], holder.get(key))
    return total


def message_errors(body: dict | None, *, webhook: bool = False) -> dict:
    """Discord's "errors" object for a message payload; empty when Discord would accept it."""
    body, errors = body or {}, {}
    _check_length(errors, ["content"], body.get("content"), CONTENT_LIMIT)
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        _error(errors, ["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if sum(_check_embed(errors, i, embed) for i, embed in enumerate(embeds)) > EMBED_TOTAL:
        _error(
            errors, ["embeds"], "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {EMBED_TOTAL}"
        )
    if webhook:
        if body.get("username") is not None:
            webhook_name_errors(errors, ["username"], body["username"])
        _check_url(errors, ["avatar_url"], body.get("avatar_url"))
    return errors


def webhook_name_errors(errors: dict, path: list, name: Any) -> dict:
    cleaned = " ".join(_INVISIBLE.sub("", name if isinstance(name, str) else "").split())
    _check_length(errors, path, cleaned, 80, 1)
    for word in ("discord", "clyde"):
        if word in cleaned.lower():
            _error(errors, path, "USERNAME_INVALID_CONTAINS", f'Username cannot contain "{word}"')
    return errors


def choices_errors(choices: Any) -> dict:
    errors: dict = {}
    if not isinstance(choices, list) or len(choices) > 25:
        _error(errors, ["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        return errors
    for i, choice in enumerate(choices):
        _check_length(errors, ["data", "choices", i, "name"], choice.get("name"), 100, 1)
        if isinstance(choice.get("value"), str):
            _check_length(errors, ["data", "choices", i, "value"], choice["value"], 100)
    return errors


def invalid_form(errors: dict) -> web.Response:
    return json_response({"message": "Invalid Form Body", "code": 50035, "errors": errors}, status=400)


def unknown_webhook() -> web.Response:
    return json_response({"message": "Unknown Webhook", "code": 10015}, status=404)


def snowflake() -> int:
    """Timestamp in the high bits, like Discord's: discord.py reads creation times from ids."""
    return (int(time.time() * 1000 - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    files: dict[str, tuple[str, bytes]]
    at: float


def shard_of(guild_id: int, num_shards: int) -> int:
    """Discord's sharding formula (discord-api-docs, Gateway > Sharding)."""
    return (guild_id >> 22) % num_shards


@dataclass
class GatewaySession:
    """One identified gateway session: its socket (replaced on RESUME), shard and sequence."""

    id: str
    ws: web.WebSocketResponse
    shard: tuple[int, int] | None  # (shard_id, num_shards), None when unsharded
    seq: int = 0
    intents: int = 0

    def receives(self, guild_id: int | None) -> bool:
        if self.shard is None:
            return True
        if guild_id is None:  # DMs and other guild-less events go to shard 0 only
            return self.shard[0] == 0
        return shard_of(guild_id, self.shard[1]) == self.shard[0]


class GatewayClose(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def check_shard(shard: Any) -> tuple[int, int] | None:
    """IDENTIFY's `shard` field: absent, or [shard_id, num_shards] with 0 <= shard_id < num_shards."""
    if shard is None:
        return None
    valid = (
        isinstance(shard, list)
        and len(shard) == 2
        and all(type(x) is int for x in shard)
        and shard[1] >= 1
        and 0 <= shard[0] < shard[1]
    )
    if not valid:
        raise GatewayClose(4010, "Invalid shard.")
    return shard[0], shard[1]


@dataclass
class Interaction:
    """What a simulated user sent and what came back."""

    id: int
    token: str
    sent_at: float
    server: LocalDiscord
    channel_id: int = 0
    callback: dict | None = None
    callback_at: float | None = None
    original: dict | None = None
    followups: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # Discord's error bodies for this interaction
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    delivered_to: list[tuple[int, int] | None] = field(default_factory=list)  # the shards that got it
    callback_attempts: int = 0  # more than one: two processes tried to answer it

    async def wait(self, predicate: Callable[[Interaction], bool], timeout: float = 60) -> Interaction:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"interaction {self.id}: timed out; callback={self.callback} original={self.original}"
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass
        return self

    async def answered(self, timeout: float = 60) -> Interaction:
        """Wait for the callback (or for Discord refusing it, which a test then sees at once)."""
        return await self.wait(lambda i: i.callback is not None or i.refused, timeout)

    @property
    def ack_latency(self) -> float | None:
        return None if self.callback_at is None else self.callback_at - self.sent_at

    @property
    def ephemeral(self) -> bool:
        return bool((self.callback or {}).get("data", {}).get("flags", 0) & 64)

    def texts(self) -> list[str]:
        """Every text the user could read: content and embed text of the callback, original, follow-ups."""
        out = []
        for message in [(self.callback or {}).get("data") or {}, self.original or {}, *self.followups]:
            out.append(message.get("content") or "")
            for embed in message.get("embeds") or []:
                out += [embed.get("title") or "", embed.get("description") or ""]
                out += [f.get("value", "") for f in embed.get("fields") or []]
        return [t for t in out if t]

    def text(self) -> str:
        return "\n".join(self.texts())


class UploadTooLarge(AssertionError):
    """A test tried to attach a file no Discord client would send (over attachment_size_limit)."""


class LocalDiscord:
    def __init__(self, *, heartbeat_interval_ms: int = 1000, max_guilds_per_session: int = 2500):
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_guilds_per_session = max_guilds_per_session  # Discord's limit per shard
        self.recommended_shards: int | None = None  # GET /gateway/bot's `shards`; None: one per 1,000 guilds
        self.token = "local-test-token"
        self.application_id = snowflake()
        self.bot_user = {
            "id": str(self.application_id),
            "username": "tweetalike",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
        }
        self.guilds: dict[int, dict] = {}
        self.users: dict[int, dict] = {}
        self.messages: dict[int, list[dict]] = {}  # channel id -> messages, oldest first
        self.webhooks: dict[int, dict] = {}
        self.commands: dict[str, list[dict]] = {}  # "global" or guild id -> synced commands
        self.files: dict[str, bytes] = {}
        # Largest upload a user may attach (bytes): 10 MiB by default; Nitro and server boosts raise it.
        self.interaction_token_lifetime = 15 * 60.0  # seconds; then its webhook calls get 401 (50027)
        self.attachment_size_limit = 10 * 1024 * 1024
        self.interactions: dict[str, Interaction] = {}  # by token
        self.requests: list[Recorded] = []
        self.unknown_routes: list[str] = []
        self.heartbeats: list[float] = []
        self.identifies: list[dict] = []
        self.resumes = 0
        self.nonces: dict[tuple[int, str], dict] = {}
        self.refusals: list[tuple[str, str, int, dict]] = []  # method, path, status, error body
        self.callback_deadline = CALLBACK_DEADLINE_S
        # The privileged intents switched on in the developer portal (the bot may ask for these).
        self.portal_intents = MESSAGE_CONTENT_INTENT
        self.message_events: list[tuple[GatewaySession, dict]] = []  # MESSAGE_CREATE as each session got it
        self._rate_limits: list[tuple[str, int, float]] = []
        self._failures: list[list] = []  # [path fragment, method, times left, status, body]
        self._stalls: list[str] = []  # path fragments whose requests are carried out but never answered
        self._unstalled = asyncio.Event()
        self.sessions: dict[str, GatewaySession] = {}  # identified sessions, by id (kept for RESUME)
        self.closes: list[int] = []  # close codes the server sent
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> LocalDiscord:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{key}/{filename}", self._cdn)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.unstall()
        for ws in list(self._sockets):
            await ws.close()
        await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- state set-up ------------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False) -> int:
        user_id = snowflake()
        self.users[user_id] = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": name.title(),
            "avatar": None,
            "bot": bot,
        }
        return user_id

    def add_guild(
        self,
        name: str,
        *,
        bot_permissions: int = ALL_PERMISSIONS & ~(1 << 3),
        on_shard: tuple[int, int] | None = None,
    ) -> int:
        """A guild with the bot in it; `on_shard=(shard_id, num_shards)` picks an id on that shard."""
        guild_id = snowflake()
        if on_shard is not None:  # move the id's timestamp a few milliseconds on, to the wanted shard
            guild_id += ((on_shard[0] - shard_of(guild_id, on_shard[1])) % on_shard[1]) << 22
        owner = self.add_user(f"{name}-owner")
        bot_role = snowflake()
        self.guilds[guild_id] = {
            "id": guild_id,
            "name": name,
            "owner_id": owner,
            "channels": {},
            "threads": {},
            "roles": {
                guild_id: {
                    "id": str(guild_id),
                    "name": "@everyone",
                    "permissions": str(BASIC_MEMBER),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                },
                bot_role: {
                    "id": str(bot_role),
                    "name": "tweetalike",
                    "permissions": str(bot_permissions),
                    "position": 1,
                    "color": 0,
                    "hoist": False,
                    "managed": True,
                    "mentionable": False,
                    "flags": 0,
                },
            },
            "members": {self.application_id: [bot_role], owner: []},
            "bot_role": bot_role,
        }
        self.add_channel(guild_id, "general")
        return guild_id

    def add_role(self, guild_id: int, name: str, permissions: int) -> int:
        role_id = snowflake()
        self.guilds[guild_id]["roles"][role_id] = {
            "id": str(role_id),
            "name": name,
            "permissions": str(permissions),
            "position": 2,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }
        return role_id

    def add_member(self, guild_id: int, user_id: int, roles: list[int] = ()) -> None:
        self.guilds[guild_id]["members"][user_id] = list(roles)

    def add_channel(
        self, guild_id: int, name: str, *, nsfw: bool = False, overwrites: list[dict] | None = None
    ) -> int:
        channel_id = snowflake()
        self.guilds[guild_id]["channels"][channel_id] = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(self.guilds[guild_id]["channels"]),
            "permission_overwrites": overwrites or [],
            "nsfw": nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
        self.messages[channel_id] = []
        return channel_id

    def add_thread(self, guild_id: int, parent_id: int, name: str) -> int:
        thread_id = snowflake()
        self.guilds[guild_id]["threads"][thread_id] = {
            "id": str(thread_id),
            "type": 11,
            "guild_id": str(guild_id),
            "parent_id": str(parent_id),
            "name": name,
            "owner_id": str(self.guilds[guild_id]["owner_id"]),
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": iso_now(),
                "locked": False,
            },
        }
        self.messages[thread_id] = []
        return thread_id

    def general(self, guild_id: int) -> int:
        return next(iter(self.guilds[guild_id]["channels"]))

    def seed_message(self, channel_id: int, user_id: int, content: str) -> dict:
        """A message someone wrote before the test (for history collection)."""
        return self._store_message(channel_id, self._user(user_id), {"content": content})

    def delete_channel(self, guild_id: int, channel_id: int) -> None:
        self.guilds[guild_id]["channels"].pop(channel_id)
        self._dispatch(
            "CHANNEL_DELETE",
            {
                "id": str(channel_id),
                "type": 0,
                "guild_id": str(guild_id),
                "name": "gone",
                "position": 0,
                "permission_overwrites": [],
            },
        )

    def set_bot_permissions(self, guild_id: int, permissions: int) -> None:
        guild = self.guilds[guild_id]
        role = guild["roles"][guild["bot_role"]]
        role["permissions"] = str(permissions)
        self._dispatch("GUILD_ROLE_UPDATE", {"guild_id": str(guild_id), "role": role})

    # -- permissions -------------------------------------------------------------------------------

    def permissions(self, guild_id: int, user_id: int) -> int:
        guild = self.guilds[guild_id]
        if user_id == guild["owner_id"]:
            return ALL_PERMISSIONS
        value = int(guild["roles"][guild_id]["permissions"])
        for role_id in guild["members"].get(user_id, []):
            value |= int(guild["roles"][role_id]["permissions"])
        return ALL_PERMISSIONS if value & (1 << 3) else value

    # -- gateway -----------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json(
            {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                try:
                    await self._gateway_op(ws, payload.get("op"), payload.get("d"))
                except GatewayClose as close:
                    self.closes.append(close.code)
                    await ws.close(code=close.code, message=close.reason.encode())
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    async def _gateway_op(self, ws: web.WebSocketResponse, op: int | None, data: Any) -> None:
        if op == 1:
            self.heartbeats.append(time.monotonic())
            await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            self.identifies.append(data)
            intents = data.get("intents")
            if not isinstance(intents, int) or intents < 0 or intents >= 1 << 26:
                raise GatewayClose(4013, "Invalid intent(s).")
            if intents & PRIVILEGED_INTENTS & ~self.portal_intents:
                raise GatewayClose(4014, "Disallowed intent(s).")
            await self._ready(ws, check_shard(data.get("shard")), intents)
        elif op == 6:
            session = self.sessions.get(data.get("session_id"))
            if session is None:  # Invalid Session, not resumable: the client identifies again
                await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
                return
            self.resumes += 1
            session.ws = ws
            await self._send(session, "RESUMED", {})

    async def _send(self, session: GatewaySession, event: str, data: Any) -> None:
        session.seq += 1
        await session.ws.send_json({"op": 0, "t": event, "s": session.seq, "d": data})

    def live_sessions(self) -> int:
        """Identified gateway sessions connected now: a bot process can receive interactions once
        it has one (its commands are synced over REST before its gateway connects)."""
        return sum(1 for s in self.sessions.values() if s.ws in self._sockets)

    def guilds_of(self, shard: tuple[int, int] | None) -> list[int]:
        """The guilds a session with this shard receives."""
        probe = GatewaySession("", None, shard)
        return [guild_id for guild_id in self.guilds if probe.receives(guild_id)]

    async def _ready(self, ws: web.WebSocketResponse, shard: tuple[int, int] | None, intents: int) -> None:
        guilds = self.guilds_of(shard)
        if len(guilds) > self.max_guilds_per_session:
            raise GatewayClose(4011, "Sharding required.")
        session = GatewaySession(f"local-session-{snowflake()}", ws, shard, intents=intents)
        self.sessions[session.id] = session
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await self._send(session, "READY", ready)
        for guild_id in guilds:
            await self._send(session, "GUILD_CREATE", self._guild_payload(guild_id))

    def _guild_payload(self, guild_id: int) -> dict:
        guild = self.guilds[guild_id]
        return {
            "id": str(guild_id),
            "name": guild["name"],
            "owner_id": str(guild["owner_id"]),
            "icon": None,
            "roles": list(guild["roles"].values()),
            "channels": list(guild["channels"].values()),
            "threads": list(guild["threads"].values()),
            "members": [self._member(guild_id, uid) for uid in guild["members"]],
            "member_count": len(guild["members"]),
            "emojis": [],
            "stickers": [],
            "features": [],
            "unavailable": False,
            "large": False,
            "joined_at": iso_now(),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_id": str(self.general(guild_id)),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "afk_timeout": 300,
            "afk_channel_id": None,
            "premium_subscription_count": 0,
        }

    def _user(self, user_id: int) -> dict:
        return self.bot_user if user_id == self.application_id else self.users[user_id]

    def _member(self, guild_id: int, user_id: int) -> dict:
        return {
            "user": self._user(user_id),
            "roles": [str(r) for r in self.guilds[guild_id]["members"].get(user_id, [])],
            "joined_at": iso_now(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
        }

    def _dispatch(self, event: str, data: dict) -> list[GatewaySession]:
        """Send an event to the live sessions whose shard has its guild; returns them."""
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        sessions = [s for s in self.sessions.values() if s.ws in self._sockets and s.receives(guild_id)]
        for session in sessions:
            asyncio.ensure_future(self._send(session, event, data))
        return sessions

    def _dispatch_message(self, message: dict) -> None:
        """MESSAGE_CREATE to the sessions with GUILD_MESSAGES, each as its intents let it see it."""
        guild_id = self._guild_of_channel(int(message["channel_id"]))
        payload = {**self._public(message), "guild_id": str(guild_id)}
        author_id = int(message["author"]["id"])
        if not message.get("webhook_id") and author_id in self.guilds[guild_id]["members"]:
            member = self._member(guild_id, author_id)
            payload["member"] = {k: v for k, v in member.items() if k != "user"}
        for session in self.sessions.values():
            if not (session.ws in self._sockets and session.receives(guild_id)):
                continue
            if not session.intents & GUILD_MESSAGES_INTENT:
                continue
            seen = self._as_seen(payload, session.intents)
            self.message_events.append((session, seen))
            asyncio.ensure_future(self._send(session, "MESSAGE_CREATE", seen))

    def _as_seen(self, message: dict, intents: int) -> dict:
        """A message as an app with these intents receives it: without MESSAGE_CONTENT, the user
        content fields are empty unless the app sent the message or is mentioned in it."""
        seen = dict(message)
        if seen.get("referenced_message"):
            seen["referenced_message"] = self._as_seen(seen["referenced_message"], intents)
        sent_by_app = seen["author"]["id"] == str(self.application_id) and not seen.get("webhook_id")
        mentioned = any(u["id"] == str(self.application_id) for u in seen.get("mentions") or [])
        if not intents & MESSAGE_CONTENT_INTENT and not sent_by_app and not mentioned:
            seen.update(content="", embeds=[], attachments=[], components=[])
        return seen

    def _mentions(self, content: str, reference: dict | None, ping_reply: bool) -> list[dict]:
        """Users mentioned by `<@id>` in the content, and the replied-to author when the reply pings."""
        ids = [int(i) for i in re.findall(r"<@!?(\d+)>", content or "")]
        if reference is not None and ping_reply and not reference.get("webhook_id"):
            ids.append(int(reference["author"]["id"]))
        known = [i for i in dict.fromkeys(ids) if i == self.application_id or i in self.users]
        return [self._user(i) for i in known]

    def member_says(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        reply_to: dict | None = None,
        ping_reply: bool = True,
        message_type: int | None = None,
    ) -> dict:
        """A message a member (or another bot account) sends in a channel, as the Discord client
        would: mentions parsed, a reply (`reply_to`) referencing its message; dispatched at once."""
        guild_id = self._guild_of_channel(channel_id)
        if user_id not in self.guilds[guild_id]["members"]:
            raise AssertionError("only members of the guild can post in it")
        if not self.permissions(guild_id, user_id) & (1 << 11):
            raise AssertionError("that member may not send messages here")
        extra: dict[str, Any] = {}
        if reply_to is not None:
            if reply_to not in self.messages.get(channel_id, []):
                raise AssertionError("a reply references a message of the same channel")
            extra = {
                "message_reference": {
                    "type": 0,
                    "message_id": reply_to["id"],
                    "channel_id": str(channel_id),
                    "guild_id": str(guild_id),
                },
                "referenced_message": self._public(reply_to),
            }
        message = self._store_message(channel_id, self._user(user_id), {"content": content}, **extra)
        message["type"] = (
            message_type if message_type is not None else MESSAGE_REPLY if reply_to else MESSAGE_DEFAULT
        )
        message["mentions"] = self._mentions(content, reply_to, ping_reply)
        self._dispatch_message(message)
        return message

    def system_message(self, channel_id: int, user_id: int, message_type: int = MESSAGE_USER_JOIN) -> dict:
        """A system message (a member joined, a pin...): Discord writes it, with no content."""
        assert message_type in SYSTEM_MESSAGE_TYPES
        return self.member_says(channel_id, user_id, "", message_type=message_type)

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection (discord.py should reconnect and RESUME)."""
        for ws in list(self._sockets):
            await ws.close(code=code)

    def rate_limit(self, path_contains: str, times: int = 1, retry_after: float = 0.3) -> None:
        """The next `times` requests whose path contains `path_contains` answer 429."""
        self._rate_limits.append((path_contains, times, retry_after))

    def fail(
        self,
        path_contains: str,
        *,
        times: int = 1,
        status: int = 400,
        method: str = "POST",
        body: dict | None = None,
    ) -> None:
        """The next `times` matching requests are refused with `status` (default: a 400 form error)."""
        body = body or (
            {"message": "Invalid Form Body", "code": 50035, "errors": {}}
            if status == 400
            else {"message": "Internal Server Error", "code": 0}
        )
        self._failures.append([path_contains, method, times, status, body])

    # -- simulated users ---------------------------------------------------------------------------

    def stall(self, path_contains: str) -> None:
        """Carry out matching requests but hold their responses until `unstall()`."""
        self._unstalled.clear()
        self._stalls.append(path_contains)

    def unstall(self) -> None:
        self._stalls.clear()
        self._unstalled.set()

    def _command(self, guild_id: int, name: str, kind: int = 1) -> dict:
        for scope in (str(guild_id), "global"):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == kind:
                    return command
        raise AssertionError(
            f"command {name!r} was not synced (have {[c['name'] for c in self.commands.get('global', [])]})"
        )

    def _options(
        self,
        guild_id: int,
        schema: list[dict],
        values: dict[str, Any],
        resolved: dict,
        focused: str | None = None,
    ) -> list[dict]:
        out = []
        for option in schema:
            if option["name"] not in values:
                continue
            value = values[option["name"]]
            kind = option["type"]
            if kind == OPTION_TYPES["attachment"]:
                # (filename, data) or (filename, data, claimed size): a huge file without its bytes
                filename, data = value[0], value[1]
                size = value[2] if len(value) == 3 else len(data)
                if size > self.attachment_size_limit:
                    raise UploadTooLarge(
                        f"{filename} is {size} bytes, over attachment_size_limit "
                        f"({self.attachment_size_limit}): Discord refuses the upload before any interaction"
                    )
                key = str(snowflake())
                self.files[key] = data
                resolved.setdefault("attachments", {})[key] = {
                    "id": key,
                    "filename": filename,
                    "size": size,
                    "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
                    "url": f"{self.base}/cdn/{key}/{filename}",
                    "proxy_url": f"{self.base}/cdn/{key}/{filename}",
                }
                value = key
            elif kind == OPTION_TYPES["channel"]:
                channel = self.guilds[guild_id]["channels"].get(value) or self.guilds[guild_id][
                    "threads"
                ].get(value)
                resolved.setdefault("channels", {})[str(value)] = {
                    **channel,
                    "permissions": str(ALL_PERMISSIONS),
                }
                value = str(value)
            elif kind in (OPTION_TYPES["user"], OPTION_TYPES["mentionable"]):
                resolved.setdefault("users", {})[str(value)] = self._user(value)
                if value in self.guilds[guild_id]["members"]:
                    member = self._member(guild_id, value)
                    member.pop("user")
                    member["permissions"] = str(self.permissions(guild_id, value))
                    resolved.setdefault("members", {})[str(value)] = member
                value = str(value)
            item = {"type": kind, "name": option["name"], "value": value}
            if focused == option["name"]:
                item["focused"] = True
            out.append(item)
        return out

    def _base_interaction(
        self,
        kind: int,
        guild_id: int,
        user_id: int,
        channel_id: int | None,
        data: dict,
        message: dict | None = None,
    ) -> Interaction:
        channel_id = channel_id or self.general(guild_id)
        channel = (
            self.guilds[guild_id]["channels"].get(channel_id) or self.guilds[guild_id]["threads"][channel_id]
        )
        interaction = Interaction(
            id=snowflake(),
            token=f"itoken-{snowflake()}",
            sent_at=time.monotonic(),
            server=self,
            channel_id=channel_id,
        )
        member = self._member(guild_id, user_id)
        member["permissions"] = str(self.permissions(guild_id, user_id))
        payload = {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "channel": channel,
            "member": member,
            "token": interaction.token,
            "version": 1,
            "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": str(self.permissions(guild_id, self.application_id)),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if message is not None:
            payload["message"] = message
        self.interactions[interaction.token] = interaction
        sessions = self._dispatch("INTERACTION_CREATE", payload)
        interaction.delivered_to = [session.shard for session in sessions]
        return interaction

    async def slash(
        self, guild_id: int, user_id: int, command: str, channel_id: int | None = None, **values: Any
    ) -> Interaction:
        """`/train new handle:x file:(name, bytes)`: command is "train new", values are options."""
        parts = command.split()
        top = self._command(guild_id, parts[0])
        resolved: dict = {}
        schema, options = top.get("options", []), None
        if len(parts) > 1:
            sub = next(o for o in schema if o["name"] == parts[1])
            options = [
                {
                    "type": sub["type"],
                    "name": sub["name"],
                    "options": self._options(guild_id, sub.get("options", []), values, resolved),
                }
            ]
        else:
            options = self._options(guild_id, schema, values, resolved)
        data = {
            "id": top["id"],
            "name": top["name"],
            "type": 1,
            "options": options,
            "guild_id": str(guild_id),
        }
        if resolved:
            data["resolved"] = resolved
        return self._base_interaction(2, guild_id, user_id, channel_id, data)

    async def autocomplete(
        self, guild_id: int, user_id: int, command: str, focused: str, **values: Any
    ) -> list[dict]:
        parts = command.split()
        top = self._command(guild_id, parts[0])
        schema = top.get("options", [])
        resolved: dict = {}
        if len(parts) > 1:
            sub = next(o for o in schema if o["name"] == parts[1])
            options = [
                {
                    "type": sub["type"],
                    "name": sub["name"],
                    "options": self._options(guild_id, sub.get("options", []), values, resolved, focused),
                }
            ]
        else:
            options = self._options(guild_id, schema, values, resolved, focused)
        data = {
            "id": top["id"],
            "name": top["name"],
            "type": 1,
            "options": options,
            "guild_id": str(guild_id),
        }
        interaction = self._base_interaction(4, guild_id, user_id, None, data)
        await interaction.answered()
        assert interaction.callback is not None, f"the autocomplete answer was refused: {interaction.refused}"
        assert interaction.callback["type"] == 8, interaction.callback
        return interaction.callback["data"]["choices"]

    async def click(self, guild_id: int, user_id: int, message: dict, custom_id: str) -> Interaction:
        data = {"custom_id": custom_id, "component_type": 2}
        return self._base_interaction(3, guild_id, user_id, int(message["channel_id"]), data, message=message)

    async def message_command(self, guild_id: int, user_id: int, name: str, message: dict) -> Interaction:
        command = self._command(guild_id, name, kind=3)
        data = {
            "id": command["id"],
            "name": name,
            "type": 3,
            "target_id": message["id"],
            "guild_id": str(guild_id),
            "resolved": {"messages": {message["id"]: message}},
        }
        return self._base_interaction(2, guild_id, user_id, int(message["channel_id"]), data)

    # -- queries for assertions ----------------------------------------------------------------------

    def channel_messages(self, channel_id: int) -> list[dict]:
        return list(self.messages.get(channel_id, []))

    async def wait_for_message(
        self, channel_id: int, predicate: Callable[[dict], bool] = lambda m: True, timeout: float = 60
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages.get(channel_id, []):
                if predicate(message):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no matching message in channel {channel_id}: {self.messages.get(channel_id)}")

    def requests_to(self, fragment: str, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if fragment in r.path and (method is None or r.method == method)]

    # -- REST ----------------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["key"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    async def _read_body(self, request: web.Request) -> tuple[Any, dict[str, tuple[str, bytes]]]:
        files: dict[str, tuple[str, bytes]] = {}
        if request.content_type.startswith("multipart/"):
            body = None
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files[part.name] = (part.filename, bytes(await part.read()))
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        self.requests.append(
            Recorded(request.method, path, dict(request.query), body, files, time.monotonic())
        )
        for i, (fragment, times, retry_after) in enumerate(self._rate_limits):
            if fragment in path and times > 0:
                self._rate_limits[i] = (fragment, times - 1, retry_after)
                return json_response(
                    {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                    status=429,
                    headers={
                        "Retry-After": str(retry_after),
                        "X-RateLimit-Scope": "user",
                        "Via": "1.1 google",
                    },
                )  # discord.py retries only real Discord 429s
        for failure in self._failures:
            if failure[0] in path and failure[1] == request.method and failure[2] > 0:
                failure[2] -= 1
                return self._refused(request.method, path, json_response(failure[4], status=failure[3]))
        if self._token_expired(path):
            expired = json_response({"message": "Invalid Webhook Token", "code": 50027}, status=401)
            return self._refused(request.method, path, expired)
        handler = self._route(request.method, path)
        if handler is None:
            self.unknown_routes.append(f"{request.method} {path}")
            return json_response({"message": "404: Not Found", "code": 0}, status=404)
        try:
            result = await handler(path.strip("/").split("/"), body, files, request.query)
        except LookupError:
            result = json_response({"message": "Unknown Channel", "code": 10003}, status=404)
        if any(fragment in path for fragment in self._stalls):
            await self._unstalled.wait()  # Discord did it, but the answer never reaches the client
        if isinstance(result, web.Response) and result.status >= 400:
            return self._refused(request.method, path, result)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result) if result is not None else web.Response(status=204)

    def _token_expired(self, path: str) -> bool:
        """An interaction's token (follow-ups, its original response) works for 15 minutes only."""
        p = path.strip("/").split("/")
        interaction = self.interactions.get(p[2]) if len(p) > 2 and p[0] == "webhooks" else None
        return (
            interaction is not None
            and time.monotonic() - interaction.sent_at > self.interaction_token_lifetime
        )

    def _refused(self, method: str, path: str, response: web.Response) -> web.Response:
        """Keep every refusal, and show it on the interaction it belongs to (tests then fail fast)."""
        error = json.loads(response.body) if response.body else {}
        self.refusals.append((method, path, response.status, error))
        p = path.strip("/").split("/")
        token = p[2] if len(p) > 2 and p[0] in ("interactions", "webhooks") else None
        if token in self.interactions:
            self.interactions[token].refused.append(error)
            self.interactions[token].changed.set()
        return response

    def _route(self, method: str, path: str):
        p = path.strip("/").split("/")
        table = [
            ("GET", ["users", "@me"], self._me),
            ("GET", ["oauth2", "applications", "@me"], self._app),
            ("GET", ["applications", "@me"], self._app),
            ("GET", ["gateway", "bot"], self._gateway_bot),
            ("GET", ["gateway"], self._gateway_url),
            ("PUT", ["applications", "*", "commands"], self._sync),
            ("PUT", ["applications", "*", "guilds", "*", "commands"], self._sync),
            ("GET", ["applications", "*", "commands"], self._get_commands),
            ("POST", ["interactions", "*", "*", "callback"], self._callback),
            ("GET", ["webhooks", "*", "*", "messages", "@original"], self._get_original),
            ("PATCH", ["webhooks", "*", "*", "messages", "@original"], self._edit_original),
            ("DELETE", ["webhooks", "*", "*", "messages", "@original"], self._delete_original),
            ("PATCH", ["webhooks", "*", "*", "messages", "*"], self._edit_followup),
            ("POST", ["webhooks", "*", "*"], self._execute_webhook),
            ("POST", ["channels", "*", "messages"], self._create_message),
            ("PATCH", ["channels", "*", "messages", "*"], self._edit_message),
            ("GET", ["channels", "*", "messages"], self._history),
            ("GET", ["channels", "*", "webhooks"], self._channel_webhooks),
            ("POST", ["channels", "*", "webhooks"], self._create_webhook),
            ("GET", ["guilds", "*", "threads", "active"], self._active_threads),
            ("GET", ["channels", "*"], self._get_channel),
        ]
        for m, pattern, handler in table:
            if (
                m == method
                and len(pattern) == len(p)
                and all(a == "*" or a == b for a, b in zip(pattern, p, strict=False))
            ):
                return handler
        return None

    async def _me(self, *_):
        return self.bot_user

    async def _app(self, *_):
        return {
            "id": str(self.application_id),
            "name": "tweetalike",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.bot_user,
            "verify_key": "x",
            "flags": 0,
            "team": None,
        }

    async def _gateway_url(self, *_):
        return {"url": self.gateway_url}

    async def _gateway_bot(self, *_):
        shards = self.recommended_shards or max(1, math.ceil(len(self.guilds) / 1000))
        return {
            "url": self.gateway_url,
            "shards": shards,
            "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
        }

    async def _sync(self, p, body, files, query):
        scope = p[3] if len(p) == 5 else "global"
        synced = [
            {
                **command,
                "id": str(snowflake()),
                "application_id": str(self.application_id),
                "version": "1",
                "type": command.get("type", 1),
                "description": command.get("description", ""),
                "default_member_permissions": command.get("default_member_permissions"),
                **({"guild_id": scope} if scope != "global" else {}),
            }
            for command in body or []
        ]
        self.commands[scope] = synced
        return synced

    async def _get_commands(self, *_):
        return self.commands.get("global", [])

    def _message(self, channel_id: int, author: dict, body: dict, files: dict, **extra) -> dict:
        attachments = [
            {
                "id": str(snowflake()),
                "filename": name,
                "size": len(data),
                "url": f"{self.base}/cdn/x/{name}",
                "proxy_url": f"{self.base}/cdn/x/{name}",
                "data": data,
            }
            for name, data in files.values()
        ]
        return {
            "id": str(snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": body.get("content") or "",
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags") or 0,
            "components": body.get("components") or [],
            "allowed_mentions": body.get("allowed_mentions"),
            **extra,
        }

    def _store_message(
        self, channel_id: int, author: dict, body: dict, files: dict | None = None, **extra
    ) -> dict:
        message = self._message(channel_id, author, body, files or {}, **extra)
        self.messages.setdefault(channel_id, []).append(message)
        return message

    @staticmethod
    def _public(message: dict) -> dict:
        """A message as Discord returns it (our recorded file bytes stay on our side)."""
        public = {k: v for k, v in message.items() if k != "allowed_mentions"}
        public["attachments"] = [{k: v for k, v in a.items() if k != "data"} for a in message["attachments"]]
        return public

    async def _callback(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        interaction.callback_attempts += 1
        if interaction.callback is not None:
            return json_response(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, status=400
            )
        if time.monotonic() - interaction.sent_at > self.callback_deadline:
            return json_response({"message": "Unknown interaction", "code": 10062}, status=404)
        data = body.get("data") or {}
        errors: dict = {}
        if body["type"] == 8:  # autocomplete answer
            errors = choices_errors(data.get("choices"))
        elif body["type"] in (4, 7) and (message := message_errors(data)):  # a message, or its update
            errors = {"data": message}
        if errors:
            return invalid_form(errors)
        interaction.callback, interaction.callback_at = body, time.monotonic()
        response = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_loading": body["type"] == 5,
                "response_message_ephemeral": bool(data.get("flags", 0) & 64),
            }
        }
        if body["type"] in (4, 5):
            channel_id = self._channel_of(interaction)
            interaction.original = self._message(
                channel_id, self.bot_user, data, files, application_id=str(self.application_id)
            )
            if not interaction.ephemeral:
                self.messages.setdefault(channel_id, []).append(interaction.original)
            response["interaction"]["response_message_id"] = interaction.original["id"]
            response["resource"] = {"type": body["type"], "message": self._public(interaction.original)}
        interaction.changed.set()
        return response

    def _channel_of(self, interaction: Interaction) -> int:
        return interaction.channel_id

    async def _get_original(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        if interaction.callback is None:
            return unknown_webhook()  # the interaction's webhook exists once it is acknowledged
        if interaction.original is None:
            raise LookupError
        return self._public(interaction.original)

    async def _edit_original(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        if interaction.callback is None:
            return unknown_webhook()
        if errors := message_errors(body):
            return invalid_form(errors)
        if interaction.original is None:
            interaction.original = self._message(0, self.bot_user, {}, {})
        for key in ("content", "embeds", "components", "allowed_mentions", "flags"):
            if key in (body or {}):
                interaction.original[key] = body[key]
        if files:
            interaction.original["attachments"] = self._message(0, self.bot_user, {}, files)["attachments"]
        interaction.original["edited_timestamp"] = iso_now()
        interaction.changed.set()
        return self._public(interaction.original)

    async def _delete_original(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        interaction.original = None
        interaction.changed.set()
        return None

    async def _edit_followup(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        if errors := message_errors(body):
            return invalid_form(errors)
        for message in interaction.followups:
            if message["id"] == p[4]:
                message.update(
                    {k: v for k, v in (body or {}).items() if k in ("content", "embeds", "components")}
                )
                interaction.changed.set()
                return self._public(message)
        raise LookupError

    async def _execute_webhook(self, p, body, files, query):
        if p[2] in self.interactions:  # an interaction follow-up
            interaction = self.interactions[p[2]]
            if interaction.callback is None:
                return unknown_webhook()
            if errors := message_errors(body):
                return invalid_form(errors)
            message = self._message(0, self.bot_user, body or {}, files)
            interaction.followups.append(message)
            interaction.changed.set()
            return self._public(message)
        webhook = self.webhooks.get(int(p[1]))
        if webhook is None or webhook["token"] != p[2]:
            return unknown_webhook()
        if errors := message_errors(body, webhook=True):
            return invalid_form(errors)
        author = {
            "id": str(webhook["id"]),
            "username": (body or {}).get("username") or webhook["name"],
            "discriminator": "0000",
            "avatar": None,
            "bot": True,
        }
        message = self._store_message(
            int(webhook["channel_id"]),
            author,
            body or {},
            files,
            webhook_id=str(webhook["id"]),
            avatar_url=(body or {}).get("avatar_url"),
        )
        self._dispatch_message(message)
        return self._public(message)

    def _guild_of_channel(self, channel_id: int) -> int:
        for guild_id, guild in self.guilds.items():
            if channel_id in guild["channels"] or channel_id in guild["threads"]:
                return guild_id
        raise LookupError

    def _bot_can(self, channel_id: int, permission: int) -> bool:
        return bool(self.permissions(self._guild_of_channel(channel_id), self.application_id) & permission)

    async def _create_message(self, p, body, files, query):
        channel_id = int(p[1])
        self._guild_of_channel(channel_id)
        if not self._bot_can(channel_id, 1 << 11):
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        if errors := message_errors(body):
            return invalid_form(errors)
        nonce = (body or {}).get("nonce")
        if nonce and (body or {}).get("enforce_nonce") and (channel_id, nonce) in self.nonces:
            return self._public(self.nonces[(channel_id, nonce)])
        reference, referenced = (body or {}).get("message_reference"), None
        if reference is not None:
            referenced = next(
                (m for m in self.messages.get(channel_id, []) if m["id"] == str(reference.get("message_id"))),
                None,
            )
            if referenced is None and reference.get("fail_if_not_exists", True):
                return invalid_form(
                    {
                        "message_reference": {
                            "_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}]
                        }
                    }
                )
        extra: dict[str, Any] = {"nonce": nonce}
        if referenced is not None:
            extra["message_reference"] = {
                "type": 0,
                "message_id": referenced["id"],
                "channel_id": str(channel_id),
                "guild_id": str(self._guild_of_channel(channel_id)),
            }
            extra["referenced_message"] = self._public(referenced)
        message = self._store_message(channel_id, self.bot_user, body or {}, files, **extra)
        if referenced is not None:
            message["type"] = MESSAGE_REPLY
            replied = (body.get("allowed_mentions") or {}).get("replied_user", False)
            message["mentions"] = self._mentions("", referenced, replied)
        if nonce:
            self.nonces[(channel_id, nonce)] = message
        self._dispatch_message(message)
        return self._public(message)

    async def _edit_message(self, p, body, files, query):
        if errors := message_errors(body):
            return invalid_form(errors)
        for message in self.messages.get(int(p[1]), []):
            if message["id"] == p[3]:
                message.update(
                    {k: v for k, v in (body or {}).items() if k in ("content", "embeds", "components")}
                )
                message["edited_timestamp"] = iso_now()
                return self._public(message)
        raise LookupError

    async def _history(self, p, body, files, query):
        channel_id = int(p[1])
        self._guild_of_channel(channel_id)
        limit = min(100, int(query.get("limit", 50)))
        newest_first = list(reversed(self.messages.get(channel_id, [])))
        if "before" in query:
            newest_first = [m for m in newest_first if int(m["id"]) < int(query["before"])]
        if "after" in query:
            newest_first = [m for m in newest_first if int(m["id"]) > int(query["after"])]
        return [self._public(m) for m in newest_first[:limit]]

    async def _channel_webhooks(self, p, body, files, query):
        channel_id = int(p[1])
        if not self._bot_can(channel_id, MANAGE_WEBHOOKS):
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        return [w for w in self.webhooks.values() if int(w["channel_id"]) == channel_id]

    async def _create_webhook(self, p, body, files, query):
        channel_id = int(p[1])
        guild_id = self._guild_of_channel(channel_id)
        if not self._bot_can(channel_id, MANAGE_WEBHOOKS):
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        if errors := webhook_name_errors({}, ["name"], (body or {}).get("name")):
            return invalid_form(errors)
        if len([w for w in self.webhooks.values() if int(w["channel_id"]) == channel_id]) >= 10:
            return json_response(
                {"message": "Maximum number of webhooks reached (10)", "code": 30007}, status=400
            )
        return self.add_webhook(guild_id, channel_id, body.get("name", "hook"), owner=self.bot_user)

    def add_webhook(self, guild_id: int, channel_id: int, name: str, owner: dict | None = None) -> dict:
        webhook_id = snowflake()
        webhook = {
            "id": str(webhook_id),
            "type": 1,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "name": name,
            "avatar": None,
            "token": f"wtoken-{webhook_id}",
            "application_id": None,
            "user": owner or self.users[self.guilds[guild_id]["owner_id"]],
        }
        self.webhooks[webhook_id] = webhook
        return webhook

    async def _active_threads(self, p, body, files, query):
        guild = self.guilds[int(p[1])]
        return {"threads": list(guild["threads"].values()), "members": []}

    async def _get_channel(self, p, body, files, query):
        channel_id = int(p[1])
        guild = self.guilds[self._guild_of_channel(channel_id)]
        return guild["channels"].get(channel_id) or guild["threads"][channel_id]
