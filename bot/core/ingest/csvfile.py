"""CSV (and TSV, `;` or `|` separated) uploads: the delimiter and the text column found from the header,
and a retweet column where there is one."""

from __future__ import annotations

import csv
import io

from bot.core.ingest.jsonfile import _truthy
from bot.core.ingest.rawposts import (
    _RETWEET_COLUMNS,
    MAX_INPUT_BYTES,
    TEXT_FIELDS,
    IngestError,
    RawPost,
    quoted_names,
)

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
