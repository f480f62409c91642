"""JSON and JSONL uploads: a list of strings or objects (or an object wrapping one), the text field of
each record, and the retweet flags archives and exports carry."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from bot.core.ingest.rawposts import TEXT_FIELDS, IngestError, RawPost, quoted_names


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
