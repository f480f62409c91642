"""Discord data packages as Discord makes them, for the tests (core/ingest/datapackage.py, /voice train).

A package (User Settings → Data & Privacy → Request Data) is a zip with `Account/`, `Activity/`,
`Servers/`... and the member's messages: `Messages/index.json` (channel id → a description, or null),
and per channel `c<id>/channel.json` (id, type, name, guild {id, name}; DMs have recipients and no
guild) with `messages.json` (packages since 2023: a list of {ID, Timestamp, Contents, Attachments}).
Older packages have a lower-case `messages/` folder and `messages.csv` with the same columns.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from itertools import count

from tests.conftest import tiny_tweets

SECRET_DM = "SECRET words from a DM that must never be read"
SECRET_GROUP = "SECRET words from a group DM that must never be read"
OTHER_SERVER = "OTHERSERVER words written in a channel of another server"
COMMANDS = [
    "!rank",
    "t!daily",
    "/play never gonna give",
    "?help me please bot",
    "pls rob everyone now",
    ".skip",
]
LINK_SHARES = ["https://youtu.be/dQw4w9WgXcQ", "look https://example.com/a", "www.example.org lol"]
SHORT = ["ok", "lol", "same", "<:pepe:123456789012345678>"]

_ids = count(800_000_000_000_000_000)
# Recent packages name channel types; older ones give Discord's numbers.
TYPE_NAMES = {
    0: "GUILD_TEXT",
    1: "DM",
    2: "GUILD_VOICE",
    3: "GROUP_DM",
    5: "GUILD_ANNOUNCEMENT",
    11: "PUBLIC_THREAD",
}


@dataclass
class PackageChannel:
    type: int  # 0 text, 1 DM, 3 group DM, 11 public thread...
    messages: list[str]
    name: str | None = None
    guild: tuple[int, str] | None = None
    id: int = field(default_factory=lambda: next(_ids))

    def channel_json(self, type_names: bool = False) -> dict:
        data: dict = {"id": str(self.id), "type": TYPE_NAMES[self.type] if type_names else self.type}
        if self.name is not None:
            data["name"] = self.name
        if self.guild is not None:
            data["guild"] = {"id": str(self.guild[0]), "name": self.guild[1]}
        else:
            data["recipients"] = ["111111111111111111", "222222222222222222"]
        return data

    def index_entry(self) -> str | None:
        if self.type == 1:
            return "Direct Message with someone#0"
        return f"{self.name} in {self.guild[1]}" if self.guild else self.name


def server_channel(guild_id: int, name: str, messages: list[str], *, kind: int = 0) -> PackageChannel:
    return PackageChannel(type=kind, messages=messages, name=name, guild=(guild_id, f"server {guild_id}"))


def private_channels() -> list[PackageChannel]:
    """A DM and a group DM, each with text that must never reach a persona."""
    return [
        PackageChannel(type=1, messages=[f"{SECRET_DM} number {i}" for i in range(50)]),
        PackageChannel(type=3, name="the group", messages=[f"{SECRET_GROUP} number {i}" for i in range(50)]),
    ]


def member_channels(guild_id: int, other_guild: int | None = None) -> list[PackageChannel]:
    """What a member's package holds: their posts in two channels and a thread of a server, with
    commands, link shares, short lines and Discord markup mixed in; DMs; maybe another server."""
    lines = tiny_tweets()
    noise = COMMANDS + LINK_SHARES + SHORT
    general = [
        f"<@{123456789012345678}> {line}" if i % 7 == 0 else line for i, line in enumerate(lines[:200])
    ]
    channels = [
        server_channel(guild_id, "general", general + noise),
        server_channel(guild_id, "random", [f"{line} <:pog:998877665544332211>" for line in lines[200:330]]),
        server_channel(guild_id, "a thread", lines[330:], kind=11),
        *private_channels(),
    ]
    if other_guild is not None:
        channels.append(server_channel(other_guild, "chat", [f"{OTHER_SERVER} {i}" for i in range(80)]))
    return channels


def build_package(
    channels: list[PackageChannel],
    *,
    layout: str = "json",
    top: str = "",
    owner_id: int | None = None,
    messages_only: bool = False,
    type_names: bool = False,
) -> bytes:
    """The zip: `layout` json (Messages/, messages.json) or csv (messages/, messages.csv); `top` a
    folder everything is under; `messages_only` the messages folder zipped alone; `type_names`
    channel types by name ("DM", "GUILD_TEXT") instead of number."""
    folder = top + ("Messages/" if layout == "json" else "messages/")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        index = {str(c.id): c.index_entry() for c in channels}
        archive.writestr(folder + "index.json", json.dumps(index, indent=2))
        for channel in channels:
            base = f"{folder}c{channel.id}/"
            archive.writestr(base + "channel.json", json.dumps(channel.channel_json(type_names)))
            if layout == "json":
                archive.writestr(base + "messages.json", json.dumps(_json_rows(channel.messages), indent=2))
            else:
                archive.writestr(base + "messages.csv", _csv_rows(channel.messages))
        if not messages_only:
            _other_folders(archive, top, owner_id)
    return out.getvalue()


def _json_rows(messages: list[str]) -> list[dict]:
    return [
        {"ID": next(_ids), "Timestamp": f"2024-03-01 12:{i % 60:02d}:00", "Contents": text, "Attachments": ""}
        for i, text in enumerate(messages)
    ]


def _csv_rows(messages: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["ID", "Timestamp", "Contents", "Attachments"])
    for i, text in enumerate(messages):
        writer.writerow([next(_ids), f"2020-05-01 12:{i % 60:02d}:00.000000+00:00", text, ""])
    return out.getvalue()


def _other_folders(archive: zipfile.ZipFile, top: str, owner_id: int | None) -> None:
    """The rest of a package, which the bot never needs (only Account/user.json's id is read)."""
    user = {"id": str(owner_id or 1), "username": "member", "email": "member@example.com", "phone": None}
    archive.writestr(top + "Account/user.json", json.dumps(user))
    archive.writestr(top + "Servers/index.json", json.dumps({"1": "a server"}))
    archive.writestr(top + "Activity/analytics/events-2024-00000-of-00001.json", '{"event_type": "x"}\n' * 50)
    archive.writestr(top + "README.txt", "Your Discord data package.\n")
