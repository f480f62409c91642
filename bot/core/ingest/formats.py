"""Detect an uploaded file's format and read the posts out of it (cleaning is core/ingest/cleaning.py).

Formats (detected by content first, the file name is only a hint):
  * Twitter/X archive: ``data/tweets.js`` (``window.YTD.tweets.part0 = [...]``, older ``tweet.js``,
    ``tweets-part1.js`` ...), or the whole archive ``.zip`` (read in memory, never extracted);
    the old (pre-2019) archive's ``tweets.csv`` inside a zip works too.
  * CSV with a text column (``text``, ``full_text``, ``tweet``, ``content``, ``body``, ``message``, ``post``).
  * JSON: a list of strings or objects, or an object wrapping one (``{"tweets": [...]}``,
    ``{"data": [...]}``).
  * JSONL: one JSON string or object per line.
  * Plain text: one post per line.
  * Any of these gzipped (``tweets.js.gz``, ``.csv.gz`` ...): decompressed in memory under the same cap,
    so a gzip bomb stops at ``MAX_INPUT_BYTES``.

NUL bytes: one in the first KB means a binary file and is refused; later ones are stripped with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from bot.core.errors import UserError

MAX_INPUT_BYTES = 200 * 1024 * 1024  # refuse bigger input (or gzip output) before parsing
MAX_ARCHIVE_BYTES = 200 * 1024 * 1024  # uncompressed tweets.js parts read from a .zip (zip bombs)
MAX_ARCHIVE_PARTS = 200

ACCEPTED = (
    "Send a Twitter archive (tweets.js or the .zip), a CSV, JSON/JSONL or a text file (any of them may be "
    "gzipped)."
)
TEXT_FIELDS = ("full_text", "text", "tweet", "content", "body", "message", "post")  # in order of preference


class IngestError(UserError):
    """A file that cannot be read as posts: str(e) is a short, specific message for the user."""


class UnsupportedFile(IngestError):
    """The file is too large or of a kind never read (an image, a RAR...): the user needs another way in
    (only data/tweets.js, gzipped, or a link), which the caller knows how to say."""


@dataclass(frozen=True)
class RawPost:
    text: str
    is_retweet: bool = False  # known from archive metadata (retweeted_status / retweeted) even without "RT @"


def read_posts(data: bytes, filename: str = "") -> tuple[list[RawPost], str]:
    """Detect the format and parse; raises IngestError. Returns the posts and the format name."""
    posts, fmt, _warnings = read_source(data, filename)
    return posts, fmt


def read_source(source: bytes | BinaryIO, filename: str) -> tuple[list[RawPost], str, list[str]]:
    """The posts, format name and warnings of file bytes or a seekable zip; raises IngestError."""
    if not isinstance(source, (bytes, bytearray, memoryview)):
        posts, warnings = _read_zip(source)
        fmt = "twitter-archive"
    else:
        data, filename = _gunzip_if_gzip(bytes(source), filename)
        if is_zip(data):
            posts, warnings = _read_zip(io.BytesIO(data))
            fmt = "twitter-archive"
        else:
            text, warnings = decode_text(data)
            posts, fmt = _parse_text(text, filename)
    if not posts:
        raise IngestError(f"No posts found in the file (read as {fmt}).")
    return posts, fmt, warnings


def check_size(data: bytes) -> None:
    """Raises UnsupportedFile over MAX_INPUT_BYTES, IngestError when empty."""
    refuse_too_big(len(data))
    if not data:
        raise IngestError("The file is empty (0 bytes).")


def refuse_too_big(size: int) -> None:
    if size > MAX_INPUT_BYTES:
        raise UnsupportedFile(too_big(size))


def too_big(size: int) -> str:
    return (
        f"The file is {size / 2**20:.1f} MB; the limit is {MAX_INPUT_BYTES / 2**20:.0f} MB. "
        "Send only the tweets file (data/tweets.js from the archive, gzipped if it is large) or a CSV."
    )


_GZIP_SUFFIXES = (".gz", ".gzip")


def _gunzip_if_gzip(data: bytes, filename: str) -> tuple[bytes, str]:
    """A gzipped file's content (and its name without .gz), decompressed under MAX_INPUT_BYTES."""
    check_size(data)
    if not data.startswith(b"\x1f\x8b"):
        return data, filename
    out = bytearray()
    rest = data
    try:
        while rest.startswith(b"\x1f\x8b"):  # a gzip file may hold several members, one after another
            member = zlib.decompressobj(wbits=31)
            out += member.decompress(rest, MAX_INPUT_BYTES + 1 - len(out))  # bounded: no gzip bomb
            if len(out) > MAX_INPUT_BYTES:
                raise UnsupportedFile(
                    f"Uncompressed, the file is over the {MAX_INPUT_BYTES / 2**20:.0f} MB limit. "
                    "Send only the tweets file (data/tweets.js from the archive) or a CSV."
                )
            if not member.eof:
                raise IngestError("The gzip file is cut short (incomplete download?). Send it again.")
            rest = member.unused_data
    except zlib.error:
        raise IngestError("The gzip file is damaged and cannot be decompressed.") from None
    lowered = filename.lower()
    for suffix in _GZIP_SUFFIXES:
        if lowered.endswith(suffix):
            filename = filename[: -len(suffix)]
    if not out:
        raise IngestError("The gzip file is empty (0 bytes once decompressed).")
    return bytes(out), filename


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


_MAGIC = [
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"%PDF", "PDF document"),
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!", "RAR archive"),
    (b"\xd0\xcf\x11\xe0", "old Microsoft Office document"),
    (b"SQLite format 3\x00", "SQLite database"),
    (b"\x7fELF", "program"),
]


def _binary_kind(data: bytes) -> str | None:
    """What binary file this looks like, or None for text."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP image"
    if data[4:8] == b"ftyp":
        return "video or HEIC image"
    if data[257:262] == b"ustar":
        return "tar archive"
    if b"\x00" in data[:1024]:
        return "it contains NUL bytes"
    return None


def _binary_error(kind: str) -> IngestError:
    return UnsupportedFile(f"This looks like a binary file ({kind}). {ACCEPTED}")


_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def decode_text(data: bytes) -> tuple[str, list[str]]:
    """Bytes to text: UTF-8 (BOM or not), UTF-16 with a BOM, else a legacy 8-bit encoding (warned)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return _nonblank(data.decode("utf-16")), []
        except UnicodeDecodeError:
            raise IngestError(
                "The file starts like UTF-16 text but is not valid UTF-16. Save it as UTF-8."
            ) from None
    kind = _binary_kind(data)
    if kind:
        raise _binary_error(kind)
    warnings = []
    if b"\x00" in data:  # past the first KB: stray NULs in a text file
        nuls = data.count(b"\x00")
        warnings.append(f"Removed {counted(nuls, 'NUL byte')} from the file.")
        data = data.replace(b"\x00", b"")
    try:
        return _nonblank(data.decode("utf-8-sig")), warnings
    except UnicodeDecodeError:
        pass
    text, note = _decode_legacy(data)
    return _nonblank(text), warnings + [note]


def _decode_legacy(data: bytes) -> tuple[str, str]:
    invalid = data.decode("utf-8", errors="replace").count("\ufffd") - data.count(b"\xef\xbf\xbd")
    if len(_UTF8_SEQUENCE.findall(data)) >= 10 * invalid:  # UTF-8 with a few damaged bytes
        return (
            data.decode("utf-8-sig", errors="replace"),
            f"The file is not entirely valid UTF-8: {counted(invalid, 'damaged character')} replaced.",
        )
    # "‰Û" saved as MacRoman (E4 F3) is the signature of the Excel-for-Mac exports; cp1252 is more
    # common otherwise, and MacRoman also takes the five bytes cp1252 leaves undefined.
    if b"\xe4\xf3" not in data:
        try:
            return data.decode("cp1252"), "The file is not UTF-8; it was read as Windows-1252 (cp1252)."
        except UnicodeDecodeError:
            pass
    return (
        data.decode("mac_roman"),
        "The file is not UTF-8; it was read as Mac Roman and its mojibake repaired where possible.",
    )


def _nonblank(text: str) -> str:
    if not text.replace("\ufeff", "").strip():
        raise IngestError("The file contains only blank space: no posts to read.")
    return text


# --------------------------------------------------------------------------- reading: zip archives

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


# --------------------------------------------------------------------------- reading: text formats

_YTD_PREFIX = re.compile(r"\s*window\.YTD\.(\w+)\.part\d+\s*=\s*")
_GRAILBIRD_PREFIX = re.compile(r"\s*Grailbird\.data\.tweets_\d{4}_\d{2}\s*=\s*")  # pre-2019 archives
# `var x = [`, `window.foo = {`: JavaScript, not a post that happens to start with "word = ["
_JS_ASSIGNMENT = re.compile(
    r"\s*(?:(?:var|let|const)\s+[A-Za-z_$][\w$]*|[A-Za-z_$][\w$]*(?:\.[\w$]+)+)\s*=\s*[\[{]"
)
_MARKUP = re.compile(r"\s*(?:<!doctype|<html|<\?xml|<svg|\{\\rtf)", re.IGNORECASE)
_JSON_START = re.compile(r'\s*[\[{]\s*[\[{"\]}]')  # so "[1/3] a thread" stays a line of text
_RETWEET_COLUMNS = ("is_retweet", "retweeted", "retweeted_status_id", "retweeted_status")


def _parse_text(text: str, filename: str) -> tuple[list[RawPost], str]:
    ext = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if _YTD_PREFIX.match(text) or _GRAILBIRD_PREFIX.match(text):
        return _parse_archive_js(text, filename or "tweets.js"), "twitter-archive"
    if _JS_ASSIGNMENT.match(text[:500]):  # a slice: the pattern backtracks over a long first word
        raise IngestError(_wrong_js_prefix(text))
    if _MARKUP.match(text[:200]):
        raise IngestError(
            "This is a web page or document (HTML/XML/RTF), not a format I can read. " + ACCEPTED
        )
    if ext in (".jsonl", ".ndjson"):
        return _posts_from_records(_jsonl_records(text), "JSONL lines"), "jsonl"
    if text.lstrip()[:1] in ("[", "{", '"'):
        strict = ext in (".json", ".js") or _JSON_START.match(text) is not None
        parsed = _parse_json_like(text, strict)
        if parsed is not None:
            return parsed
    layout = _csv_layout(text)
    if layout is not None:
        return _parse_csv(text, *layout), "csv"
    if ext == ".js":
        raise IngestError(_wrong_js_prefix(text))
    if ext in (".csv", ".tsv"):
        raise IngestError(_no_text_column(text))
    return [RawPost(line) for line in text.splitlines() if line.strip()], "text"


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


def _parse_json_like(text: str, strict: bool) -> tuple[list[RawPost], str] | None:
    """JSON, or JSONL when the whole text is not one document but its first line is. When not strict
    (text that merely starts with a bracket or a quote), None instead of an error."""
    try:
        value = _load_json(text)
    except json.JSONDecodeError as exc:
        if _is_json(text.lstrip().split("\n", 1)[0]):
            try:
                records = _jsonl_records(text)
            except IngestError:
                if strict:
                    raise
                return None
            return _posts_from_records(records, "JSONL lines"), "jsonl"
        if not strict:
            return None
        raise IngestError(
            f"This looks like JSON but it is not valid: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    return _posts_from_records(_post_list(value), "JSON items"), "json"


def _is_json(line: str) -> bool:
    try:
        _load_json(line)
        return True
    except (json.JSONDecodeError, IngestError):
        return False


def _load_json(text: str) -> Any:
    """json.loads, refusing absurd nesting instead of crashing on it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise IngestError("The JSON is nested too deeply to be a list of posts.") from None


def _jsonl_records(text: str) -> list:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(_load_json(line))
        except json.JSONDecodeError as exc:
            raise IngestError(f"Line {number} of the JSONL file is not valid JSON ({exc.msg}).") from None
    return records


_WRAPPER_KEYS = ("tweets", "data", "posts", "statuses", "messages", "items", "results", "entries")


def _post_list(value: Any) -> list:
    """The list of posts in a JSON document: the document itself, or the list an object wraps."""
    if isinstance(value, (list, str)):
        return value if isinstance(value, list) else [value]
    if not isinstance(value, dict):
        raise IngestError('The JSON should be a list of posts, or an object such as {"tweets": [...]}.')
    lowered = {str(k).lower(): v for k, v in value.items()}
    if _text_of(lowered) is not None:
        return [value]  # a single post
    for key in _WRAPPER_KEYS:
        if isinstance(lowered.get(key), list):
            return lowered[key]
    lists = [v for v in value.values() if isinstance(v, list) and v]
    if len(lists) == 1:
        return lists[0]
    raise IngestError(
        f"The JSON object has no list of posts (keys found: {quoted_names(map(str, value))}). "
        "Expected a list, "
        'or an object like {"tweets": [...]} or {"data": [...]}.'
    )


def _posts_from_records(records: Iterable, what: str) -> list[RawPost]:
    """Strings, or objects with a text field (an archive's {"tweet": {...}} wrapper unwrapped)."""
    posts, keys_seen, with_text = [], [], 0
    for record in records:
        if isinstance(record, str):
            posts.append(RawPost(record))
            with_text += 1
            continue
        if not isinstance(record, dict):
            raise IngestError(
                f"The {what} should be strings or objects with a text field, "
                f"not {type(record).__name__} values."
            )
        if isinstance(record.get("tweet"), dict):
            record = record["tweet"]
        fields = {str(k).lower(): v for k, v in record.items()}
        text = _text_of(fields)
        with_text += text is not None
        keys_seen = keys_seen or list(record)
        posts.append(RawPost(text or "", _record_is_retweet(fields)))
    if posts and not with_text:
        raise IngestError(
            f"The {what} have no text field (keys found: {quoted_names(map(str, keys_seen))}). "
            f"Accepted names: {', '.join(TEXT_FIELDS)}."
        )
    return posts


def _text_of(fields: dict) -> str | None:
    return next((fields[name] for name in TEXT_FIELDS if isinstance(fields.get(name), str)), None)


def _record_is_retweet(fields: dict) -> bool:
    if (
        fields.get("retweeted_status")
        or _truthy(fields.get("retweeted"))
        or _truthy(fields.get("is_retweet"))
    ):
        return True
    refs = fields.get("referenced_tweets")  # Twitter API v2
    return isinstance(refs, list) and any(isinstance(r, dict) and r.get("type") == "retweeted" for r in refs)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y", "t")
    return value is True or (isinstance(value, (int, float)) and value == 1)


# --------------------------------------------------------------------------- reading: CSV

_DELIMITERS = (",", "\t", ";", "|")


def _csv_layout(text: str) -> tuple[str, int, int | None] | None:
    """(delimiter, text column, retweet column) when the first line is a header naming a text column."""
    header_line = _first_line(text)
    for delimiter in _delimiter_candidates(text):
        header = _header(header_line, delimiter)
        column = _find_column(header, TEXT_FIELDS)
        if column is not None:
            return delimiter, column, _find_column(header, _RETWEET_COLUMNS)
    return None


def _delimiter_candidates(text: str) -> list[str]:
    try:
        sniffed = csv.Sniffer().sniff(text[:8192], delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        return list(_DELIMITERS)
    return [sniffed] + [d for d in _DELIMITERS if d != sniffed]


def _first_line(text: str) -> str:
    ends = [i for i in (text.find("\n"), text.find("\r")) if i >= 0]
    return text[: min(ends)] if ends else text


def _header(line: str, delimiter: str) -> list[str]:
    try:
        cells = next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []
    return [c.strip().lstrip("\ufeff").strip('"').strip().lower() for c in cells]


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((header.index(n) for n in names if n in header), None)


def _no_text_column(text: str) -> str:
    line = _first_line(text)
    columns = max((_header(line, d) for d in _DELIMITERS), key=len)
    return (
        f"No text column in this CSV (columns found: {quoted_names(columns)}). "
        f"Name the column with the posts one of: {', '.join(TEXT_FIELDS)}."
    )


def _parse_csv(text: str, delimiter: str, column: int, rt_column: int | None) -> list[RawPost]:
    # Raise the per-field limit (a process-wide setting) so an oversized field is read and then
    # counted as too long, instead of aborting the whole file.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_INPUT_BYTES * 4))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    posts = []
    try:
        next(reader, None)  # the header
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            is_rt = rt_column is not None and rt_column < len(row) and _csv_flag(row[rt_column])
            posts.append(RawPost(row[column] if column < len(row) else "", is_rt))
    except csv.Error as exc:
        raise IngestError(f"The CSV could not be read near line {reader.line_num}: {exc}.") from None
    return posts


def _csv_flag(value: str) -> bool:
    """A retweet flag column: true/1/yes, or a non-empty retweeted_status_id."""
    value = value.strip().lower()
    return _truthy(value) or (value.isdigit() and value != "0")


# --------------------------------------------------------------------------- messages


def counted(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def quoted_names(names: Iterable[str], limit: int = 10) -> str:
    """`a`, `b`, ... for a message: each name and the list kept short (Discord messages are small)."""
    names = [n if len(n) <= 30 else n[:29] + "…" for n in names if n]
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return (shown + (f" and {len(names) - limit} more" if len(names) > limit else "")) or "none"
