"""Test HTTP servers on 127.0.0.1 for `url:` downloads: files with and without range requests,
redirects, slow servers; and X archives with large media members, as real ones have."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import os
import zipfile
from dataclasses import dataclass, field

from aiohttp import web

LOOPBACK = ipaddress.ip_address("127.0.0.1")
TWEETS = [f"Tweet number {i} is about the weather in town {i * 7} and nothing else" for i in range(400)]
MEDIA_BYTES = 12 << 20


def tweets_js(tweets: list[str], part: int = 0) -> bytes:
    entries = [{"tweet": {"full_text": t, "id_str": str(i)}} for i, t in enumerate(tweets)]
    return f"window.YTD.tweets.part{part} = {json.dumps(entries)}".encode()


def archive_with_media() -> tuple[bytes, int]:
    """An X archive: two tweets parts among large media members; and the tweets' compressed bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("Your archive.html", b"<html></html>" * 100, zipfile.ZIP_DEFLATED)
        archive.writestr("data/tweets_media/1-a.mp4", os.urandom(MEDIA_BYTES // 2), zipfile.ZIP_STORED)
        archive.writestr("data/tweets.js", tweets_js(TWEETS[:200]), zipfile.ZIP_DEFLATED)
        archive.writestr("data/tweets_media/2-b.jpg", os.urandom(MEDIA_BYTES // 2), zipfile.ZIP_STORED)
        archive.writestr("data/tweets-part1.js", tweets_js(TWEETS[200:], 1), zipfile.ZIP_DEFLATED)
        archive.writestr("data/like.js", b"window.YTD.like.part0 = []", zipfile.ZIP_DEFLATED)
        tweets_bytes = sum(i.compress_size for i in archive.infolist() if i.filename.endswith(".js"))
    return buf.getvalue(), tweets_bytes


@dataclass
class Served:
    """What the test server sent: bytes per path, and the Range headers it was asked for."""

    body_bytes: dict[str, int] = field(default_factory=dict)
    ranges: list[str] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)


class FileServer:
    """Files by name, with range requests (/ranged/...) or without (/plain/...), plus bad servers."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.served = Served()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.release = asyncio.Event()  # ends the slow handlers when the test is over
        self.stall_ranges_after: int | None = None  # range requests answered before the server hangs
        self.ignore_ranges_after: int | None = None  # ... before it sends the whole file instead

    async def __aenter__(self) -> FileServer:
        app = web.Application()
        app.router.add_get("/ranged/{name}", self.ranged)
        app.router.add_get("/plain/{name}", self.plain)
        app.router.add_get("/redirect/{n}/{name}", self.redirect)
        app.router.add_get("/to/{target:.*}", self.redirect_to)
        app.router.add_get("/slow-body/{name}", self.slow_body)
        app.router.add_get("/slow-headers", self.slow_headers)
        app.router.add_get("/drip/{name}", self.drip)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.release.set()
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _sent(self, request: web.Request, size: int) -> None:
        self.served.hits.append(request.path)
        key = request.match_info.get("name", request.path)
        self.served.body_bytes[key] = self.served.body_bytes.get(key, 0) + size

    def _file(self, request: web.Request) -> bytes:
        if request.match_info["name"] not in self.files:
            raise web.HTTPNotFound
        return self.files[request.match_info["name"]]

    async def plain(self, request: web.Request) -> web.Response:
        data = self._file(request)
        self._sent(request, len(data))
        return web.Response(body=data, content_type="application/octet-stream")

    async def ranged(self, request: web.Request) -> web.StreamResponse:
        data = self._file(request)
        header = request.headers.get("Range")
        if not header:
            self._sent(request, len(data))
            return web.Response(body=data, headers={"Accept-Ranges": "bytes"})
        self.served.ranges.append(header)
        if self.stall_ranges_after is not None and len(self.served.ranges) > self.stall_ranges_after:
            await self.release.wait()
        if self.ignore_ranges_after is not None and len(self.served.ranges) > self.ignore_ranges_after:
            self._sent(request, len(data))
            return web.Response(body=data, headers={"Accept-Ranges": "bytes"})
        first, _, last = header.removeprefix("bytes=").partition("-")
        start, end = int(first), min(len(data) - 1, int(last) if last else len(data) - 1)
        if start >= len(data):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        self._sent(request, end + 1 - start)
        return web.Response(
            status=206,
            body=data[start : end + 1],
            headers={"Accept-Ranges": "bytes", "Content-Range": f"bytes {start}-{end}/{len(data)}"},
        )

    async def redirect(self, request: web.Request) -> web.Response:
        n, name = int(request.match_info["n"]), request.match_info["name"]
        self.served.hits.append(request.path)
        target = f"/redirect/{n - 1}/{name}" if n > 1 else f"/plain/{name}"
        raise web.HTTPFound(target)

    async def redirect_to(self, request: web.Request) -> web.Response:
        self.served.hits.append(request.path)
        raise web.HTTPFound(request.match_info["target"])

    async def slow_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"text\n" + b"a tweet that never ends\n" * 10)
        await self.release.wait()  # the client gives up long before
        return response

    async def drip(self, request: web.Request) -> web.StreamResponse:
        """The whole file, without ranges, a megabyte at a time with pauses (a slow host)."""
        data = self._file(request)
        response = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await response.prepare(request)
        for start in range(0, len(data), 1 << 20):
            await response.write(data[start : start + (1 << 20)])
            self._sent(request, len(data[start : start + (1 << 20)]))
            await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    async def slow_headers(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="too late")
