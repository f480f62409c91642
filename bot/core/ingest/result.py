"""What reading an upload ends in: `IngestResult` (the posts kept, what was dropped, the warnings), after
the size checks every format shares, with a message that says what was dropped when too little is left."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.core.ingest.cleaning import MAX_POST_CHARS, IngestStats, balance_people
from bot.core.ingest.rawposts import IngestError, counted

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


def combine_people(handles: list[str], results: list[IngestResult]) -> tuple[list[str], dict]:
    """One person's tweets and stats as they are; several people balanced like huggingtweets."""
    if len(results) == 1:
        return results[0].tweets, results[0].stats.as_dict()
    tweets = balance_people([r.tweets for r in results])
    per_person = [dict(r.stats.as_dict(), name=h, handle=h) for h, r in zip(handles, results, strict=False)]
    totals = {key: sum(p[key] for p in per_person) for key in results[0].stats.as_dict()}
    return tweets, dict(totals, people=per_person)
