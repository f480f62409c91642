"""Ingestion: every format, every bad input, huggingtweets' cleaning, and the real corpora."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import random
import re
import struct
import zipfile
from pathlib import Path

import pytest

from bot.core.ingest import archive as archive_module
from bot.core.ingest import formats as formats_module
from bot.core.ingest.cleaning import IngestStats, balance_people, clean_posts, clean_text, is_short
from bot.core.ingest.formats import MAX_INPUT_BYTES, read_posts
from bot.core.ingest.pipeline import ingest, ingest_path
from bot.core.ingest.rawposts import IngestError, RawPost, UnsupportedFile

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/tweets"
OBAMA, ELON, KATY = (
    "barackobama_fivethirtyeight.csv",
    "elonmusk_bytes_literal.csv",
    "katyperry_topic_labelling.csv",
)
MOJIBAKE = ("â€", "‰Û", "Û÷", "Ã©", "\ufffd")


# --------------------------------------------------------------------------- made-up files


def tweets(n: int = 150) -> list[str]:
    """Distinct, long enough tweets: 150 of them make well over 6,000 characters."""
    topics = ["rockets", "tunnels", "music", "coffee", "the weather", "elections", "cats", "books"]
    return [f"Tweet {i} is about {topics[i % len(topics)]} and it has plenty of words" for i in range(n)]


def archive_entry(text: str, **extra) -> dict:
    """An entry shaped like a real data/tweets.js one."""
    return {
        "tweet": {
            "id_str": "1",
            "full_text": text,
            "retweeted": False,
            "favorite_count": "3",
            "lang": "en",
            "entities": {"hashtags": [], "urls": []},
            **extra,
        }
    }


def tweets_js(entries: list, key: str = "tweets", part: int = 0) -> bytes:
    return f"window.YTD.{key}.part{part} = {json.dumps(entries, indent=2)}".encode()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def csv_bytes(header: list[str], rows: list[list], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def patch_zip(data: bytes, local_offset: int, central_offset: int, fmt: str, value: int) -> bytes:
    """Overwrite one field in every local and central directory header (forging a zip)."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        for match in re.finditer(re.escape(signature), data):
            struct.pack_into(fmt, out, match.start() + offset, value)
    return bytes(out)


# --------------------------------------------------------------------------- every format

TWEETS = tweets()
ROWS = [[i, t, 5] for i, t in enumerate(TWEETS)]


def archive_zip() -> bytes:
    """A whole archive, re-zipped with its top folder: tweets in two parts, among other files."""
    entries = [archive_entry(t) for t in TWEETS[:100]] + [archive_entry("RT @someone: not theirs at all")]
    return make_zip(
        {
            "twitter-2024/Your archive.html": b"<html></html>",
            "twitter-2024/data/manifest.js": b"window.__THAR_CONFIG = {}",
            "twitter-2024/data/tweets-part1.js": tweets_js([archive_entry(t) for t in TWEETS[100:]], part=1),
            "twitter-2024/data/tweets.js": tweets_js(entries),
            "twitter-2024/data/like.js": tweets_js([{"like": {"fullText": "x"}}], key="like"),
            "twitter-2024/data/tweets_media/1-a.jpg": b"\xff\xd8\xff" + bytes(100),
        }
    )


def _formats():
    entries = [archive_entry(t) for t in TWEETS[:100]] + [archive_entry("RT @someone: not theirs at all")]
    plain_entries = [{"full_text": t, "retweeted": False} for t in TWEETS[100:]]
    yield "tweets.js", "tweets.js", tweets_js(entries + plain_entries), "twitter-archive"
    yield "old tweet.js", "tweet.js", tweets_js(entries + plain_entries, key="tweet"), "twitter-archive"
    yield "archive zip", "twitter-2024.zip", archive_zip(), "twitter-archive"
    yield (
        "old archive zip (tweets.csv)",
        "old.zip",
        make_zip(
            {
                "tweets.csv": csv_bytes(
                    ["tweet_id", "retweeted_status_id", "text"],
                    [[i, "", t] for i, t in enumerate(TWEETS)] + [[9, 123, "theirs, not quoted as RT"]],
                ),
            }
        ),
        "twitter-archive",
    )
    for name in ("text", "full_text", "tweet", "content", "body", "message", "post", "Text", "TWEET"):
        yield f"csv column {name}", "posts.csv", csv_bytes(["id", name, "likes"], ROWS), "csv"
    yield "csv semicolons", "export.csv", csv_bytes(["id", "text", "likes"], ROWS, ";"), "csv"
    yield "tsv", "export.tsv", csv_bytes(["id", "text", "likes"], ROWS, "\t"), "csv"
    yield (
        "csv with BOM, no extension",
        "",
        b"\xef\xbb\xbf" + csv_bytes(["text"], [[t] for t in TWEETS]),
        "csv",
    )
    yield "json strings", "tweets.json", json.dumps(TWEETS).encode(), "json"
    objects = [{"id": i, "text": t} for i, t in enumerate(TWEETS)]
    yield "json objects", "tweets.json", json.dumps(objects).encode(), "json"
    yield "json wrapped", "x.json", json.dumps({"user": "x", "tweets": TWEETS}).encode(), "json"
    api_v2 = {
        "data": [{"id": str(i), "text": t, "edit_history_tweet_ids": [str(i)]} for i, t in enumerate(TWEETS)],
        "meta": {"result_count": len(TWEETS)},
    }
    yield "api v2", "", json.dumps(api_v2).encode(), "json"
    yield (
        "jsonl objects",
        "tweets.jsonl",
        "\n".join(json.dumps({"content": t}) for t in TWEETS).encode(),
        "jsonl",
    )
    yield "jsonl strings, detected", "", "\n".join(json.dumps(t) for t in TWEETS).encode() + b"\n\n", "jsonl"
    yield "plain text", "tweets.txt", "\n".join(TWEETS).encode(), "text"
    yield "plain text, CRLF", "", "\r\n".join(["[1/3] a thread starts here"] + TWEETS).encode(), "text"
    yield "utf-16 text", "tweets.txt", "\n".join(TWEETS).encode("utf-16"), "text"


@pytest.mark.parametrize("filename,data,fmt", [f[1:] for f in _formats()], ids=[f[0] for f in _formats()])
def test_every_format(filename, data, fmt):
    result = ingest(data, filename)
    assert result.format == fmt
    assert set(TWEETS) <= set(result.tweets)
    assert result.stats.kept == len(result.tweets) >= len(TWEETS)
    assert result.kept_chars == sum(map(len, result.tweets))
    assert not any(t.startswith("RT @") for t in result.tweets)


def test_archive_zip_reads_every_part_in_order():
    posts, fmt = read_posts(archive_zip(), "archive.zip")
    assert fmt == "twitter-archive"
    assert [p.text for p in posts if not p.text.startswith("RT")] == TWEETS  # part0 then part1
    assert sum(p.text.startswith("RT @") for p in posts) == 1


def test_archive_metadata_marks_retweets_without_rt_prefix():
    entries = [{"full_text": t} for t in TWEETS] + [
        {"full_text": "quoted without the prefix", "retweeted_status": {"id": 1}},
        {"full_text": "another one", "retweeted": True},
    ]
    result = ingest(json.dumps(entries).encode(), "tweets.json")
    assert result.stats.retweets == 2 and result.stats.kept == len(TWEETS)
    api_v2 = {
        "data": [{"text": t} for t in TWEETS]
        + [{"text": "their words", "referenced_tweets": [{"type": "retweeted", "id": "9"}]}]
    }
    assert ingest(json.dumps(api_v2).encode()).stats.retweets == 1


def test_csv_retweet_column_and_multiline_fields():
    data = "id,Text,is_retweet\n" + "".join(
        f'{i},"{t}\nsecond line {i}",False\n' for i, t in enumerate(TWEETS)
    )
    data += '999,"somebody else entirely here",True\n'
    result = ingest(data.encode(), "export.csv")
    assert result.stats.downloaded == len(TWEETS) + 1 and result.stats.retweets == 1
    assert result.tweets[0] == f"{TWEETS[0]} second line 0"


def test_legacy_cp1252_file_is_read_with_a_warning():
    lines = [f"{t} \u2019quoted\u2019 café" for t in TWEETS]
    result = ingest("\n".join(lines).encode("cp1252"), "tweets.txt")
    assert result.tweets[0] == lines[0]
    assert any("cp1252" in w for w in result.warnings)


def test_stray_nul_bytes_after_the_first_kb_are_stripped_with_a_warning():
    data = "\n".join(TWEETS).encode()
    data = data[:2000] + b"\x00\x00" + data[2000:]
    result = ingest(data, "tweets.txt")
    assert "\x00" not in "".join(result.tweets)
    assert any("2 NUL bytes" in w for w in result.warnings)


def test_zip_ignores_unsafe_names_it_does_not_use():
    data = make_zip(
        {"../../evil.sh": b"rm -rf /", "data/tweets.js": tweets_js([archive_entry(t) for t in TWEETS])}
    )
    assert ingest(data, "archive.zip").stats.kept == len(TWEETS)


def test_read_member_stops_at_the_budget_whatever_the_header_says():
    data = make_zip({"data/tweets.js": b"x" * (3 << 20)})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        with pytest.raises(IngestError, match="too large"):
            archive_module._read_member(archive, archive.getinfo("data/tweets.js"), budget=1 << 20)


# --------------------------------------------------------------------------- every bad input


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """256 MiB of zeros deflated to about 1 MB, streamed so it never sits in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("data/tweets.js", "w", force_zip64=True) as member:
            zeros = bytes(1 << 20)
            for _ in range(256):
                member.write(zeros)
    return buf.getvalue()


def _good_zip() -> bytes:
    return make_zip({"data/tweets.js": tweets_js([archive_entry(t) for t in TWEETS])})


BAD_INPUTS = [
    # id, filename, data (or a callable making it), words the message must contain
    ("0 bytes", "tweets.csv", b"", ["empty"]),
    ("whitespace only", "tweets.txt", b"  \n\t\r\n  ", ["blank"]),
    ("BOM only", "tweets.csv", b"\xef\xbb\xbf\n", ["blank"]),
    ("binary with NUL", "tweets.txt", bytes(range(256)) * 4, ["binary", "NUL"]),
    ("NUL bytes in the first KB", "tweets.txt", b"hello there my friends\x00\x00 and more\n" * 5, ["binary"]),
    ("PNG renamed .csv", "tweets.csv", b"\x89PNG\r\n\x1a\n" + bytes(64), ["binary", "PNG", "CSV"]),
    ("JPEG renamed .txt", "tweets.txt", b"\xff\xd8\xff\xe0" + b"JFIF" * 20, ["JPEG"]),
    ("PDF", "tweets.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", ["PDF"]),
    ("HTML page", "Your archive.html", b"<!DOCTYPE html><html><body>hi</body></html>", ["HTML", "CSV"]),
    (
        "CSV without a text column",
        "tweets.csv",
        b"id,date,likes\n1,2020-01-01,5\n",
        ["`id`, `date`, `likes`", "full_text"],
    ),
    ("CSV with only a header", "tweets.csv", b"id,text\n", ["No posts"]),
    (
        "JSON objects without text",
        "tweets.json",
        b'[{"id": 1, "likes": 2}]',
        ["no text field", "`id`", "full_text"],
    ),
    ("JSON numbers", "tweets.json", b"[1, 2, 3]", ["strings or objects"]),
    (
        "JSON object without a list",
        "tweets.json",
        b'{"user": "x", "count": 3}',
        ["no list of posts", "tweets"],
    ),
    ("JSON empty list", "tweets.json", b"[]", ["No posts"]),
    ("invalid JSON", "tweets.json", b'[{"text": "unfinished"', ["not valid", "line 1"]),
    (
        "invalid JSONL line",
        "tweets.jsonl",
        b'{"text": "a b c"}\n{"text": "d e f"}\n{"text": oops}\n',
        ["Line 3"],
    ),
    (
        "tweets.js with a wrong prefix",
        "tweets.js",
        b'window.data = [{"tweet": {"full_text": "hi"}}]',
        ["window.data", "window.YTD.tweets.part0"],
    ),
    ("tweets.js without a prefix", "tweets.js", b"just some text", ["window.YTD.tweets.part0"]),
    (
        "like.js instead of tweets.js",
        "like.js",
        tweets_js([{"like": {"fullText": "x"}}], key="like"),
        ["`like`"],
    ),
    ("tweets.js with broken JSON", "tweets.js", b"window.YTD.tweets.part0 = [{", ["not valid JSON"]),
    (
        "zip without tweets.js",
        "archive.zip",
        make_zip({"data/like.js": b"[]", "readme.txt": b"hi"}),
        ["No tweets.js", "data/tweets.js"],
    ),
    (
        "Excel workbook",
        "tweets.xlsx",
        make_zip({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<x/>"}),
        ["Excel", "CSV"],
    ),
    ("empty zip", "archive.zip", make_zip({}), ["No tweets.js"]),
    ("damaged zip", "archive.zip", _good_zip()[:200], ["damaged"]),
    (
        "zip with ../ names",
        "archive.zip",
        make_zip({"../data/tweets.js": tweets_js([archive_entry("hi")])}),
        ["unsafe", "../data/tweets.js"],
    ),
    (
        "zip with an absolute name",
        "archive.zip",
        make_zip({"/data/tweets.js": tweets_js([archive_entry("hi")])}),
        ["unsafe"],
    ),
    ("zip bomb", "archive.zip", "zip_bomb", ["too large", "uncompressed"]),
    # file_size forged in both headers: refused before any byte is decompressed
    (
        "zip claiming 3 GB",
        "archive.zip",
        lambda: patch_zip(_good_zip(), 22, 24, "<I", 3_000_000_000),
        ["too large"],
    ),
    # file_size forged small: zipfile stops there and the CRC no longer matches
    (
        "zip lying about its size",
        "archive.zip",
        lambda: patch_zip(_good_zip(), 22, 24, "<I", 100),
        ["damaged"],
    ),
    ("encrypted zip", "archive.zip", lambda: patch_zip(_good_zip(), 6, 8, "<H", 0x1), ["password"]),
    (
        "oversize input",
        "tweets.txt",
        lambda: b"x" * (MAX_INPUT_BYTES + 1),
        [f"limit is {MAX_INPUT_BYTES // 2**20} MB"],
    ),
    ("one huge line", "tweets.txt", lambda: b"a" * (10 << 20), ["10,000 characters", "only post"]),
    ("huge CSV field", "tweets.csv", lambda: b"text\n" + b"word " * (2 << 20), ["10,000 characters"]),
    (
        "all retweets",
        "tweets.txt",
        "\n".join(f"RT @user{i}: {t}" for i, t in enumerate(tweets(120))).encode(),
        ["All 120 posts were retweets", "6,000"],
    ),
    (
        "all short",
        "tweets.txt",
        "\n".join(f"@friend thanks {i}" for i in range(80)).encode(),
        ["All 80 posts were too short", "6,000"],
    ),
    (
        "all duplicates but one",
        "tweets.txt",
        ("same words again and again\n" * 50).encode(),
        ["Only 26 characters", "1 tweet kept", "49 duplicates"],
    ),
    (
        "too little text",
        "tweets.txt",
        "\n".join(tweets(20) + ["RT @x: hi there"] * 3).encode(),
        ["Only", "20 tweets kept", "at least 6,000", "3 retweets"],
    ),
]


@pytest.mark.parametrize("filename,data,words", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_specific_message(filename, data, words, request):
    if data == "zip_bomb":
        data = request.getfixturevalue("zip_bomb")
    elif callable(data):
        data = data()
    with pytest.raises(IngestError) as caught:
        ingest(data, filename)
    message = str(caught.value)
    for word in words:
        assert word.lower() in message.lower()
    assert len(message) < 600  # fits a Discord reply


def test_ingest_path_refuses_oversize_files_without_reading_them(tmp_path):
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as f:
        f.truncate(MAX_INPUT_BYTES + 1)  # sparse: never actually read
    with pytest.raises(IngestError, match="limit"):
        ingest_path(huge)
    with pytest.raises(IngestError, match="Cannot read"):
        ingest_path(tmp_path / "missing.csv")


def test_ingest_path_reads_a_file(tmp_path):
    path = tmp_path / "tweets.js"
    path.write_bytes(tweets_js([archive_entry(t) for t in TWEETS]))
    assert ingest_path(path).format == "twitter-archive"


def test_ingest_path_reads_a_large_archive_in_place(tmp_path, monkeypatch):
    """The CLI on a whole archive: a zip over MAX_INPUT_BYTES is read on disk, its tweets only."""
    monkeypatch.setattr(formats_module, "MAX_INPUT_BYTES", 1 << 20)
    path = tmp_path / "twitter-2026.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data/tweets_media/video.mp4", random.Random(0).randbytes(2 << 20))
        archive.writestr(
            "data/tweets.js", tweets_js([archive_entry(t) for t in TWEETS]), zipfile.ZIP_DEFLATED
        )
    assert path.stat().st_size > 2 << 20
    assert ingest_path(path).stats.kept == len(TWEETS)


@pytest.mark.parametrize(
    "name,content",
    [
        ("tweets.js.gz", tweets_js([archive_entry(t) for t in TWEETS])),
        ("posts.csv.gz", csv_bytes(["id", "text"], ROWS)),
        ("posts.json.gz", json.dumps(TWEETS).encode()),
        ("posts.txt.gz", "\n".join(TWEETS).encode()),
        ("no-suffix", "\n".join(TWEETS).encode()),  # detected by its magic bytes, not its name
    ],
)
def test_gzipped_files_are_read_like_the_file_inside(name, content):
    plain = ingest(content, name.removesuffix(".gz"))
    zipped = ingest(gzip.compress(content), name)
    assert (zipped.format, zipped.tweets) == (plain.format, plain.tweets)
    # Several gzip members one after the other (`cat a.gz b.gz`) are one file.
    half = len(content) // 2
    assert ingest(gzip.compress(content[:half]) + gzip.compress(content[half:]), name).tweets == plain.tweets


def test_gzip_bombs_and_damage_get_clear_errors(monkeypatch):
    monkeypatch.setattr(formats_module, "MAX_INPUT_BYTES", 1 << 20)
    bomb = gzip.compress(b"a tweet " * (1 << 18), compresslevel=9)  # 2 MB inside, a few KB outside
    assert len(bomb) < 64 * 1024
    with pytest.raises(UnsupportedFile, match="Uncompressed, the file is over the 1 MB limit"):
        ingest(bomb, "tweets.txt.gz")
    whole = gzip.compress("\n".join(TWEETS).encode())
    with pytest.raises(IngestError, match="cut short"):
        ingest(whole[: len(whole) // 2], "tweets.txt.gz")
    with pytest.raises(IngestError, match="damaged"):
        ingest(whole[:10] + bytes(200), "tweets.txt.gz")
    with pytest.raises(IngestError, match="empty"):
        ingest(gzip.compress(b""), "tweets.txt.gz")
    with pytest.raises(IngestError, match="tar archive"):
        ingest(gzip.compress(bytes(257) + b"ustar" + bytes(300)), "archive.tar.gz")


def test_damaged_inputs_never_crash():
    """Random damage to valid files gives a result or an IngestError, never another exception."""
    rng = random.Random(0)
    seeds = [
        tweets_js([archive_entry(t) for t in TWEETS[:20]]),
        make_zip({"data/tweets.js": tweets_js([archive_entry(t) for t in TWEETS[:20]])}),
        csv_bytes(["id", "text"], ROWS[:20]),
        json.dumps({"data": [{"text": t} for t in TWEETS[:20]]}).encode(),
        "\n".join(TWEETS[:20]).encode(),
    ]
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(data) or 1)
            if rng.random() < 0.5:
                data[i : i + 1] = bytes([rng.randrange(256)])
            else:
                data[i:i] = rng.choice([b"[", b"}", b'"', b",", b"\n", b"\x00", b"\\", b"b'", b"PK\x03\x04"])
        try:
            ingest(bytes(data), rng.choice(["", "x.csv", "x.json", "tweets.js", "x.zip"]), min_chars=0)
        except IngestError:
            pass


# --------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    "raw,cleaned",
    [
        ("Check this https://t.co/abc123 out now", "Check this out now"),
        ("http://t.co/x starts and ends with links https://t.co/y", "starts and ends with links"),
        (
            "Michelle &amp; I &lt;3 you &gt; them &quot;ok&quot; it&#39;s",
            'Michelle & I <3 you > them "ok" it\'s',
        ),
        ("&amp;lt; is unescaped once", "&lt; is unescaped once"),
        ("  lots\n\nof \t  space\r\nhere ", "lots of space here"),
        ("@friend #hashtag emoji 🚀🔥 stay", "@friend #hashtag emoji 🚀🔥 stay"),
        ("b'Good analysis &amp; sync\\xe2\\x80\\xa6 https://t.co/eno9VqxDq7'", "Good analysis & sync…"),
        ('b"It\'s a bytes literal\\nwith a newline"', "It's a bytes literal with a newline"),
        ("b'broken escape \\x'", "b'broken escape \\x'"),  # not a valid literal: left alone
        ("b'a' + __import__('os').getcwd()", "b'a' + __import__('os').getcwd()"),  # never evaluated
        ("Itâ€™s cp1252 mojibake", "It’s cp1252 mojibake"),
        ("we‰Ûªre changing‰ÛÓfast ‰ÛÏquoted‰Ûù", "we’re changing—fast “quoted”"),
        ("Join us a‰Û_ https://t.co/gkrp1RwXR4", "Join us a…"),
        ("Poverty rate: ‰Âà record ‰ÏÒ and ‰ÏÓ•üè", "Poverty rate: ⬇ record ✓ and ✔\ufe0f"),
        ("MAJOR _ÙÓÔ ALERT and _Ù__ lost", "MAJOR 🔑 ALERT and lost"),
        ("ma‰ö_ estÌÁn maÌ±ana", "ma están mañana"),
        *[
            (text, text)
            for text in [  # real accents, symbols, quotes and full-width letters are left alone
                "Ça va? Très bien. Schön, Åse på tur. 5‰ of “quotes” — fine…",
                "• bullet, Ì alone, år — ＦＵＬＬ width stays",
            ]
        ],
        ("zero\u200bwidth", "zerowidth"),
    ],
)
def test_clean_text(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_clean_posts_counts_each_step_in_order():
    posts = [RawPost(t) for t in TWEETS[:5]] + [
        RawPost("RT @x: even if short"),  # retweet before short
        RawPost("quoted text here", is_retweet=True),  # retweet from metadata
        RawPost("@a @b thanks!"),  # short: 1 word without @
        RawPost("https://t.co/only-a-link"),  # short: empty after cleaning
        RawPost("…"),  # short: an ellipsis leftover
        RawPost(TWEETS[0] + " https://t.co/other"),  # duplicate once cleaned
        RawPost(TWEETS[1].replace(" ", "  ")),  # duplicate once cleaned
        RawPost("x" * 20_000),  # too long, before anything else
    ]
    kept, stats = clean_posts(posts)
    assert kept == TWEETS[:5]
    assert (stats.downloaded, stats.too_long, stats.retweets, stats.short, stats.duplicates, stats.kept) == (
        13,
        1,
        2,
        3,
        2,
        5,
    )
    assert stats.downloaded == stats.too_long + stats.retweets + stats.short + stats.duplicates + stats.kept


@pytest.mark.parametrize(
    "text,short",
    [
        ("", True),
        ("…", True),
        ("two words", True),
        ("@a @b #c thanks", True),
        ("three words here", False),
        ("@a three words here", False),
    ],
)
def test_short_is_huggingtweets_boring_tweet(text, short):
    assert is_short(text) is short


def test_stats_table_and_dict():
    stats = IngestStats(downloaded=3207, retweets=351, short=30, duplicates=14, kept=2812)
    assert stats.as_markdown("Barack Obama") == (
        "| Data | Barack Obama |\n|---|---|\n| Tweets downloaded | 3207 |\n| Retweets | 351 |\n"
        "| Short tweets | 30 |\n| Duplicates | 14 |\n| Tweets kept | 2812 |"
    )
    assert stats.as_dict() == {
        "downloaded": 3207,
        "retweets": 351,
        "short": 30,
        "duplicates": 14,
        "kept": 2812,
        "too_long": 0,
    }
    stats.too_long = 2
    assert "| Too long (not tweets) | 2 |" in stats.as_markdown()


def test_warnings_and_size_gates():
    few = "\n".join(tweets(150)).encode()  # about 9,000 characters
    result = ingest(few, "t.txt")
    assert any("under 40,000" in w for w in result.warnings)
    assert not ingest(few, "t.txt", warn_chars=1000).warnings
    with pytest.raises(IngestError, match="at least 20,000"):
        ingest(few, "t.txt", min_chars=20_000)
    long_post = "\n".join(tweets(150) + ["y " * 6000]).encode()
    assert any("skipped as not tweets" in w for w in ingest(long_post, "t.txt").warnings)


def test_balance_people_balances_text_like_huggingtweets():
    verbose = [f"a long tweet number {i} " + "word " * 20 for i in range(50)]
    terse = ["short one", "another short", "third small"]
    merged = balance_people([verbose, terse], seed=1)
    assert merged[:50] == verbose
    extra = merged[50:]
    assert set(extra) == set(terse)
    verbose_chars, terse_chars = sum(map(len, verbose)), sum(map(len, extra))
    assert verbose_chars <= terse_chars < verbose_chars + max(map(len, terse))
    assert balance_people([verbose, terse], seed=1) == merged  # deterministic
    by_count = balance_people([verbose, terse], seed=1, by="tweets")
    assert len(by_count) == 100 and by_count[50:53] == terse
    assert balance_people([terse]) == terse
    assert balance_people([[], []]) == []


# --------------------------------------------------------------------------- the real corpora


@pytest.fixture(scope="module")
def real():
    if not SHARED.is_dir():
        pytest.skip(f"real tweet corpora not available: {SHARED} is absent")
    cache = {}

    def load(name):
        if name not in cache:
            if not (SHARED / name).is_file():
                pytest.skip(f"real tweet corpus {SHARED / name} is absent")
            cache[name] = ingest_path(SHARED / name)
        return cache[name]

    return load


@pytest.mark.parametrize("name", [OBAMA, ELON, KATY])
def test_real_corpora_come_out_clean(real, name):
    result = real(name)
    s = result.stats
    assert result.format == "csv"
    assert s.downloaded == s.too_long + s.retweets + s.short + s.duplicates + s.kept
    assert s.kept == len(result.tweets) and len(set(result.tweets)) == s.kept
    joined = "\n".join(result.tweets)
    for marker in ("&amp;", "&gt;", "http", "\\x", "\\n", *MOJIBAKE):
        assert marker not in joined, marker
    assert not any(t.startswith(("b'", 'b"', "RT @")) for t in result.tweets)
    assert all(t == t.strip() and "  " not in t and "\n" not in t for t in result.tweets)


def test_obama(real):
    result = real(OBAMA)
    s = result.stats
    assert s.downloaded == 3207 and s.retweets == 351
    assert 20 <= s.short <= 40  # huggingtweets' boring_tweet drops 30
    assert 2700 <= s.kept <= 2900
    assert any("Mac Roman" in w for w in result.warnings)
    assert any(t.startswith("Michelle & I are praying for the victims in Las Vegas.") for t in result.tweets)
    assert any(t.endswith("Join us a…") for t in result.tweets)  # "‰Û_" was the truncation ellipsis
    assert sum("’" in t for t in result.tweets) > 50


def test_elon(real):
    result = real(ELON)
    s = result.stats
    assert s.downloaded == 3195 and 390 <= s.retweets <= 405
    assert 1900 <= s.kept <= 2300
    assert (
        "@cleantechnica Good analysis. Both computers will be used & sync ~20 times per second. "
        "This is a long time to a com…"
    ) in result.tweets  # was b'...&amp; ...\xe2\x80\xa6 https://...'
    assert any("don’t hurt me haha…" in t for t in result.tweets)


def test_katy(real):
    result = real(KATY)
    s = result.stats
    assert s.downloaded == 1607 and 140 <= s.retweets <= 170 and 1250 <= s.kept <= 1450
    # a quoted field spanning two lines is one tweet
    assert (
        ". @realDonaldTrump how bout you start with an apology for your divisive, racist, xenophobic "
        "rhetoric? #thanksgivingdayclapback"
    ) in result.tweets
    assert any("✨" in t for t in result.tweets)


def test_real_corpus_read_as_bytes_matches_path(real):
    data = (SHARED / KATY).read_bytes()
    assert ingest(codecs.BOM_UTF8 + data, "").tweets == real(KATY).tweets  # no name, a BOM: same result
