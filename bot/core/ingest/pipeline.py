"""Read one person's uploaded file into clean posts: the entry point the cogs, CLI and voices call.

formats.py detects the format and parses it, cleaning.py applies huggingtweets' cleaning, and
this module ties them together with the size checks: too little text left is refused with a message
saying what was dropped, a little gives a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bot.core.ingest.cleaning import MAX_POST_CHARS, IngestStats, clean_posts
from bot.core.ingest.formats import (
    IngestError,
    UnsupportedFile,
    check_size,
    counted,
    is_zip,
    read_source,
    refuse_too_big,
)

__all__ = ["IngestError", "IngestResult", "UnsupportedFile", "finish_result", "ingest", "ingest_path"]

MIN_KEPT_CHARS = 6_000
WARN_KEPT_CHARS = 40_000


@dataclass
class IngestResult:
    tweets: list[str]
    stats: IngestStats
    format: str  # "twitter-archive", "discord-package", "csv", "json", "jsonl", "text"
    kept_chars: int
    warnings: list[str] = field(default_factory=list)
    owner_id: int | None = None  # a Discord data package's account, when the package says


# --------------------------------------------------------------------------- public API


def ingest(
    data: bytes | BinaryIO,
    filename: str = "",
    *,
    min_chars: int = MIN_KEPT_CHARS,
    warn_chars: int = WARN_KEPT_CHARS,
    guild_id: int | None = None,
) -> IngestResult:
    """Read, clean and size-check one person's file; raises IngestError with a message for the user.

    `data` is the file's bytes, or a seekable binary file holding a zip (a big archive on disk or read
    through HTTP range requests: only the members needed are read). A Discord data package (a zip of
    a member's own messages) is read by core/ingest/datapackage.py: server channels only, of `guild_id`
    alone when given."""
    in_memory = isinstance(data, (bytes, bytearray, memoryview))
    if in_memory:
        check_size(data)
    if not in_memory or is_zip(data):  # a seekable file is always a zip (its callers check)
        from bot.core.ingest.datapackage import is_data_package, read_package  # it builds on this module

        if is_data_package(data):
            return read_package(data, guild_id=guild_id, min_chars=min_chars, warn_chars=warn_chars)
    posts, fmt, warnings = read_source(data, filename)
    tweets, stats = clean_posts(posts)
    return finish_result(tweets, stats, fmt, warnings, min_chars=min_chars, warn_chars=warn_chars)


def finish_result(
    tweets: list[str], stats: IngestStats, fmt: str, warnings: list[str], *, min_chars: int, warn_chars: int
) -> IngestResult:
    """The size checks and warnings every format ends with."""
    kept_chars = sum(map(len, tweets))
    if kept_chars < min_chars:
        raise IngestError(_too_little_text(stats, kept_chars, min_chars))
    if stats.too_long:
        warnings.append(
            f"{counted(stats.too_long, 'post')} longer than {MAX_POST_CHARS:,} characters "
            "were skipped as not tweets."
        )
    if kept_chars < warn_chars:
        warnings.append(
            f"Only {kept_chars:,} characters of text after cleaning (under {warn_chars:,}): "
            "the model may not capture the style well. More tweets would help."
        )
    return IngestResult(tweets=tweets, stats=stats, format=fmt, kept_chars=kept_chars, warnings=warnings)


def ingest_path(path: str | os.PathLike, **kw) -> IngestResult:
    """A file on disk: an archive .zip of any size is read in place (its tweets only), others capped."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IngestError(f"`{path.name}` is a folder; give its data/tweets.js file or the archive .zip.")
        with path.open("rb") as file:
            if is_zip(file.read(4)):
                file.seek(0)
                return ingest(file, path.name, **kw)
            refuse_too_big(os.fstat(file.fileno()).st_size)  # before reading it into memory
            file.seek(0)
            data = file.read()
    except OSError as exc:
        raise IngestError(f"Cannot read `{path.name}`: {exc.strerror or exc}.") from None
    return ingest(data, path.name, **kw)


# --------------------------------------------------------------------------- messages


# (stats field, plural label, singular label) for explaining what was dropped
_DROP_REASONS = [
    (
        "too_long",
        f"longer than {MAX_POST_CHARS:,} characters (not tweets)",
        f"longer than {MAX_POST_CHARS:,} characters (not a tweet)",
    ),
    ("commands", "bot commands", "a bot command"),  # Discord data packages only
    ("links", "link shares", "a link share"),
    ("retweets", "retweets", "a retweet"),
    (
        "short",
        "too short (fewer than 3 words besides links, @mentions and #hashtags)",
        "too short (fewer than 3 words besides links, @mentions and #hashtags)",
    ),
    ("duplicates", "duplicates", "a duplicate"),
]


def _why(stats: IngestStats) -> str:
    """'all 120 posts were retweets', or the breakdown of what was dropped."""
    n = stats.downloaded
    for key, plural, singular in _DROP_REASONS:
        if getattr(stats, key, 0) == n > 0:
            return f"The only post was {singular}." if n == 1 else f"All {n:,} posts were {plural}."
    dropped = [
        f"{getattr(stats, key):,} {plural.split(' (')[0]}"
        for key, plural, _ in _DROP_REASONS
        if getattr(stats, key, 0)
    ]
    return f"Of {counted(n, 'post')} read: {', '.join(dropped + [f'{stats.kept:,} kept'])}."


def _too_little_text(stats: IngestStats, kept_chars: int, min_chars: int) -> str:
    if not stats.kept:
        return (
            f"No usable tweets after cleaning: {_why(stats)[0].lower()}{_why(stats)[1:]} "
            f"At least {min_chars:,} characters of their own tweets are needed."
        )
    return (
        f"Only {kept_chars:,} characters of usable text after cleaning "
        f"({counted(stats.kept, 'tweet')} kept); "
        f"at least {min_chars:,} are needed. {_why(stats)} Send more of their posts."
    )
