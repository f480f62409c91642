"""Twitter/X archives: the .zip read in place (never extracted, its tweets members only, under a cap on
uncompressed bytes) and `data/tweets.js` with its `window.YTD.tweets.partN =` prefix."""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import BinaryIO

from bot.core.ingest.csvfile import _csv_layout, _parse_csv
from bot.core.ingest.jsonfile import _load_json, _posts_from_records
from bot.core.ingest.rawposts import ACCEPTED, IngestError, RawPost, UnsupportedFile, decode_text

MAX_ARCHIVE_BYTES = 200 * 1024 * 1024  # uncompressed tweets.js parts read from a .zip (zip bombs)


MAX_ARCHIVE_PARTS = 200


_ARCHIVE_JS = re.compile(r"tweets?(?:-part(\d+))?\.js", re.IGNORECASE)


def _read_zip(file: BinaryIO) -> tuple[list[RawPost], list[str]]:
    """Tweets from a Twitter archive .zip, read by name (never extracted) with a cap on uncompressed bytes.

    `file` is seekable: the archive in memory, on disk, or read through HTTP range requests; only the
    central directory and the tweets members are read, so a 10 GB archive costs its tweets' bytes.
    """
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError):
        raise IngestError(
            "This .zip file is damaged or incomplete and cannot be opened. "
            "Download your archive again, or send only data/tweets.js."
        ) from None
    with archive:
        members, fmt = _archive_members(archive)
        if len(members) > MAX_ARCHIVE_PARTS:
            raise IngestError(
                f"The archive has {len(members)} tweets.js parts; at most {MAX_ARCHIVE_PARTS} are read."
            )
        declared = sum(info.file_size for info in members)
        if declared > MAX_ARCHIVE_BYTES:
            raise UnsupportedFile(_archive_too_large(declared))
        posts: list[RawPost] = []
        warnings: list[str] = []
        budget = MAX_ARCHIVE_BYTES
        for info in members:
            raw = _read_member(archive, info, budget)
            budget -= len(raw)
            posts += _parse_member(raw, info.filename, fmt, warnings)
    return posts, warnings


def _archive_members(archive: zipfile.ZipFile) -> tuple[list[zipfile.ZipInfo], str]:
    """The tweets.js parts (or an old archive's tweets.csv), in part order; refuses unsafe names."""
    infos = [i for i in archive.infolist() if i.filename and not i.filename.endswith("/")]
    parts = [i for i in infos if _ARCHIVE_JS.fullmatch(PurePosixPath(i.filename).name)]
    fmt = "js"
    if not parts:
        parts = [i for i in infos if PurePosixPath(i.filename).name.lower() == "tweets.csv"]
        fmt = "csv"
    if not parts:
        raise IngestError(_no_tweets_in_zip([i.filename for i in infos]))
    for info in parts:
        if unsafe_name(info.filename):
            raise IngestError(
                f"The archive has an unsafe file name (`{info.filename[:80]}`); it was not read. "
                "Send data/tweets.js on its own."
            )
    # One folder only (prefer .../data/), and "tweets" over the older "tweet" when both exist.
    folders = sorted(
        {str(PurePosixPath(i.filename).parent) for i in parts},
        key=lambda d: (PurePosixPath(d).name != "data", d.count("/"), d),
    )
    parts = [i for i in parts if str(PurePosixPath(i.filename).parent) == folders[0]]
    if any(PurePosixPath(i.filename).name.lower().startswith("tweets") for i in parts):
        parts = [i for i in parts if PurePosixPath(i.filename).name.lower().startswith("tweets")]
    return sorted(parts, key=_part_number), fmt


def _part_number(info: zipfile.ZipInfo) -> int:
    match = _ARCHIVE_JS.fullmatch(PurePosixPath(info.filename).name)
    return int(match[1]) if match and match[1] else 0


def unsafe_name(name: str) -> bool:
    return (
        name.startswith(("/", "\\"))
        or "\\" in name
        or bool(re.match(r"[A-Za-z]:", name))
        or ".." in PurePosixPath(name).parts
    )


def _no_tweets_in_zip(names: list[str]) -> str:
    lowered = [n.lower() for n in names]
    if any(n.startswith("xl/") for n in lowered):
        return "This is an Excel workbook, not a tweet archive. Save it as CSV (UTF-8) and send that."
    if any(n.startswith("word/") for n in lowered):
        return "This is a Word document, not a tweet archive. " + ACCEPTED
    return (
        "No tweets.js found in this .zip: a Twitter/X archive has data/tweets.js (or data/tweet.js). "
        + ACCEPTED
    )


def _archive_too_large(size: int) -> str:
    return (
        f"The tweets in this archive are too large when uncompressed ({size / 2**20:,.0f} MB; "
        f"the limit is {MAX_ARCHIVE_BYTES / 2**20:.0f} MB). Send data/tweets.js on its own."
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Stream one member, stopping as soon as the budget is spent (whatever the header claims)."""
    if info.flag_bits & 0x1:
        raise IngestError("The archive is password-protected. Send data/tweets.js on its own.")
    out = bytearray()
    try:
        with archive.open(info) as member:
            while len(out) <= budget and (chunk := member.read(1 << 20)):
                out += chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError):
        raise IngestError(
            f"`{info.filename[:80]}` in the archive is damaged and cannot be read. "
            "Download your archive again, or send only data/tweets.js."
        ) from None
    if len(out) > budget:
        raise UnsupportedFile(_archive_too_large(len(out)))
    return bytes(out)


def _parse_member(raw: bytes, name: str, fmt: str, warnings: list[str]) -> list[RawPost]:
    if not raw.strip():
        return []  # an empty part (tweets-part1.js of 0 bytes): nothing to add
    text, notes = decode_text(raw)
    warnings += notes
    if fmt == "csv":
        layout = _csv_layout(text)
        if layout is None:
            raise IngestError(f"`{name}` in the archive has no text column.")
        return _parse_csv(text, *layout)
    return _parse_archive_js(text, name)


_YTD_PREFIX = re.compile(r"\s*window\.YTD\.(\w+)\.part\d+\s*=\s*")


_GRAILBIRD_PREFIX = re.compile(r"\s*Grailbird\.data\.tweets_\d{4}_\d{2}\s*=\s*")  # pre-2019 archives


def _wrong_js_prefix(text: str) -> str:
    start = re.sub(r"[`\s]+", " ", text.lstrip()[:60].split("=")[0]).strip()[:30]
    return (
        f"This file starts with `{start}`, not `window.YTD.tweets.part0 =` like a Twitter archive's "
        "data/tweets.js. Send that file or the archive .zip."
    )


def _parse_archive_js(text: str, name: str) -> list[RawPost]:
    """An archive's tweets.js: its `window.YTD.tweets.partN = ` prefix, then a JSON list."""
    match = _YTD_PREFIX.match(text) or _GRAILBIRD_PREFIX.match(text)
    if match is None:
        raise IngestError(_wrong_js_prefix(text))
    if match.re is _YTD_PREFIX and match[1].lower() not in ("tweets", "tweet"):
        raise IngestError(
            f"`{PurePosixPath(name).name}` holds the archive's `{match[1]}` data, not tweets. "
            "Send data/tweets.js (or the whole archive .zip)."
        )
    try:
        entries = _load_json(text[match.end() :].rstrip().rstrip(";"))
    except json.JSONDecodeError as exc:
        raise IngestError(
            f"`{PurePosixPath(name).name}` has the archive prefix but its data is not valid "
            f"JSON ({exc.msg}, line {exc.lineno})."
        ) from None
    if not isinstance(entries, list):
        raise IngestError(f"`{PurePosixPath(name).name}` should hold a list of tweets after its prefix.")
    return _posts_from_records(entries, "archive entries")
