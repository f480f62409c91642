"""The fake Discord's world: users, guilds, roles, channels, threads, webhooks and messages.

Everything is kept as small dataclasses and turned into Discord-shaped JSON (snowflakes as
strings, ISO timestamps) only at the edge, in the ``*_payload`` functions, so tests can read and
change the world with plain Python. Permissions are computed the way Discord does (owner, roles,
administrator, then channel overwrites for @everyone, roles and the member), because both the
interaction payloads (``member.permissions``, ``app_permissions``) and the REST permission checks
depend on them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
KICK_MEMBERS = 1 << 1
BAN_MEMBERS = 1 << 2
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
SEND_TTS_MESSAGES = 1 << 12
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
MANAGE_ROLES = 1 << 28
MANAGE_WEBHOOKS = 1 << 29
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1

# What @everyone can do in a fresh server, roughly Discord's default.
DEFAULT_EVERYONE = (CREATE_INSTANT_INVITE | ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS
                    | ATTACH_FILES | READ_MESSAGE_HISTORY | USE_EXTERNAL_EMOJIS | CONNECT | SPEAK
                    | USE_APPLICATION_COMMANDS | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS)
# What the bot's managed role gets unless a test says otherwise: everything but administrator,
# so channel overwrites still apply to it (an administrator ignores them).
DEFAULT_BOT_PERMISSIONS = ALL_PERMISSIONS & ~ADMINISTRATOR

# Channel types.
GUILD_TEXT, DM, GUILD_VOICE, GUILD_CATEGORY, GUILD_NEWS = 0, 1, 2, 4, 5
PUBLIC_THREAD, PRIVATE_THREAD = 11, 12
THREAD_TYPES = (10, PUBLIC_THREAD, PRIVATE_THREAD)

# Message flags.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7


def iso(at: float | None = None) -> str:
    """An ISO-8601 timestamp as Discord writes them."""
    return datetime.fromtimestamp(time.time() if at is None else at, timezone.utc).isoformat()


class Snowflakes:
    """Issues unique, increasing, realistic snowflake ids (timestamp in the high bits).

    Ids made "now" always increase, so ordering by id is ordering by creation, which message
    history pagination relies on. Ids for the past (``at=``) get the timestamp of that moment.
    """

    def __init__(self) -> None:
        self._last = 0
        self._counter = 0
        self._issued: set[int] = set()

    def __call__(self, at: float | None = None) -> int:
        if at is None:
            value = max(self._ms(time.time()) << 22, self._last + 1)
            self._last = value
        else:
            value = (self._ms(at) << 22) | (self._counter & 0x3FFFFF)
            self._counter += 1
            while value in self._issued:
                value += 1
        self._issued.add(value)
        return value

    @staticmethod
    def _ms(at: float) -> int:
        return int(at * 1000) - DISCORD_EPOCH_MS


@dataclass
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 1
    mentionable: bool = False
    managed: bool = False
    color: int = 0


@dataclass
class Overwrite:
    """A channel permission overwrite; ``kind`` 0 targets a role, 1 a member."""

    id: int
    kind: int
    allow: int = 0
    deny: int = 0


@dataclass
class Member:
    user_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso)


@dataclass
class Channel:
    id: int
    guild_id: int
    name: str
    type: int = GUILD_TEXT
    position: int = 0
    nsfw: bool = False
    topic: str | None = None
    parent_id: int | None = None
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    # Threads only.
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    bot_role_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    premium_tier: int = 0
    locale: str = "en-US"


@dataclass
class Webhook:
    id: int
    guild_id: int
    channel_id: int
    name: str
    token: str
    creator_id: int
    application_id: int | None = None
    avatar: str | None = None


@dataclass
class StoredFile:
    """One uploaded or attached file: what Discord stores and serves from its CDN."""

    attachment_id: int
    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


@dataclass
class Message:
    """A message as the fake Discord stores it.

    ``payload`` is exactly what Discord would return (and what discord.py parses); the other
    fields are things only the server knows and tests want to assert on: the raw
    ``allowed_mentions`` the sender asked for, which users/roles would actually be pinged, the
    file bytes, whether it is ephemeral, and the bodies of every edit.
    """

    payload: dict[str, Any]
    allowed_mentions: dict | None = None
    ephemeral: bool = False
    files: dict[int, StoredFile] = field(default_factory=dict)
    edits: list[dict] = field(default_factory=list)
    deleted: bool = False
    pinged_users: list[int] = field(default_factory=list)
    pinged_roles: list[int] = field(default_factory=list)
    pinged_everyone: bool = False

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])

    @property
    def author_id(self) -> int:
        return int(self.payload["author"]["id"])

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""

    @property
    def embeds(self) -> list[dict]:
        return self.payload.get("embeds") or []

    @property
    def components(self) -> list[dict]:
        return self.payload.get("components") or []

    @property
    def attachments(self) -> list[dict]:
        return self.payload.get("attachments") or []

    @property
    def flags(self) -> int:
        return self.payload.get("flags") or 0

    @property
    def loading(self) -> bool:
        """True while this is a deferred "Bot is thinking..." placeholder."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def file_bytes(self) -> dict[str, bytes]:
        """Attached files by filename (the bytes the sender uploaded)."""
        return {f.filename: f.data for f in self.files.values()}

    @property
    def text(self) -> str:
        """Everything a reader sees as text: content, embed titles, descriptions and fields."""
        parts = [self.content]
        for embed in self.embeds:
            parts += [embed.get("title") or "", embed.get("description") or ""]
            parts += [f"{f.get('name', '')}: {f.get('value', '')}" for f in embed.get("fields") or []]
            parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(p for p in parts if p)

    def custom_ids(self) -> list[str]:
        """Every component custom_id on the message (buttons and selects, any nesting)."""
        return [c["custom_id"] for c in walk_components(self.components) if "custom_id" in c]

    def __repr__(self) -> str:
        return f"<Message id={self.id} channel={self.channel_id} content={self.content[:60]!r}>"


def walk_components(components: list[dict]):
    """Yields every component, descending into action rows, containers, sections and labels."""
    for component in components or []:
        yield component
        yield from walk_components(component.get("components") or [])
        if isinstance(component.get("component"), dict):
            yield from walk_components([component["component"]])
        if isinstance(component.get("accessory"), dict):
            yield from walk_components([component["accessory"]])


# -- permissions ------------------------------------------------------------------------------


def base_permissions(guild: Guild, user_id: int) -> int:
    """Guild-level permissions: owner and administrators get everything."""
    if user_id == guild.owner_id:
        return ALL_PERMISSIONS
    member = guild.members.get(user_id)
    if member is None:
        return 0
    value = guild.roles[guild.id].permissions
    for role_id in member.roles:
        role = guild.roles.get(role_id)
        if role is not None:
            value |= role.permissions
    return ALL_PERMISSIONS if value & ADMINISTRATOR else value


def channel_permissions(guild: Guild, channel: Channel | None, user_id: int) -> int:
    """Discord's algorithm: base permissions, then @everyone, role and member overwrites.

    Threads use their parent's overwrites. Without View Channel nothing is allowed, and
    without Send Messages the send-dependent permissions are implicitly denied too.
    """
    value = base_permissions(guild, user_id)
    if value == ALL_PERMISSIONS or channel is None:
        return value
    if channel.is_thread and channel.parent_id in guild.channels:
        channel = guild.channels[channel.parent_id]
    everyone = channel.overwrites.get(guild.id)
    if everyone is not None:
        value = (value & ~everyone.deny) | everyone.allow
    member = guild.members.get(user_id)
    role_ids = set(member.roles) if member else set()
    allow = deny = 0
    for overwrite in channel.overwrites.values():
        if overwrite.kind == 0 and overwrite.id in role_ids:
            allow |= overwrite.allow
            deny |= overwrite.deny
    value = (value & ~deny) | allow
    own = channel.overwrites.get(user_id)
    if own is not None and own.kind == 1:
        value = (value & ~own.deny) | own.allow
    if not value & VIEW_CHANNEL:
        return 0
    if not value & SEND_MESSAGES:
        value &= ~(SEND_TTS_MESSAGES | MENTION_EVERYONE | EMBED_LINKS | ATTACH_FILES)
    return value


# -- payloads ---------------------------------------------------------------------------------


def user_payload(user: User) -> dict:
    return {"id": str(user.id), "username": user.username, "discriminator": "0", "global_name": user.global_name,
            "avatar": user.avatar, "bot": user.bot, "system": False, "public_flags": 0}


def role_payload(role: Role) -> dict:
    return {"id": str(role.id), "name": role.name, "permissions": str(role.permissions), "position": role.position,
            "color": role.color, "colors": {"primary_color": role.color, "secondary_color": None,
                                            "tertiary_color": None},
            "hoist": False, "managed": role.managed, "mentionable": role.mentionable, "icon": None,
            "unicode_emoji": None, "flags": 0}


def member_payload(member: Member, user: User | None = None, permissions: int | None = None) -> dict:
    """A guild member; with ``user`` the nested user object, with ``permissions`` as in interactions."""
    payload: dict[str, Any] = {
        "roles": [str(r) for r in member.roles], "nick": member.nick, "avatar": None, "joined_at": member.joined_at,
        "premium_since": None, "deaf": False, "mute": False, "flags": 0, "pending": False,
        "communication_disabled_until": None,
    }
    if user is not None:
        payload["user"] = user_payload(user)
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


def overwrite_payload(overwrite: Overwrite) -> dict:
    return {"id": str(overwrite.id), "type": overwrite.kind, "allow": str(overwrite.allow),
            "deny": str(overwrite.deny)}


def channel_payload(channel: Channel, last_message_id: int | None = None) -> dict:
    """A guild channel or thread as Discord returns it from REST and in GUILD_CREATE."""
    payload: dict[str, Any] = {
        "id": str(channel.id), "type": channel.type, "guild_id": str(channel.guild_id), "name": channel.name,
        "last_message_id": str(last_message_id) if last_message_id else None, "rate_limit_per_user": 0,
        "flags": 0, "parent_id": str(channel.parent_id) if channel.parent_id else None, "nsfw": channel.nsfw,
    }
    if channel.is_thread:
        payload.update({
            "owner_id": str(channel.owner_id or 0), "message_count": 0, "member_count": 1, "total_message_sent": 0,
            "thread_metadata": {"archived": channel.archived, "locked": channel.locked, "auto_archive_duration": 1440,
                                "archive_timestamp": iso(), "invitable": True},
        })
        return payload
    payload.update({"position": channel.position, "topic": channel.topic,
                    "permission_overwrites": [overwrite_payload(o) for o in channel.overwrites.values()]})
    if channel.type == GUILD_VOICE:
        payload.update({"bitrate": 64000, "user_limit": 0, "rtc_region": None, "video_quality_mode": 1})
    return payload


def guild_payload(guild: Guild, users: dict[int, User], members: list[int], last_ids: dict[int, int]) -> dict:
    """The full GUILD_CREATE payload: roles, channels, active threads and the given members."""
    text_channels = [c for c in guild.channels.values() if not c.is_thread]
    threads = [c for c in guild.channels.values() if c.is_thread and not c.archived]
    first_text = next((c.id for c in text_channels if c.type == GUILD_TEXT), None)
    return {
        "id": str(guild.id), "name": guild.name, "owner_id": str(guild.owner_id), "icon": None, "splash": None,
        "banner": None, "description": None, "unavailable": False, "large": False,
        "member_count": len(guild.members), "joined_at": iso(), "premium_tier": guild.premium_tier,
        "premium_subscription_count": 0, "preferred_locale": guild.locale, "features": [],
        "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
        "mfa_level": 0, "nsfw_level": 0, "afk_timeout": 300, "afk_channel_id": None,
        "system_channel_id": str(first_text) if first_text else None, "system_channel_flags": 0,
        "rules_channel_id": None, "public_updates_channel_id": None, "application_id": None,
        "roles": [role_payload(r) for r in guild.roles.values()],
        "channels": [channel_payload(c, last_ids.get(c.id)) for c in text_channels],
        "threads": [channel_payload(c, last_ids.get(c.id)) for c in threads],
        "members": [member_payload(guild.members[uid], users[uid]) for uid in members],
        "emojis": [], "stickers": [], "voice_states": [], "presences": [], "stage_instances": [],
        "guild_scheduled_events": [], "soundboard_sounds": [],
    }


def webhook_payload(webhook: Webhook, creator: User, *, with_token: bool = True) -> dict:
    return {"id": str(webhook.id), "type": 1, "guild_id": str(webhook.guild_id),
            "channel_id": str(webhook.channel_id), "name": webhook.name, "avatar": webhook.avatar,
            "token": webhook.token if with_token else None,
            "application_id": str(webhook.application_id) if webhook.application_id else None,
            "user": user_payload(creator)}
