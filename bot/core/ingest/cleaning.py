"""Clean a person's posts the way huggingtweets did, and the data table that reports it.

Cleaning follows huggingtweets (borisdayma/huggingtweets, huggingtweets-demo.ipynb), each drop counted:
retweets ("RT @" or archive metadata), URLs removed, ``&amp;``/``&lt;``/``&gt;`` unescaped, whitespace
collapsed, "short" (boring) tweets dropped -- fewer than 3 words that contain none of ``http``/``@``/``#``,
exactly their ``boring_tweet`` -- then exact duplicates. Beyond it: Python bytes literals (``b'...'``) are
decoded, mojibake is repaired (ftfy, plus the MacRoman double mojibake of Excel-for-Mac exports), and posts
over ``MAX_POST_CHARS`` are skipped as not tweets (counted as ``too_long``).
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import asdict, dataclass
from typing import Any

import ftfy

from bot.core.ingest.rawposts import RawPost

MAX_POST_CHARS = 10_000  # longer "posts" are not tweets (and would be slow to clean)


STAT_ROWS = [
    ("downloaded", "Tweets downloaded"),
    ("too_long", "Too long (not tweets)"),  # shown only when something was, like the next two
    ("commands", "Bot commands"),  # Discord data packages (core/ingest/datapackage.py)
    ("links", "Link shares"),
    ("retweets", "Retweets"),
    ("short", "Short tweets"),
    ("duplicates", "Duplicates"),
    ("kept", "Tweets kept"),
]


def data_table(stats: dict[str, Any], name: str = "Count", *, markdown: bool = True) -> str:
    """The huggingtweets data table, one column per person (a multi-person model keeps each one's
    figures in stats["people"]): markdown for model cards, aligned text for a Discord code block.
    """
    people = stats.get("people") or [dict(stats, name=name)]
    rows = [
        (label, [str(p.get(key, "")) for p in people])
        for key, label in STAT_ROWS
        if any(key in p and (key not in _ONLY_WHEN_SOME or p[key]) for p in people)
    ]
    if markdown:
        lines = [
            "| Data | " + " | ".join(p.get("name", "?") for p in people) + " |",
            "|---|" + "---|" * len(people),
        ]
        return "\n".join(lines + [f"| {label} | " + " | ".join(values) + " |" for label, values in rows])
    width = max((len(label) for label, _ in rows), default=0)
    lines = []
    if len(people) > 1:
        lines.append(" " * width + "".join(f"  {_column_heading(p)[:10]:>10}" for p in people))
    lines += [label.ljust(width) + "".join(f"  {v:>10}" for v in values) for label, values in rows]
    return "\n".join(lines)


_ONLY_WHEN_SOME = ("too_long", "commands", "links")


def _column_heading(person: dict[str, Any]) -> str:
    """@handle; a person imported from a card has only a name (its handles' order is not the columns')."""
    return f"@{person['handle']}" if person.get("handle") else str(person.get("name") or "?")


@dataclass
class IngestStats:
    downloaded: int = 0  # posts read from the file
    retweets: int = 0
    short: int = 0
    duplicates: int = 0
    kept: int = 0
    too_long: int = 0  # over MAX_POST_CHARS, dropped before anything else

    def as_markdown(self, name: str = "Count") -> str:
        """The huggingtweets model-card table; the "Too long" row only appears when something was."""
        return data_table(self.as_dict(), name)

    def as_dict(self) -> dict:
        return asdict(self)


def clean_posts(posts: list[RawPost]) -> tuple[list[str], IngestStats]:
    """huggingtweets' filters in their order, each drop counted: too long, retweets, short, duplicates."""
    stats = IngestStats()
    kept: list[str] = []
    seen: set[str] = set()
    for post in posts:
        stats.downloaded += 1
        if len(post.text) > MAX_POST_CHARS:  # checked first: never run the regexes on megabytes
            stats.too_long += 1
            continue
        text = decode_bytes_literal(post.text)
        if post.is_retweet or is_retweet_text(text):
            stats.retweets += 1
            continue
        cleaned = _clean_decoded(text)
        if is_short(cleaned):
            stats.short += 1
        elif cleaned in seen:
            stats.duplicates += 1
        else:
            seen.add(cleaned)
            kept.append(cleaned)
    stats.kept = len(kept)
    return kept, stats


def clean_text(text: str) -> str:
    """One post's cleanup: decode bytes literals, repair mojibake, unescape, drop URLs, collapse spaces."""
    return _clean_decoded(decode_bytes_literal(text))


def balance_people(corpora: list[list[str]], seed: int = 0, *, by: str = "chars") -> list[str]:
    """huggingtweets' multi-person balancing: oversample each person up to the largest one, then concatenate.

    Like huggingtweets, "largest" is measured in characters of text (``by="chars"``), so a terse person
    is not drowned by a verbose one; ``by="tweets"`` balances tweet counts instead. Each person's tweets
    are kept in order, repeated whole as often as they fit, then topped up with a random sample.
    """
    if by not in ("chars", "tweets"):
        raise ValueError("by must be 'chars' or 'tweets'")
    weight = len if by == "chars" else (lambda tweet: 1)
    people = [list(c) for c in corpora if sum(map(weight, c)) > 0]
    if not people:
        return []
    target = max(sum(map(weight, tweets)) for tweets in people)
    rng = random.Random(seed)
    merged: list[str] = []
    for tweets in people:
        merged += _oversample(tweets, target, weight, rng)
    return merged


# --------------------------------------------------------------------------- cleaning steps

_BYTES_LITERAL = re.compile(r"""b'.*'|b".*\"""", re.DOTALL)
_URL = re.compile(r"\bhttps?:\S*|\bhttps?…|\bpic\.twitter\.com/\S+")
_ENTITY = re.compile(r"&(amp|lt|gt|quot|#39|apos);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "#39": "'", "apos": "'"}
_INVISIBLE = re.compile("[\u200b\u2060\ufeff]")  # zero-width spaces; not whitespace for str.split
_BORING = ("http", "@", "#")
# ftfy without its style changes: keep curly quotes and full-width characters as the person typed them.
_FTFY = ftfy.TextFixerConfig(
    unescape_html=False, uncurl_quotes=False, fix_character_width=False, explain=False
)


def decode_bytes_literal(text: str) -> str:
    """`b'caf\\xc3\\xa9'` (a Python bytes literal saved as text) -> `café`; anything else unchanged."""
    stripped = text.strip()
    if not _BYTES_LITERAL.fullmatch(stripped):
        return text
    try:  # literal_eval only ever evaluates literals; the match above makes it a bytes literal or an error
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else text


def is_retweet_text(text: str) -> bool:
    return text.lstrip().startswith("RT @")


def is_short(cleaned: str) -> bool:
    """huggingtweets' boring_tweet: fewer than 3 words free of http/@/# (so empty text is short too)."""
    words = [w for w in cleaned.split() if not any(b in w.lower() for b in _BORING)]
    return len(words) < 3


def _clean_decoded(text: str) -> str:
    text = repair_mac_mojibake(text)  # before ftfy, which would misread these sequences
    text = ftfy.fix_text(text, _FTFY)
    text = _ENTITY.sub(lambda m: _ENTITIES[m[1]], text)  # one pass: "&amp;lt;" becomes "&lt;", as written
    text = _URL.sub(" ", text)
    text = _INVISIBLE.sub("", text)
    return " ".join(text.split())


# Double mojibake of Excel-for-Mac exports (the fivethirtyeight tweet CSVs): UTF-8 read as cp1252, saved
# as MacRoman, read as cp1252 again and saved as MacRoman. So "—" (E2 80 94) became "‰ÛÓ", "’" "‰Ûª",
# "ñ" "Ì±", and the bytes cp1252 leaves undefined went through raw ("”" is "‰Ûù"). The chain is undone
# per sequence, for the lead bytes seen in such files (C2 "å", C3 "Ì", E2 "‰", EF "•"), and only where
# the result is valid UTF-8, which ordinary text (a real "‰" or "å") never is. Bytes that had no MacRoman
# form were saved as "_": those sequences are lossy and handled by the small table below.
_MAC_SEQUENCE = re.compile(r"[‰•]..|[Ìå].")
_MAC_EMOJI = re.compile(r"_Ù..")  # a 4-byte emoji whose F0 lead byte was lost as "_"
_MAC_LOSSY = {"‰Û_": "…"}  # U+2026, the truncation ellipsis: its A6 byte was lost
_MAC_LEFTOVER = re.compile(r"‰\S_")  # other lossy U+2xxx symbols: unrecoverable, dropped
_CP1252_UNDEFINED = b"\x81\x8d\x8f\x90\x9d"


def _undo_mac_chain(junk: str) -> bytes:
    out = bytearray()
    for char in junk:
        raw = char.encode("mac_roman")  # the byte as saved in the file
        out += (
            raw if raw[0] in _CP1252_UNDEFINED else char.encode("cp1252").decode("mac_roman").encode("cp1252")
        )
    return bytes(out)


def _mac_sequence(match: re.Match) -> str:
    try:
        return _undo_mac_chain(match[0]).decode("utf-8")
    except UnicodeError:
        return match[0]


def _mac_emoji(match: re.Match) -> str:
    try:
        return (b"\xf0" + _undo_mac_chain(match[0][1:])).decode("utf-8")
    except UnicodeError:
        return ""  # part of the emoji was lost: drop the junk rather than teach it to the model


def repair_mac_mojibake(text: str) -> str:
    if not any(c in text for c in "‰Ìå•Ù"):
        return text
    text = _MAC_SEQUENCE.sub(_mac_sequence, text)
    text = _MAC_EMOJI.sub(_mac_emoji, text)
    for junk, char in _MAC_LOSSY.items():
        text = text.replace(junk, char)
    return _MAC_LEFTOVER.sub("", text)


def _oversample(tweets: list[str], target: int, weight, rng: random.Random) -> list[str]:
    """Whole copies while they fit, then a random sample until the target is reached."""
    one = sum(map(weight, tweets))
    copies = max(1, target // one)
    out, total = tweets * copies, one * copies
    pool = list(tweets)
    rng.shuffle(pool)
    for tweet in pool:
        if total >= target:
            break
        out.append(tweet)
        total += weight(tweet)
    return out


# --------------------------------------------------------------------------- reading: bytes
