"""What every upload format reads into: `RawPost`, the errors a user is shown (`IngestError`,
`UnsupportedFile`), the input cap, and text decoding (UTF-8 first, then legacy encodings; binary refused)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bot.core.errors import UserError

MAX_INPUT_BYTES = 200 * 1024 * 1024  # refuse bigger input (or gzip output) before parsing


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


_RETWEET_COLUMNS = ("is_retweet", "retweeted", "retweeted_status_id", "retweeted_status")


def counted(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def quoted_names(names: Iterable[str], limit: int = 10) -> str:
    """`a`, `b`, ... for a message: each name and the list kept short (Discord messages are small)."""
    names = [n if len(n) <= 30 else n[:29] + "…" for n in names if n]
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return (shown + (f" and {len(names) - limit} more" if len(names) > limit else "")) or "none"


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
