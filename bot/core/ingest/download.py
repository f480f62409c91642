"""Posts files given by link (`url:`), downloaded safely: a whole X archive does not fit in an upload.

What a link may cost, and where it may lead:
  * http(s) only, at most MAX_REDIRECTS redirects, each hop checked again;
  * never a private, loopback, link-local, multicast, reserved or unspecified address (no SSRF): the
    check runs on the addresses DNS gives for the host when the connection is made (a resolver of our
    own, so a name that re-resolves to 127.0.0.1 later cannot slip through), on IP literals, and again
    on the address actually connected to. ALLOW_PRIVATE_URLS lifts it for tests and closed networks;
  * URL_TIMEOUT_SECONDS to connect and between two reads, DOWNLOAD_DEADLINE_SECONDS in all;
  * URL_MAX_MB of body in all, whatever Content-Length claims; content-encoding is never undone by
    the HTTP client (gzip is decompressed, bounded, by the ingestion like an uploaded .gz).

An archive .zip is read without downloading it: where the server answers range requests, the central
directory and the `data/tweets*.js` members are fetched by range (a 10 GB archive costs its tweets'
bytes), otherwise it is streamed to an anonymous temporary file (under the cap, gone when closed).
Anything else (tweets.js, CSV, JSON, .gz) is read into memory under the ingestion's MAX_INPUT_BYTES.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from bot.core.errors import UserError
from bot.core.ingest.addresses import CheckedConnector, IpAddress, RefusedAddress, is_public_address
from bot.core.ingest.rawposts import MAX_INPUT_BYTES
from bot.core.urls import normalize_http_url

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REDIRECTS = 5
DOWNLOAD_DEADLINE_SECONDS = 3600  # a whole download, however steadily the server drips
MAX_CONCURRENT_DOWNLOADS = 2  # per process: memory and temporary disk stay bounded
RANGE_BLOCK = 256 * 1024  # least bytes asked per range request (zipfile reads headers in small pieces)
CHUNK = 1 << 16
REDIRECT_CODES = (301, 302, 303, 307, 308)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class DownloadError(UserError):
    """A link that cannot be read; str(error) says why, briefly, for the user."""


class RangesUnsupported(Exception):
    """The server stopped answering range requests (or the file changed): stream the archive instead."""


@dataclass
class Transfer:
    """How much of a download has arrived, for whoever shows it (read and written on the event loop)."""

    received: int = 0


class UrlReader:
    """Downloads for `url:` options and the CLI; one per service (settings and a concurrency limit)."""

    def __init__(self, settings, *, allowed: Callable[[IpAddress], bool] | None = None):
        self.max_bytes = settings.url_max_mb * 1024 * 1024
        self.timeout = settings.url_timeout_seconds
        self.allowed = allowed or (
            (lambda address: True) if settings.allow_private_urls else is_public_address
        )
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_DOWNLOADS)

    async def read(
        self, url: str, reader: Callable[[bytes | BinaryIO, str], T], transfer: Transfer | None = None
    ) -> T:
        """Download `url` and run `reader(data, filename)` on it in a thread (data: bytes or a zip file).

        The reader sees a zip as a seekable file: only what it reads is downloaded where ranges work.
        `transfer`, when given, counts the bytes as they arrive.
        """
        url = normalize_http_url(url, what="The link")
        async with self.slots, self._session() as session:
            download = _Download(self, session, transfer or Transfer())
            try:
                async with asyncio.timeout(DOWNLOAD_DEADLINE_SECONDS):
                    return await download.read(url, reader)
            except TimeoutError:
                raise DownloadError(
                    f"The download took over {DOWNLOAD_DEADLINE_SECONDS // 60} minutes and was stopped."
                ) from None

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[aiohttp.ClientSession]:
        connector = CheckedConnector(self.allowed, use_dns_cache=False, limit=4)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeout, sock_connect=self.timeout, sock_read=self.timeout
        )
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,  # a gzip body stays gzip, decompressed under a cap by the ingestion
            trust_env=False,  # no proxy from the environment: the address checked is the one reached
            headers={"User-Agent": "tweetalike (archive download)", "Accept-Encoding": "identity"},
        ) as session:
            yield session


class _Download:
    """One link being read: the redirects followed, the bytes counted against the cap."""

    def __init__(self, owner: UrlReader, session: aiohttp.ClientSession, transfer: Transfer):
        self.owner = owner
        self.session = session
        self.transfer = transfer
        self.loop = asyncio.get_running_loop()

    async def read(self, url: str, reader: Callable[[bytes | BinaryIO, str], T]) -> T:
        """The first request asks for the first CHUNK bytes: a server with range requests tells the size
        and sends only those (a zip is then read by range), any other sends the whole file."""
        probe = await self.get(url, {"Range": f"bytes=0-{CHUNK - 1}"})
        filename = _filename(probe)
        size = _ranged_size(probe)
        if size is None:
            return await self.read_whole(probe, filename, reader)
        try:
            head = await self.first_chunk(probe)
        finally:
            probe.close()
        final_url, etag = str(probe.url), probe.headers.get("ETag")
        if head.startswith(ZIP_MAGIC):
            try:
                return await asyncio.to_thread(reader, RangeFile(self, final_url, size, etag), filename)
            except RangesUnsupported:
                log.info("%s stopped answering range requests; streaming it instead", _host(final_url))
        elif size <= len(head):
            return await asyncio.to_thread(reader, head, filename)
        return await self.read_whole(await self.get(final_url), filename, reader)

    async def read_whole(self, response: aiohttp.ClientResponse, filename: str, reader) -> Any:
        """A whole body: a zip streamed to an anonymous temporary file (under URL_MAX_MB, gone when
        closed), anything else into memory (under the ingestion's MAX_INPUT_BYTES)."""
        try:
            first = await self.first_chunk(response)
            if first.startswith(ZIP_MAGIC):
                with tempfile.TemporaryFile(prefix="tweetalike-") as spool:
                    spool.write(first)
                    await self.spool_rest(response, spool)
                    response.close()
                    spool.seek(0)
                    return await asyncio.to_thread(reader, spool, filename)
            data = await self.rest_in_memory(response, first)
        finally:
            response.close()
        return await asyncio.to_thread(reader, data, filename)

    async def get(self, url: str, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """GET, following at most MAX_REDIRECTS redirects, each checked like the first link."""
        for _ in range(MAX_REDIRECTS + 1):
            _check_literal_address(url, self.owner.allowed)
            try:
                response = await self.session.get(url, headers=headers, allow_redirects=False)
            except RefusedAddress as exc:
                raise DownloadError(_refused(exc.host)) from None
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise DownloadError(f"`{_host(url)}` did not answer in time.") from None
            except aiohttp.ClientError as exc:
                raise DownloadError(f"Could not reach `{_host(url)}`: {_client_error(exc)}.") from None
            location = response.headers.get("Location")
            if response.status not in REDIRECT_CODES or not location:
                if response.status == 416:  # the first bytes of an empty file
                    response.close()
                    raise DownloadError("The file at that link is empty (0 bytes).")
                if response.status >= 400:
                    response.close()
                    raise DownloadError(_http_error(response.status, url))
                return response
            response.close()
            url = normalize_http_url(urljoin(url, location), what="The link's redirect")
        raise DownloadError(f"The link redirects more than {MAX_REDIRECTS} times; give the file's own link.")

    def count(self, size: int) -> None:
        self.transfer.received += size
        if self.transfer.received > self.owner.max_bytes:
            raise DownloadError(
                f"The download is over {self.owner.max_bytes / 2**20:,.0f} MB (URL_MAX_MB) and was stopped."
            )

    async def first_chunk(self, response: aiohttp.ClientResponse) -> bytes:
        """Up to CHUNK bytes, enough to tell a zip (read() may return less than asked for)."""
        data = bytearray()
        try:
            while len(data) < CHUNK and (piece := await response.content.read(CHUNK - len(data))):
                data += piece
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DownloadError(_read_failed(exc)) from None
        self.count(len(data))
        return bytes(data)

    async def rest_in_memory(self, response: aiohttp.ClientResponse, first: bytes) -> bytes:
        """A file that is not a zip: read whole, under the ingestion's cap (it is parsed in memory)."""
        limit = min(MAX_INPUT_BYTES, self.owner.max_bytes)
        declared = response.content_length
        if declared is not None and declared > limit:
            raise DownloadError(_too_large(declared, limit))
        data = bytearray(first)
        async for chunk in self.chunks(response):
            data += chunk
            if len(data) > limit:
                raise DownloadError(_too_large(len(data), limit))
        return bytes(data)

    async def spool_rest(self, response: aiohttp.ClientResponse, spool: BinaryIO) -> None:
        declared = response.content_length
        if declared is not None and declared > self.owner.max_bytes:
            raise DownloadError(_too_large(declared, self.owner.max_bytes, "URL_MAX_MB"))
        async for chunk in self.chunks(response):
            await asyncio.to_thread(spool.write, chunk)

    async def chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                self.count(len(chunk))
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DownloadError(_read_failed(exc)) from None

    async def fetch_range(self, url: str, start: int, end: int, etag: str | None) -> bytes:
        """Bytes [start, end) by one range request; RangesUnsupported when the server answers otherwise."""
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if etag:
            headers["If-Range"] = etag  # a changed file answers 200 (whole body): never mixed with the old
        response = await self.get(url, headers)
        try:
            if response.status != 206 or not _content_range_matches(response, start, end):
                raise RangesUnsupported
            data = bytearray()
            async for chunk in self.chunks(response):
                data += chunk
                if len(data) > end - start:
                    raise RangesUnsupported
        finally:
            response.close()
        if len(data) != end - start:
            raise DownloadError("The server sent less than it announced (the download was cut short).")
        return bytes(data)


class RangeFile(io.RawIOBase):
    """A remote file read through HTTP range requests, for zipfile (which runs in a worker thread).

    Each read fetches at least RANGE_BLOCK bytes (the end of the file when near it), so zipfile's many
    small reads of headers cost few requests.
    """

    def __init__(self, download: _Download, url: str, size: int, etag: str | None):
        super().__init__()
        self.download, self.url, self.size, self.etag = download, url, size, etag
        self.position = 0
        self.blocks: list[tuple[int, bytes]] = []  # the last few fetched, newest first

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        start, block = self.block_with(self.position, end)
        data = block[self.position - start : end - start]
        self.position += len(data)
        return data

    def block_with(self, start: int, end: int) -> tuple[int, bytes]:
        for block_start, block in self.blocks:
            if block_start <= start and end <= block_start + len(block):
                return block_start, block
        if end - start < RANGE_BLOCK:
            if start + RANGE_BLOCK >= self.size:  # near the end (zipfile looks there first): all of it
                start = max(0, self.size - RANGE_BLOCK)
            end = min(self.size, start + RANGE_BLOCK)
        future = asyncio.run_coroutine_threadsafe(
            self.download.fetch_range(self.url, start, end, self.etag), self.download.loop
        )
        self.blocks = [(start, future.result(timeout=DOWNLOAD_DEADLINE_SECONDS)), *self.blocks[:3]]
        return self.blocks[0]


def _ranged_size(response: aiohttp.ClientResponse) -> int | None:
    """The whole file's size when the server answered the first range request as asked, else None."""
    if response.status != 206:
        return None
    if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return None
    unit, _, rest = response.headers.get("Content-Range", "").strip().partition(" ")
    span, _, total = rest.partition("/")
    if unit.lower() != "bytes" or not span.startswith("0-") or not total.isdigit():
        return None
    return int(total)


def _content_range_matches(response: aiohttp.ClientResponse, start: int, end: int) -> bool:
    value = response.headers.get("Content-Range", "")
    return value.replace(" ", "").lower().startswith(f"bytes{start}-{end - 1}/")


def _check_literal_address(url: str, allowed: Callable[[IpAddress], bool]) -> None:
    """An IP written in the link never goes through the resolver: checked here."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not allowed(address):
        raise DownloadError(_refused(host))


def _filename(response: aiohttp.ClientResponse) -> str:
    """The file's name, a hint for the format: Content-Disposition's, else the last part of the path."""
    disposition = response.content_disposition
    name = disposition.filename if disposition is not None and disposition.filename else None
    name = name or unquote(PurePosixPath(response.url.path).name)
    return PurePosixPath(name.replace("\\", "/")).name[:200] or "download"


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "?")[:80]


def _refused(host: str) -> str:
    return (
        f"`{host[:80]}` is a private or local address; links must lead to a public server. "
        "(A bot on a closed network can allow them with ALLOW_PRIVATE_URLS.)"
    )


def _http_error(status: int, url: str) -> str:
    if status in (401, 403):
        return f"`{_host(url)}` refused the download ({status}): the link must be public, no login needed."
    if status == 404:
        return f"`{_host(url)}` has no file at that link (404). Check the link."
    return f"`{_host(url)}` answered {status} instead of the file."


def _too_large(size: int, limit: int, setting: str = "") -> str:
    if setting:
        return f"The file is {size / 2**20:,.0f} MB, over the {limit / 2**20:,.0f} MB allowed ({setting})."
    return (
        f"The file is {size / 2**20:,.0f} MB; files other than an archive .zip are read whole, up to "
        f"{limit / 2**20:,.0f} MB. Link the archive .zip, or data/tweets.js gzipped."
    )


def _read_failed(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "The server stopped sending the file (timed out)."
    return f"The download failed: {_client_error(exc)}."


def _client_error(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the server sent less than it announced"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    return type(exc).__name__
