"""Discord data packages read like tweet archives: layouts, server channels only, drops, caps."""

import io
import json
import zipfile

import pytest

from bot.core.ingest import datapackage
from bot.core.ingest.datapackage import drop_reason, without_markup
from bot.core.ingest.pipeline import IngestError, ingest, ingest_path
from bot.discord.ui import stats_table
from tests.conftest import tiny_tweets
from tests.discord_package import (
    COMMANDS,
    LINK_SHARES,
    OTHER_SERVER,
    SECRET_DM,
    SECRET_GROUP,
    build_package,
    member_channels,
    private_channels,
    server_channel,
)

GUILD, OTHER = 111_000_000_000_000_001, 222_000_000_000_000_002


def read(data: bytes, **kw):
    return ingest(data, "package.zip", **kw)


def secrets_in(tweets: list[str]) -> list[str]:
    return [t for t in tweets if "SECRET" in t or OTHER_SERVER.split()[0] in t]


@pytest.mark.parametrize("type_names", [False, True])
def test_new_layout_keeps_server_messages_and_never_dms(type_names):
    data = build_package(member_channels(GUILD), top="package/", owner_id=4242, type_names=type_names)
    result = read(data)
    assert result.format == "discord-package" and result.owner_id == 4242
    assert secrets_in(result.tweets) == []
    stats = result.stats
    assert stats.downloaded == 400 + len(COMMANDS) + len(LINK_SHARES) + 4  # server messages only
    assert stats.commands == len(COMMANDS) and stats.links == len(LINK_SHARES)
    assert stats.kept == len(result.tweets) > 300
    assert stats.downloaded == sum(
        getattr(stats, k)
        for k in ("commands", "links", "too_long", "retweets", "short", "duplicates", "kept")
    )
    assert any("2 DM and group DM conversations were skipped unread" in w for w in result.warnings)
    table = stats_table(stats.as_dict())
    assert "Bot commands" in table and "Link shares" in table and "Tweets kept" in table


def test_old_csv_layout_reads_the_same_messages():
    channels = member_channels(GUILD)
    new = read(build_package(channels))
    old = read(build_package(channels, layout="csv"))
    assert old.tweets == new.tweets and old.stats.as_dict() == new.stats.as_dict()


@pytest.mark.parametrize("top", ["", "messages/", "my data/Messages/"])
def test_the_messages_folder_zipped_alone(top):
    channels = member_channels(GUILD)
    whole = read(build_package(channels, owner_id=7))
    alone = build_package(channels, messages_only=True)
    if top != "messages/":  # re-root it: the folder's contents at the top, or under two folders
        alone = _rerooted(alone, "Messages/", top)
    result = read(alone)
    assert result.tweets == whole.tweets and result.owner_id is None


def _rerooted(data: bytes, old: str, new: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(new + info.filename[len(old) :], src.read(info))
    return out.getvalue()


def test_dm_messages_are_never_opened():
    """A DM's messages.json is not even parsed: garbage there changes nothing."""
    channels = member_channels(GUILD)
    data = build_package(channels)
    dm = next(c for c in channels if c.type == 1)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            broken = info.filename.endswith(f"c{dm.id}/messages.json")
            dst.writestr(info.filename, b"\x00 not json {{{" if broken else src.read(info))
    assert read(out.getvalue()).tweets == read(data).tweets


def test_only_this_servers_channels_when_asked():
    data = build_package(member_channels(GUILD, other_guild=OTHER))
    everything = read(data)
    assert sum(OTHER_SERVER.split()[0] in t for t in everything.tweets) == 80
    here = read(data, guild_id=GUILD)
    assert secrets_in(here.tweets) == [] and len(here.tweets) == len(everything.tweets) - 80
    assert any("1 channels of other servers were left out" in w for w in here.warnings)
    with pytest.raises(IngestError, match="None of this package's messages are from this server"):
        read(data, guild_id=999)


def test_a_package_of_dms_only_is_refused():
    with pytest.raises(IngestError, match="only DMs and group DMs"):
        read(build_package(private_channels()))


def test_a_channel_without_a_guild_counts_as_private():
    lines = tiny_tweets()
    channels = [server_channel(GUILD, "general", lines[:200]), server_channel(GUILD, "x", [SECRET_DM] * 50)]
    channels[1].guild = None
    channels[1].type = 0
    result = read(build_package(channels))
    assert secrets_in(result.tweets) == []


def test_commands_links_and_markup():
    assert [drop_reason(t) for t in COMMANDS] == ["commands"] * len(COMMANDS)
    assert [drop_reason(t) for t in LINK_SHARES] == ["links"] * len(LINK_SHARES)
    kept = [
        "e.g. this is a normal sentence",
        "Wow. That went well today",
        "look at this https://x.y it is great",
        "...anyway I think so too",
        "?? really, that is what they said",
    ]
    assert [drop_reason(t) for t in kept] == [None] * len(kept)
    assert without_markup("<@123> hi <#456> at <t:1700000000:R> <a:dance:789>").split() == [
        "hi",
        "at",
        ":dance:",
    ]
    result = read(build_package(member_channels(GUILD)))
    assert not any("<@" in t or "<:" in t for t in result.tweets)
    assert any(":pog:" in t for t in result.tweets)


def test_too_little_text_and_broken_files():
    with pytest.raises(IngestError, match="characters"):
        read(build_package([server_channel(GUILD, "general", tiny_tweets()[:20])]))
    with pytest.raises(IngestError, match="all 6 posts were bot commands"):
        read(build_package([server_channel(GUILD, "general", COMMANDS)]))
    broken = build_package(member_channels(GUILD))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(broken)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            bad = info.filename.endswith("channel.json") and "Messages/c" in info.filename
            dst.writestr(info.filename, b"[1, 2" if bad else src.read(info))
    with pytest.raises(IngestError, match="channel.json` in the package is not valid JSON"):
        read(out.getvalue())


def test_uncompressed_size_is_capped(monkeypatch):
    data = build_package(member_channels(GUILD))
    monkeypatch.setattr(datapackage, "MAX_ARCHIVE_BYTES", 20_000)
    with pytest.raises(IngestError, match="too large uncompressed"):
        read(data)


def test_a_lying_header_is_stopped_by_the_budget(monkeypatch):
    """Reading stops at the budget whatever sizes the zip declares."""
    data = build_package(member_channels(GUILD))
    monkeypatch.setattr(datapackage, "_check_declared", lambda *a: None)
    monkeypatch.setattr(datapackage, "MAX_ARCHIVE_BYTES", 20_000)
    with pytest.raises(IngestError, match="too large uncompressed"):
        read(data)


def test_a_tweet_archive_zip_is_not_taken_for_a_package():
    js = "window.YTD.tweets.part0 = " + json.dumps([{"tweet": {"full_text": t}} for t in tiny_tweets()])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("data/tweets.js", js)
        archive.writestr("data/direct-messages.js", "window.YTD.direct_messages.part0 = []")
    assert read(out.getvalue()).format == "twitter-archive"


def test_the_cli_file_reads_a_package(tmp_path):
    path = tmp_path / "package.zip"
    path.write_bytes(build_package(member_channels(GUILD), top="package/"))
    result = ingest_path(path)
    assert result.format == "discord-package" and secrets_in(result.tweets) == []
    assert SECRET_GROUP not in " ".join(result.tweets)
