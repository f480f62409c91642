"""Detect an uploaded file's format and hand it to its reader (archive.py, jsonfile.py, csvfile.py, or
one post per line for plain text); cleaning is cleaning.py.

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

import io
import re
import zlib
from pathlib import PurePosixPath
from typing import BinaryIO

from bot.core.ingest.archive import (
    _GRAILBIRD_PREFIX,
    _YTD_PREFIX,
    _parse_archive_js,
    _read_zip,
    _wrong_js_prefix,
)
from bot.core.ingest.csvfile import _csv_layout, _no_text_column, _parse_csv
from bot.core.ingest.jsonfile import _jsonl_records, _parse_json_like, _posts_from_records
from bot.core.ingest.rawposts import (
    ACCEPTED,
    MAX_INPUT_BYTES,
    IngestError,
    RawPost,
    UnsupportedFile,
    decode_text,
)


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


# --------------------------------------------------------------------------- reading: zip archives


# --------------------------------------------------------------------------- reading: text formats

# `var x = [`, `window.foo = {`: JavaScript, not a post that happens to start with "word = ["
_JS_ASSIGNMENT = re.compile(
    r"\s*(?:(?:var|let|const)\s+[A-Za-z_$][\w$]*|[A-Za-z_$][\w$]*(?:\.[\w$]+)+)\s*=\s*[\[{]"
)
_MARKUP = re.compile(r"\s*(?:<!doctype|<html|<\?xml|<svg|\{\\rtf)", re.IGNORECASE)
_JSON_START = re.compile(r'\s*[\[{]\s*[\[{"\]}]')  # so "[1/3] a thread" stays a line of text


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


# --------------------------------------------------------------------------- reading: CSV


# --------------------------------------------------------------------------- messages
