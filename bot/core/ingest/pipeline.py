"""Read one person's uploaded file into clean posts: the entry point the cogs, CLI and voices call.

formats.py detects the format and parses it, cleaning.py applies huggingtweets' cleaning, and
this module ties them together with the size checks: too little text left is refused with a message
saying what was dropped, a little gives a warning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from bot.core.ingest.cleaning import clean_posts
from bot.core.ingest.datapackage import is_data_package, read_package
from bot.core.ingest.formats import check_size, is_zip, read_source, refuse_too_big
from bot.core.ingest.rawposts import IngestError, UnsupportedFile
from bot.core.ingest.result import MIN_KEPT_CHARS, WARN_KEPT_CHARS, IngestResult, finish_result

__all__ = ["IngestError", "IngestResult", "UnsupportedFile", "ingest", "ingest_path"]


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
        if is_data_package(data):
            return read_package(data, guild_id=guild_id, min_chars=min_chars, warn_chars=warn_chars)
    posts, fmt, warnings = read_source(data, filename)
    tweets, stats = clean_posts(posts)
    return finish_result(tweets, stats, fmt, warnings, min_chars=min_chars, warn_chars=warn_chars)


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
