"""The gateway websocket: HELLO, IDENTIFY/READY, heartbeats, RESUME, dispatches.

Frames go out through one queue per connection, written by one task, so dispatches made from
plain (non-async) test code keep their order and their sequence numbers. Every dispatch is also
appended to its session's log, so a RESUME after a dropped connection replays what was missed,
the way Discord does. Frames are plain TEXT JSON: discord.py asks for ``compress=zlib-stream``
but decodes text frames as JSON directly, so compression is ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger("fakediscord.gateway")

# Opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

# Intents.
GUILDS, GUILD_MEMBERS, GUILD_PRESENCES = 1 << 0, 1 << 1, 1 << 8
GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGES, MESSAGE_CONTENT = 1 << 9, 1 << 10, 1 << 12, 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT

# Which intent an event needs; events not listed (READY, RESUMED, INTERACTION_CREATE...) always come.
EVENT_INTENTS = {
    "GUILD_CREATE": GUILDS, "GUILD_UPDATE": GUILDS, "GUILD_DELETE": GUILDS,
    "GUILD_ROLE_CREATE": GUILDS, "GUILD_ROLE_UPDATE": GUILDS, "GUILD_ROLE_DELETE": GUILDS,
    "CHANNEL_CREATE": GUILDS, "CHANNEL_UPDATE": GUILDS, "CHANNEL_DELETE": GUILDS,
    "THREAD_CREATE": GUILDS, "THREAD_UPDATE": GUILDS, "THREAD_DELETE": GUILDS, "THREAD_LIST_SYNC": GUILDS,
    "GUILD_MEMBER_ADD": GUILD_MEMBERS, "GUILD_MEMBER_UPDATE": GUILD_MEMBERS, "GUILD_MEMBER_REMOVE": GUILD_MEMBERS,
    "MESSAGE_CREATE": GUILD_MESSAGES, "MESSAGE_UPDATE": GUILD_MESSAGES, "MESSAGE_DELETE": GUILD_MESSAGES,
    "MESSAGE_REACTION_ADD": GUILD_MESSAGE_REACTIONS, "MESSAGE_REACTION_REMOVE": GUILD_MESSAGE_REACTIONS,
}

OnSent = Callable[[float], None]


@dataclass
class Connection:
    """One websocket. Frames are queued and written in order by ``writer``."""

    ws: web.WebSocketResponse
    query: dict[str, str]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    session: "Session | None" = None
    writer: asyncio.Task | None = None

    def send(self, frame: dict, on_sent: OnSent | None = None) -> None:
        self.queue.put_nowait((frame, on_sent))

    async def write_forever(self) -> None:
        while True:
            frame, on_sent = await self.queue.get()
            try:
                if not self.ws.closed:  # frames for a closed socket stay in the session log
                    await self.ws.send_str(json.dumps(frame))
                    if on_sent is not None:
                        on_sent(time.monotonic())
            except (ConnectionError, RuntimeError):
                pass
            finally:
                self.queue.task_done()


@dataclass
class Session:
    """A gateway session: survives a dropped connection until it is resumed or replaced."""

    id: str
    intents: int
    identify: dict
    seq: int = 0
    log: list[tuple[int, dict, OnSent | None]] = field(default_factory=list)
    connection: Connection | None = None

    def wants(self, event: str) -> bool:
        needed = EVENT_INTENTS.get(event)
        return needed is None or bool(self.intents & needed)


class Gateway:
    """Serves ``/gateway`` for one :class:`FakeDiscord`; tests reach it through the server."""

    def __init__(self, server: "FakeDiscord", heartbeat_interval_ms: int, allowed_privileged_intents: int) -> None:
        self.server = server
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.allowed_privileged_intents = allowed_privileged_intents
        self.connections: list[Connection] = []
        self.sessions: list[Session] = []
        self.heartbeats: list[float] = []
        self.identifies: list[dict] = []
        self.resumes: list[dict] = []
        self.received: list[dict] = []  # every frame the client sent, heartbeats included
        self.connect_count = 0
        self.ready_count = 0  # READY + every GUILD_CREATE written
        self.closed_by_server: list[int] = []

    # -- websocket handler ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, heartbeat=None, autoping=True)
        await ws.prepare(request)
        connection = Connection(ws=ws, query=dict(request.query))
        connection.writer = asyncio.create_task(connection.write_forever(), name="fakediscord-gateway-writer")
        self.connections.append(connection)
        self.connect_count += 1
        self.server.changed()
        connection.send({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                await self._receive(connection, json.loads(message.data))
        finally:
            await self._forget(connection)
        return ws

    async def _forget(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
        if connection.session is not None and connection.session.connection is connection:
            connection.session.connection = None
        if connection.writer is not None:
            connection.writer.cancel()
        self.server.changed()

    async def _receive(self, connection: Connection, frame: dict) -> None:
        self.received.append(frame)
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self.heartbeats.append(time.monotonic())
            connection.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(connection, data or {})
        elif op == RESUME:
            await self._resume(connection, data or {})
        elif op == REQUEST_MEMBERS:
            self._members_chunk(connection, data or {})
        elif connection.session is None and op not in (PRESENCE, VOICE_STATE):
            await self._close(connection, 4003)  # Not authenticated
        self.server.changed()

    async def _identify(self, connection: Connection, data: dict) -> None:
        if connection.session is not None:
            await self._close(connection, 4005)  # Already authenticated
            return
        if data.get("token") != self.server.token:
            await self._close(connection, 4004)  # Authentication failed
            return
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await self._close(connection, 4014)  # Disallowed intent(s)
            return
        self.identifies.append(data)
        # A new identify replaces the sessions nobody is connected to any more.
        self.sessions = [s for s in self.sessions if s.connection is not None]
        session = Session(id=secrets.token_hex(16), intents=intents, identify=data, connection=connection)
        connection.session = session
        self.sessions.append(session)
        events = [("READY", self.server._ready_payload(session))]
        events += [("GUILD_CREATE", self.server._guild_create_payload(guild_id, session))
                   for guild_id in self.server.guilds]
        for index, (event, payload) in enumerate(events):
            last = index == len(events) - 1
            self.send_event(session, event, payload, self._burst_sent if last else None)

    def _burst_sent(self, _: float) -> None:
        """Counts a READY + GUILD_CREATE burst once its last frame is on the wire."""
        self.ready_count += 1
        self.server.changed()

    async def _resume(self, connection: Connection, data: dict) -> None:
        self.resumes.append(data)
        session = next((s for s in self.sessions if s.id == data.get("session_id")), None)
        if session is None or data.get("token") != self.server.token:
            connection.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        if session.connection is not None and session.connection is not connection:
            await self._close(session.connection, 4000)
        session.connection = connection
        connection.session = session
        last_seen = int(data.get("seq") or 0)
        for seq, frame, on_sent in session.log:
            if seq > last_seen:
                connection.send(frame, on_sent)
        self.send_event(session, "RESUMED", {})

    def _members_chunk(self, connection: Connection, data: dict) -> None:
        session = connection.session
        if session is None:
            return
        guild_id = int(data.get("guild_id", 0))
        members = self.server._member_payloads(guild_id, visible_to=session, all_members=True)
        user_ids = {str(u) for u in (data.get("user_ids") or [])}
        if user_ids:
            members = [m for m in members if m["user"]["id"] in user_ids]
        self.send_event(session, "GUILD_MEMBERS_CHUNK", {
            "guild_id": str(guild_id), "members": members, "chunk_index": 0, "chunk_count": 1,
            "not_found": [], "nonce": data.get("nonce"),
        })

    # -- sending -------------------------------------------------------------------------------

    def send_event(self, session: Session, event: str, data: Any, on_sent: OnSent | None = None) -> None:
        """Sends one dispatch to one session (logged for RESUME even while disconnected)."""
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.log.append((session.seq, frame, on_sent))
        if session.connection is not None:
            session.connection.send(frame, on_sent)

    def dispatch(self, event: str, make_data: Callable[[Session], Any] | Any,
                 on_sent: OnSent | None = None) -> int:
        """Sends an event to every live session whose intents want it; returns how many.

        ``make_data`` may be a function of the session, for payloads that depend on intents
        (message content, member lists).
        """
        count = 0
        for session in self.sessions:
            if not session.wants(event):
                continue
            data = make_data(session) if callable(make_data) else make_data
            self.send_event(session, event, data, on_sent)
            count += 1
        return count

    async def drain(self, timeout: float = 5.0) -> None:
        """Waits until every queued frame has been written to its socket."""
        await asyncio.wait_for(asyncio.gather(*(c.queue.join() for c in list(self.connections))), timeout)

    # -- faults --------------------------------------------------------------------------------

    async def _close(self, connection: Connection, code: int) -> None:
        self.closed_by_server.append(code)
        try:
            await asyncio.wait_for(connection.ws.close(code=code), 5)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            self._abort(connection)

    @staticmethod
    def _abort(connection: Connection) -> None:
        transport = connection.ws._req.transport if connection.ws._req is not None else None  # noqa: SLF001
        if transport is not None:
            transport.abort()

    async def drop(self, code: int = 4000, abort: bool = False) -> int:
        """Closes every connection (with a close frame, or abruptly with ``abort``)."""
        connections = list(self.connections)
        for connection in connections:
            if abort:
                self.closed_by_server.append(1006)
                self._abort(connection)
            else:
                await self._close(connection, code)
        return len(connections)

    def send_op(self, op: int, data: Any = None) -> None:
        """Sends a raw opcode (RECONNECT, INVALID_SESSION, HEARTBEAT) to every connection."""
        for connection in self.connections:
            connection.send({"op": op, "d": data, "s": None, "t": None})

    async def close_all(self) -> None:
        for connection in list(self.connections):
            await self._close(connection, 1001)
