"""The local server's gateway websocket: HELLO/IDENTIFY/RESUME, heartbeats, sharding, intents, and
the events each session receives (MESSAGE_CREATE as Discord filters it)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .limits import GUILD_MESSAGES_INTENT, MESSAGE_CONTENT_INTENT, PRIVILEGED_INTENTS, iso_now, snowflake


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


class Gateway:
    """The gateway half of LocalDiscord (state lives on LocalDiscord)."""

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

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection (discord.py should reconnect and RESUME)."""
        for ws in list(self._sockets):
            await ws.close(code=code)
