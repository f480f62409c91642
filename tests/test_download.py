"""`url:` downloads against real HTTP servers on 127.0.0.1: ranges or not, caps, timeouts, redirects,
and the refusal of private addresses (the servers here are loopback, so most tests allow exactly
127.0.0.1, the stand-in for a public host, and the refusal tests run with the real policy)."""

from __future__ import annotations

import asyncio
import gzip
import io
import ipaddress
import zipfile

import aiohttp
import pytest

from bot.config import load_settings
from bot.core.errors import UserError
from bot.core.ingest import archive as archive_module
from bot.core.ingest import download as download_module
from bot.core.ingest.addresses import CheckedConnector, CheckedResolver, RefusedAddress, is_public_address
from bot.core.ingest.download import MAX_REDIRECTS, DownloadError, UrlReader
from bot.core.ingest.pipeline import IngestError, ingest
from tests.fileserver import LOOPBACK, TWEETS, FileServer, archive_with_media, tweets_js


@pytest.fixture
def settings():
    """Only what downloads read (no model: these tests never train)."""
    return load_settings({})


@pytest.fixture
async def server():
    async with FileServer() as running:
        yield running


def reader(settings, **changes) -> UrlReader:
    """A reader that may reach exactly 127.0.0.1 (the test servers), nothing else private."""
    return UrlReader(settings.replace(**changes), allowed=lambda address: address == LOOPBACK)


async def fetch_posts(url_reader: UrlReader, url: str):
    return await url_reader.read(url, lambda data, name: ingest(data, name))


async def test_archive_by_ranges_costs_only_its_tweets(settings, server):
    server.files["twitter.zip"], tweets_bytes = archive_with_media()
    result = await fetch_posts(reader(settings), server.url("ranged/twitter.zip"))
    assert result.format == "twitter-archive" and result.stats.kept == len(TWEETS)
    sent = server.served.body_bytes["twitter.zip"]
    assert server.served.ranges and sent < tweets_bytes + 1.5 * 2**20 < len(server.files["twitter.zip"]) / 4
    assert "/plain/twitter.zip" not in server.served.hits


async def test_archive_without_ranges_is_streamed_whole(settings, server):
    server.files["twitter.zip"], _ = archive_with_media()
    result = await fetch_posts(reader(settings), server.url("plain/twitter.zip"))
    assert result.stats.kept == len(TWEETS)
    assert server.served.body_bytes["twitter.zip"] == len(server.files["twitter.zip"])


async def test_a_server_that_stops_answering_ranges_gets_the_archive_streamed(settings, server):
    """A CDN that answers the probe by range and then sends whole files (or a file that changed, with
    If-Range): the archive is read again from a temporary file, never from mixed bytes."""
    server.files["twitter.zip"], _ = archive_with_media()
    server.ignore_ranges_after = 1
    result = await fetch_posts(reader(settings), server.url("ranged/twitter.zip"))
    assert result.stats.kept == len(TWEETS)
    assert server.served.hits.count("/ranged/twitter.zip") == 3  # the probe, one refused range, the whole


async def test_archive_without_ranges_over_the_cap_is_stopped(settings, server):
    server.files["twitter.zip"], _ = archive_with_media()
    with pytest.raises(DownloadError, match="URL_MAX_MB"):
        await fetch_posts(reader(settings, url_max_mb=2), server.url("plain/twitter.zip"))


async def test_plain_files_and_gzip_by_either_server(settings, server):
    server.files["tweets.js"] = tweets_js(TWEETS)
    server.files["tweets.js.gz"] = gzip.compress(tweets_js(TWEETS))
    server.files["posts.csv.gz"] = gzip.compress(("text\n" + "\n".join(TWEETS)).encode())
    for path in ("ranged/tweets.js", "plain/tweets.js", "ranged/tweets.js.gz", "plain/posts.csv.gz"):
        result = await fetch_posts(reader(settings), server.url(path))
        assert result.stats.kept == len(TWEETS), path


async def test_a_small_file_by_ranges_is_read_from_the_first_answer(settings, server):
    server.files["few.txt"] = ("\n".join(TWEETS[:200])).encode()
    assert len(server.files["few.txt"]) < 65536
    result = await fetch_posts(reader(settings), server.url("ranged/few.txt"))
    assert result.stats.kept == 200 and server.served.hits == ["/ranged/few.txt"]


async def test_files_other_than_a_zip_are_capped_in_memory(settings, server):
    server.files["big.csv"] = ("text\n" + "\n".join(TWEETS * 10)).encode() * 8
    with pytest.raises(DownloadError, match="read whole, up to 1 MB"):
        await fetch_posts(reader(settings, url_max_mb=1), server.url("plain/big.csv"))


async def test_archive_damage_and_bombs_by_link_get_clear_errors(settings, server, monkeypatch):
    whole, _ = archive_with_media()
    server.files["cut.zip"] = whole[: len(whole) // 2]  # truncated: no central directory
    monkeypatch.setattr(archive_module, "MAX_ARCHIVE_BYTES", 1 << 20)  # a 1 MB cap: a small bomb will do
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/tweets.js", b"window.YTD.tweets.part0 = [" + b" " * (2 << 20))
    server.files["bomb.zip"] = bomb.getvalue()
    with pytest.raises(IngestError, match="damaged or incomplete"):
        await fetch_posts(reader(settings), server.url("ranged/cut.zip"))
    with pytest.raises(IngestError, match="too large when uncompressed"):
        await fetch_posts(reader(settings), server.url("ranged/bomb.zip"))
    assert server.served.body_bytes["bomb.zip"] <= len(server.files["bomb.zip"]) + 65536  # read once


async def test_redirects_are_followed_up_to_the_limit(settings, server):
    server.files["tweets.js"] = tweets_js(TWEETS)
    url_reader = reader(settings)
    result = await fetch_posts(url_reader, server.url(f"redirect/{MAX_REDIRECTS}/tweets.js"))
    assert result.stats.kept == len(TWEETS)
    with pytest.raises(DownloadError, match="redirects more than"):
        await fetch_posts(url_reader, server.url(f"redirect/{MAX_REDIRECTS + 1}/tweets.js"))


@pytest.mark.parametrize(
    "target",
    ["http://10.0.0.1/tweets.js", "http://0.0.0.0:80/x", "http://[::1]/x", "http://169.254.169.254/"],
)
async def test_a_redirect_to_a_private_address_is_refused(settings, server, target):
    with pytest.raises(DownloadError, match="private or local address"):
        await fetch_posts(reader(settings), server.url(f"to/{target}"))


async def test_private_addresses_are_refused_unless_allowed(settings, server):
    server.files["tweets.js"] = tweets_js(TWEETS)
    strict = UrlReader(settings)  # ALLOW_PRIVATE_URLS is off by default
    for url in (server.url("plain/tweets.js"), f"http://localhost:{server.port}/plain/tweets.js"):
        with pytest.raises(DownloadError, match="private or local address"):
            await fetch_posts(strict, url)
    assert server.served.hits == []  # refused before connecting, by IP literal and by resolved name
    allowing = UrlReader(settings.replace(allow_private_urls=True))
    assert (await fetch_posts(allowing, server.url("plain/tweets.js"))).stats.kept == len(TWEETS)


async def test_the_connector_checks_the_address_actually_connected_to(server):
    """The last line of defence, tested alone: an IP literal never reaches the resolver (aiohttp skips
    it), and without the link checks in front the connection to 127.0.0.1 is still closed before the
    request is sent."""
    server.files["tweets.js"] = tweets_js(TWEETS)
    async with aiohttp.ClientSession(connector=CheckedConnector(is_public_address)) as session:
        with pytest.raises(RefusedAddress):
            await session.get(server.url("plain/tweets.js"))
    assert server.served.hits == []


async def test_the_resolver_refuses_a_name_for_a_private_address():
    resolver = CheckedResolver(is_public_address)
    with pytest.raises(RefusedAddress):
        await resolver.resolve("localhost", 80)
    await resolver.close()


@pytest.mark.parametrize(
    "address,public",
    [
        ("93.184.215.14", True),
        ("2606:4700::6810:84e5", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", False),  # IPv4-mapped: never a real host, refused whatever it wraps
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
    ],
)
def test_public_addresses(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_slow_servers_time_out(settings, server):
    quick = reader(settings, url_timeout_seconds=0.5)
    with pytest.raises(DownloadError, match="timed out"):
        await fetch_posts(quick, server.url("slow-body/x.csv"))
    with pytest.raises(DownloadError, match="did not answer in time"):
        await fetch_posts(quick, server.url("slow-headers"))


async def test_a_lying_content_length_and_http_errors(settings, server):
    async def lie(reader_stream, writer):
        await reader_stream.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\ntext\nshort")
        await writer.drain()
        writer.close()

    liar = await asyncio.start_server(lie, "127.0.0.1", 0)
    port = liar.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DownloadError, match="less than it announced"):
            await fetch_posts(reader(settings), f"http://127.0.0.1:{port}/tweets.csv")
    finally:
        liar.close()
        await liar.wait_closed()
    with pytest.raises(DownloadError, match="404"):
        await fetch_posts(reader(settings), server.url("nothing-here"))
    for bad in ("ftp://example.com/a.zip", "not a link", "file:///etc/passwd"):
        with pytest.raises(UserError, match="https://"):
            await fetch_posts(reader(settings), bad)


async def test_a_stalled_range_download_is_stopped_at_the_deadline(settings, server, monkeypatch):
    """The reader thread waits on range requests run by the event loop: at the deadline the session
    closes under them, so the thread and its requests end too (no task is left: conftest checks)."""
    monkeypatch.setattr(download_module, "DOWNLOAD_DEADLINE_SECONDS", 1)
    server.files["twitter.zip"], _ = archive_with_media()
    server.stall_ranges_after = 1  # the first range request (the probe) is answered, then nothing
    with pytest.raises(DownloadError, match="was stopped"):
        await fetch_posts(reader(settings), server.url("ranged/twitter.zip"))
