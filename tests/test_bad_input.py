"""The bad-input corpus, sent through Discord: each case gets a short, specific answer and leaves
no trace (no job, no model, no schedule, no file in the store), and the bot keeps running."""

import io
import json
import zipfile

import pytest

from tests.conftest import TINY_CORPUS
from tests.test_discord_bot import CORPUS, train

LINES = TINY_CORPUS.read_text().splitlines()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("data/tweets.js", "w", force_zip64=True) as member:
            member.write(b"window.YTD.tweets.part0 = [")
            chunk = b" " * (1 << 20)
            for _ in range(260):  # 260 MiB of blanks, a few hundred KB compressed
                member.write(chunk)
    return buffer.getvalue()


ARCHIVE_TWEETS = "window.YTD.tweets.part0 = " + json.dumps([{"tweet": {"full_text": line}} for line in LINES])

FILES = [
    ("empty.csv", b"", "empty"),
    ("blank.txt", b"   \n\n  ", "blank"),
    ("binary.bin", bytes(range(256)) * 40, "binary"),
    ("photo.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG"),
    ("tweets.pdf", b"%PDF-1.7\n" + b"x" * 100, "PDF"),
    ("nul.txt", b"abc\x00def\n" * 50, "binary"),
    ("bad.json", b'[{"text": "unterminated', "JSON"),
    ("objects.json", json.dumps([{"id": 1}, {"id": 2}]).encode(), "text field"),
    ("tweets.js", b"window.data = " + ARCHIVE_TWEETS.split("= ", 1)[1].encode(), "window.YTD.tweets.part0"),
    ("like.js", ARCHIVE_TWEETS.replace("tweets.part0", "like.part0").encode(), "like"),
    ("nocol.csv", b"id,created_at\n1,2\n3,4\n", "No text column"),
    ("retweets.csv", ("text\n" + "\n".join(f"RT @someone: {line}" for line in LINES)).encode(), "retweets"),
    ("short.txt", ("\n".join(f"ok {i}" for i in range(400))).encode(), "short"),
    ("huge_line.txt", b"word " * 400_000, "10,000 characters"),
    ("tiny.txt", b"\n".join(line.encode() for line in LINES[:5]), "6,000"),
    ("archive.zip", zip_of({"data/like.js": b"window.YTD.like.part0 = []"}), "tweets.js"),
    ("traversal.zip", zip_of({"../data/tweets.js": ARCHIVE_TWEETS.encode()}), "unsafe"),
    ("bomb.zip", zip_bomb(), "too large"),
    ("broken.zip", b"PK\x03\x04" + b"\x00" * 100, "damaged"),
]


@pytest.mark.parametrize("filename,data,needle", FILES, ids=[f[0] for f in FILES])
async def test_bad_attachment(discord_env, filename, data, needle):
    env = discord_env
    reply = await env.server.slash(env.guild, env.admin, "train new", handle="victim", file=(filename, data))
    await reply.wait(lambda i: i.original and "⚠️" in (i.original.get("content") or ""), timeout=60)
    message = reply.original["content"]
    assert needle.lower() in message.lower(), message
    assert len(message) < 400
    await assert_no_trace(env)


async def assert_no_trace(env):
    core = env.bot.core
    assert await core.trainings.list(env.guild) == []
    assert await core.list_models(env.guild) == []
    store = core.store.root
    assert not (store / str(env.guild)).exists() or not any((store / str(env.guild)).iterdir())
    assert not any((store / ".staging").glob("*")) if (store / ".staging").exists() else True
    assert await core.integrity_check() == "ok"


async def test_mixed_encodings_are_read_not_refused(discord_env):
    """A file mostly UTF-8 with a few cp1252 bytes is read, with the damage repaired or dropped."""
    env = discord_env
    data = "\n".join(LINES).encode() + "\ncaf\xe9 na\xefve words here today\n".encode("cp1252")
    reply, done = await train(env, handle="mixed", file=("mixed.txt", data))
    assert "`mixed` is ready" in done["content"]


ARGUMENTS = [
    ("impersonate", {"handle": "alice", "prompt": "x" * 5000}, "too long"),
    ("impersonate", {"handle": "alice", "count": 0}, "between 1 and 10"),
    ("impersonate", {"handle": "alice", "count": -1}, "between 1 and 10"),
    ("impersonate", {"handle": "alice", "count": 1000}, "between 1 and 10"),
    ("impersonate", {"handle": "../../etc"}, "letters, digits"),
    ("impersonate", {"handle": "a" * 200}, "too long"),
    ("autopost add", {"handle": "alice", "every": "0s"}, "between 5 minutes"),
    ("autopost add", {"handle": "alice", "every": "-5m"}, "negative"),
    ("autopost add", {"handle": "alice", "every": "999999d"}, "between 5 minutes"),
    ("autopost add", {"handle": "alice", "every": "1h", "jitter": "2h"}, "jitter"),
    ("autopost add", {"handle": "alice", "daily_at": "25:00"}, "time of day"),
    ("autopost add", {"handle": "alice", "daily_at": "09:00", "timezone": "Mars/Base"}, "time zone"),
    ("autopost pause", {"id": 999}, "no schedule #999"),
    ("train cancel", {"job": 999}, "no training job #999"),
    ("train new", {"handle": "ok", "file": CORPUS, "avatar": "javascript:alert(1)"}, "http"),
    ("models import", {"repo": "not a repo id"}, "Hugging Face model id"),
    ("models info", {"handle": "x'; DROP TABLE models;--"}, "letters, digits"),
    ("models delete", {"handle": "@everyone"}, "reserved"),
]


@pytest.mark.parametrize(
    "command,options,needle", ARGUMENTS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(ARGUMENTS)]
)
async def test_bad_argument(discord_env, command, options, needle):
    env, server = discord_env, discord_env.server
    if command == "autopost add":
        options = {"channel": env.channel, **options}
    reply = await (await server.slash(env.guild, env.admin, command, **options)).answered()
    assert reply.ephemeral and needle in reply.text(), reply.text()
    await assert_no_trace(env)
    assert await env.bot.core.schedules.list(env.guild) == []
    # The bot is still fine afterwards.
    alive = await (await server.slash(env.guild, env.member, "models list")).answered()
    assert "No personas yet" in alive.text()
