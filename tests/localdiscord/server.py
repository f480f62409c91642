"""LocalDiscord: the server's state (users, guilds, channels, roles, permissions), its lifecycle, and
the queries tests assert with; the gateway, REST routes and simulated users are mixed in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from .gateway import Gateway, GatewaySession, shard_of
from .limits import (
    ALL_PERMISSIONS,
    BASIC_MEMBER,
    CALLBACK_DEADLINE_S,
    MESSAGE_CONTENT_INTENT,
    iso_now,
    snowflake,
)
from .rest import Recorded, RestApi
from .users import Interaction, SimulatedUsers


class LocalDiscord(Gateway, SimulatedUsers, RestApi):
    """A Discord-compatible server on 127.0.0.1 (see the package docstring for what it speaks)."""

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
