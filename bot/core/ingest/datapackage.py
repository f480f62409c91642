"""A member's own Discord data package: their server messages, read like a tweet archive.

Every Discord user can download their data (User Settings → Data & Privacy → Request Data). The
package is a zip with a ``Messages/`` folder (``messages/`` in older packages, sometimes under one
top folder); the member may also zip that folder alone. In it, ``index.json`` names the channels
and each channel has a folder, ``c<channel id>/`` (``<channel id>/`` in the oldest packages), with

  * ``channel.json``: ``{"id", "type", "name", "guild": {"id", "name"}}`` (no guild for DMs);
  * ``messages.json`` (newer packages): ``[{"ID", "Timestamp", "Contents", "Attachments"}, ...]``,
    or ``messages.csv`` (older packages) with the same columns.

Only the member's own messages are in it. This reads it in memory, capped like a tweet archive
(``MAX_INPUT_BYTES`` for the zip, ``MAX_ARCHIVE_BYTES`` uncompressed), never extracted, and keeps
server-channel messages only: a DM or group DM channel (types 1 and 3, or any channel without a
guild) is skipped without its messages being opened. Optionally only one server's channels are
kept. Commands for bots (``/``, ``!``, ``?``, ``.``, ``$``... and bot prefixes such as ``t!``),
link shares and short lines are dropped, each counted, before huggingtweets' own cleaning.

Discord's Developer Policy forbids training on message content read through the API; a member's
own package, handed over by the member, is not that (README: "Why the bot does not read messages").
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from bot.core.ingest.archive import MAX_ARCHIVE_BYTES, unsafe_name
from bot.core.ingest.cleaning import MAX_POST_CHARS, IngestStats, clean_posts, is_short
from bot.core.ingest.rawposts import IngestError, RawPost, decode_text
from bot.core.ingest.result import IngestResult, finish_result

MAX_CHANNELS = 20_000  # channel folders read from one package
MAX_SMALL_FILE = 1 << 20  # channel.json, index.json, account/user.json: a few hundred bytes in practice
PRIVATE_TYPES = {1, 3, "1", "3", "DM", "GROUP_DM"}  # DM, group DM (numbers, or names in some exports)
FORMAT = "discord-package"

# Commands typed for bots: a one-character prefix right before the command word ("!rank", "/play",
# ".skip"; not "...anyway" or "?? really"), or a letter prefix ("t!daily", "m!play", "pls rob") that
# bots such as Tatsu, Dank Memer or OwO answer to.
_COMMAND = re.compile(r"[/!?.$%>+;&=~,-][A-Za-z]")
_BOT_PREFIX = re.compile(r"[A-Za-z]{1,4}[!$%;>][A-Za-z]|(?:pls|owo|uwu)\s+\w", re.IGNORECASE)
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+|\bdiscord\.gg/\S+", re.IGNORECASE)
# Discord markup that means nothing as text: mentions, channel links, timestamps; custom emoji kept by name.
_MENTION = re.compile(r"<(?:@[!&]?|#)\d+>|<t:-?\d+(?::[A-Za-z])?>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w{1,32}):\d+>")
_CHANNEL_DIR = re.compile(r"(?P<root>(?:[^/]+/){0,2})c?(?P<id>\d{1,20})/channel\.json", re.IGNORECASE)
_ACCOUNT_USER = re.compile(r"(?:[^/]+/)?account/user\.json", re.IGNORECASE)


@dataclass
class PackageStats(IngestStats):
    """The data table's figures plus the package's own drops (rows shown only when there were some)."""

    commands: int = 0  # typed for a bot
    links: int = 0  # a link shared with a few words


@dataclass
class Channel:
    id: int
    folder: str  # "Messages/c123/"
    guild_id: int | None
    private: bool


def _seekable(data: bytes | BinaryIO) -> BinaryIO:
    """The package as zipfile reads it: bytes in memory, or already a seekable file (a big package on
    disk, or one read by HTTP range requests through core/ingest/download.py)."""
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data


def is_data_package(data: bytes | BinaryIO) -> bool:
    """A zip holding a Discord package's channel folders (ingest calls this on every zip)."""
    try:
        with zipfile.ZipFile(_seekable(data)) as archive:
            return any(_CHANNEL_DIR.fullmatch(name) for name in archive.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError):
        return False


def read_package(
    data: bytes | BinaryIO,
    *,
    guild_id: int | None = None,
    min_chars: int,
    warn_chars: int,
) -> IngestResult:
    """Read, filter and clean a package's server messages; the same IngestResult as a tweet archive,
    with `owner_id` set when the package says whose it is (its account/user.json)."""
    try:
        archive = zipfile.ZipFile(_seekable(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError):
        raise IngestError(
            "This .zip file is damaged or incomplete and cannot be opened. Download your data package again."
        ) from None
    with archive:
        budget = _Budget(MAX_ARCHIVE_BYTES)
        channels = _channels(archive, budget)
        kept, notes = _pick_channels(channels, guild_id)
        _check_declared(archive, kept)
        tweets, stats = _server_messages(archive, kept, budget)
        owner = _owner(archive, budget)
    result = finish_result(tweets, stats, FORMAT, notes, min_chars=min_chars, warn_chars=warn_chars)
    result.owner_id = owner
    return result


class _Budget:
    """Uncompressed bytes still allowed across every member read (zip bombs, huge packages)."""

    def __init__(self, left: int):
        self.left = left

    def read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int | None = None) -> bytes:
        if unsafe_name(info.filename):
            raise IngestError(
                f"The package has an unsafe file name (`{info.filename[:80]}`); it was not read."
            )
        allowed = self.left if limit is None else min(limit, self.left)
        out = bytearray()
        try:
            with archive.open(info) as member:
                while len(out) <= allowed and (chunk := member.read(1 << 20)):
                    out += chunk
        except RuntimeError:  # zipfile's "encrypted, password required"
            raise IngestError("The package is password-protected; send it as Discord made it.") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError, ValueError):
            raise IngestError(
                f"`{_short(info.filename)}` in the package is damaged and cannot be read. "
                "Download your data package again."
            ) from None
        if len(out) > allowed:
            if limit is not None and len(out) > limit:
                raise IngestError(
                    f"`{_short(info.filename)}` in the package is too large to be what it says."
                )
            raise IngestError(_too_large(MAX_ARCHIVE_BYTES - self.left + len(out)))
        self.left -= len(out)
        return bytes(out)


def _too_large(size: int) -> str:
    return (
        f"The messages in this package are too large uncompressed ({size / 2**20:,.0f} MB or more; the limit "
        f"is {MAX_ARCHIVE_BYTES / 2**20:.0f} MB). Zip only the folders of the channels you want, in a "
        "`Messages` folder."
    )


def _check_declared(archive: zipfile.ZipFile, channels: list[Channel]) -> None:
    """Refuse at once what the zip itself says is over the cap (reading is capped again anyway)."""
    folders = {c.folder.lower() for c in channels}
    declared = sum(
        i.file_size
        for i in archive.infolist()
        if i.filename.lower().rsplit("/", 1)[0] + "/" in folders
        and PurePosixPath(i.filename).name.lower() in ("messages.json", "messages.csv")
    )
    if declared > MAX_ARCHIVE_BYTES:
        raise IngestError(_too_large(declared))


def _channels(archive: zipfile.ZipFile, budget: _Budget) -> list[Channel]:
    """Every channel folder under the package's one messages folder, with what its channel.json says."""
    found = [(m, info) for info in archive.infolist() if (m := _CHANNEL_DIR.fullmatch(info.filename))]
    if not found:
        raise IngestError("No messages folder found in this zip: " + PACKAGE_HELP)
    roots: dict[str, int] = {}
    for match, _ in found:
        roots[match["root"]] = roots.get(match["root"], 0) + 1
    root = max(roots, key=lambda r: (roots[r], r.lower().endswith("messages/")))  # one folder only
    found = [(m, info) for m, info in found if m["root"] == root]
    if len(found) > MAX_CHANNELS:
        raise IngestError(f"The package has {len(found):,} channels; at most {MAX_CHANNELS:,} are read.")
    channels = []
    for match, info in found:
        meta = _json_object(budget.read(archive, info, MAX_SMALL_FILE), info.filename)
        guild = meta.get("guild") if isinstance(meta.get("guild"), dict) else None
        guild_id = _int_or_none(guild.get("id")) if guild else None
        private = meta.get("type") in PRIVATE_TYPES or guild_id is None
        channels.append(Channel(int(match["id"]), info.filename[: -len("channel.json")], guild_id, private))
    return channels


def _pick_channels(channels: list[Channel], guild_id: int | None) -> tuple[list[Channel], list[str]]:
    """Server channels (of one server when asked); DMs and group DMs are never opened."""
    private = sum(c.private for c in channels)
    server = [c for c in channels if not c.private]
    kept = [c for c in server if guild_id is None or c.guild_id == guild_id]
    notes = []
    if private:
        notes.append(
            f"{private:,} DM and group DM conversations were skipped unread: only server messages are used."
        )
    if not server:
        raise IngestError(
            "This package has no messages in server channels (only DMs and group DMs, which are never used)."
        )
    if not kept:
        raise IngestError(
            f"None of this package's messages are from this server ({len(server):,} channels of other "
            "servers). Train without limiting it to this server to use them."
        )
    if len(kept) < len(server):
        notes.append(f"{len(server) - len(kept):,} channels of other servers were left out.")
    return kept, notes


def _server_messages(
    archive: zipfile.ZipFile, channels: list[Channel], budget: _Budget
) -> tuple[list[str], PackageStats]:
    """The kept channels' messages, with commands and link shares dropped (and counted) first."""
    names = {info.filename.lower(): info for info in archive.infolist()}
    stats = PackageStats()
    posts: list[RawPost] = []
    total = 0
    for channel in sorted(channels, key=lambda c: c.id):
        for contents in _channel_messages(archive, names, channel, budget):
            total += 1
            reason = drop_reason(contents)
            if reason == "commands":
                stats.commands += 1
            elif reason == "links":
                stats.links += 1
            else:
                posts.append(RawPost(without_markup(contents)))
    tweets, cleaned = clean_posts(posts)
    for key in ("too_long", "retweets", "short", "duplicates", "kept"):
        setattr(stats, key, getattr(cleaned, key))
    stats.downloaded = total
    return tweets, stats


def _channel_messages(archive, names: dict, channel: Channel, budget: _Budget) -> list[str]:
    """The Contents of one channel's messages.json, or of its older messages.csv."""
    for filename, parse in (("messages.json", _json_contents), ("messages.csv", _csv_contents)):
        info = names.get((channel.folder + filename).lower())
        if info is not None:
            text, _notes = decode_text(budget.read(archive, info)) if info.file_size else ("", [])
            return parse(text, info.filename) if text.strip() else []
    return []


def _json_contents(text: str, name: str) -> list[str]:
    try:
        rows = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise IngestError(f"`{_short(name)}` in the package is not valid JSON.") from None
    if not isinstance(rows, list):
        raise IngestError(f"`{_short(name)}` in the package should hold a list of messages.")
    return [_contents(row) for row in rows if isinstance(row, dict)]


def _contents(row: dict) -> str:
    value = row.get("Contents", row.get("contents", ""))
    return value if isinstance(value, str) else ""


def _csv_contents(text: str, name: str) -> list[str]:
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ARCHIVE_BYTES))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lstrip("\ufeff").lower() for h in next(reader, [])]
        if "contents" not in header:
            raise IngestError(f"`{_short(name)}` in the package has no Contents column.")
        column = header.index("contents")
        return [row[column] if column < len(row) else "" for row in reader]
    except csv.Error:
        raise IngestError(f"`{_short(name)}` in the package could not be read as CSV.") from None


def drop_reason(contents: str) -> str | None:
    """ "commands" for a message typed for a bot, "links" for a link share, else None (kept so far)."""
    text = contents.strip()
    if len(text) > MAX_POST_CHARS:
        return None  # counted as too long by the cleaning; no regex over it
    if _COMMAND.match(text) or _BOT_PREFIX.match(text):
        return "commands"
    if _URL.search(text) and is_short(_URL.sub(" ", without_markup(text))):
        return "links"
    return None


def without_markup(contents: str) -> str:
    """Mentions, channel links and timestamps removed (they mean nothing outside Discord);
    custom emoji kept as their :name:."""
    return _CUSTOM_EMOJI.sub(r":\1:", _MENTION.sub(" ", contents))


def _owner(archive: zipfile.ZipFile, budget: _Budget) -> int | None:
    """The account id a full package belongs to (a messages folder zipped alone does not say)."""
    info = next((i for i in archive.infolist() if _ACCOUNT_USER.fullmatch(i.filename)), None)
    if info is None:
        return None
    return _int_or_none(_json_object(budget.read(archive, info, MAX_SMALL_FILE), info.filename).get("id"))


def _json_object(raw: bytes, name: str) -> dict:
    try:
        value = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise IngestError(f"`{_short(name)}` in the package is not valid JSON.") from None
    if not isinstance(value, dict):
        raise IngestError(f"`{_short(name)}` in the package should be a JSON object.")
    return value


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _short(name: str) -> str:
    return "/".join(PurePosixPath(name).parts[-2:])[:80]


PACKAGE_HELP = (
    "a Discord data package has a `Messages` folder with one `c<channel id>` folder per channel. "
    "Send the package's .zip (User Settings → Data & Privacy → Request Data), or its Messages folder zipped."
)
