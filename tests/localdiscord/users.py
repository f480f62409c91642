"""Simulated members: what tests make users do (slash commands, autocomplete, clicks, message
commands, messages in channels) and the Interaction record of what came back."""

from __future__ import annotations

import asyncio
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .limits import (
    ALL_PERMISSIONS,
    MESSAGE_DEFAULT,
    MESSAGE_REPLY,
    MESSAGE_USER_JOIN,
    OPTION_TYPES,
    SYSTEM_MESSAGE_TYPES,
    snowflake,
)

if TYPE_CHECKING:  # the server mixes this class in
    from .server import LocalDiscord


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


class SimulatedUsers:
    """What tests make members do (state lives on LocalDiscord)."""

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
