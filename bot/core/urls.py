"""Image URLs given by users (persona avatars), checked with a real URL parser.

Discord refuses a whole message when one URL field in it is not a well formed absolute URL
(400, code 50035 "Not a well formed URL"), so a URL is checked, and made well formed where
that is safe (percent-encoding a space, IDNA for a non-ASCII host), when it is given, not when
it is first used.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, urlsplit, urlunsplit

from bot.core.errors import UserError

MAX_URL_LENGTH = 2048
NO_AVATAR = "none"  # given instead of an avatar URL (/models edit): remove the picture
_HOST_RE = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# RFC 3986: what may stay as it is in a path, query or fragment (percent signs are kept when they
# start an escape, and encoded otherwise).
_SAFE_PATH = "/:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def normalize_http_url(raw: str | None, *, what: str = "The URL") -> str:
    """An absolute http(s) URL Discord accepts, or UserError saying what is wrong.

    Characters that cannot appear in a URL (spaces, non-ASCII letters) are percent-encoded
    rather than refused: `https://example.com/my avatar.png` -> `.../my%20avatar.png`.
    """
    text = (raw or "").strip()
    if not text:
        raise UserError(f"{what} is empty.")
    if any(ch in text for ch in "\r\n\t") or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UserError(f"{what} contains control characters.")
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise UserError(f"{what} is not a valid URL: `{text[:100]}`.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UserError(
            f"{what} must start with `https://` (or `http://`), e.g. `https://example.com/avatar.png`."
        )
    host = _ascii_host(parts.hostname or "")
    if (
        not (_HOST_RE.match(host) or _is_ipv6(host))
        or parts.username is not None
        or parts.password is not None
    ):
        raise UserError(f"{what} has no valid host name: `{text[:100]}`.")
    if ":" in host:  # an IPv6 literal: urlsplit gives it without its brackets
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    url = urlunsplit(
        (
            parts.scheme.lower(),
            netloc,
            _encode(parts.path or "/", _SAFE_PATH),
            _encode(parts.query, _SAFE_QUERY),
            _encode(parts.fragment, _SAFE_QUERY),
        )
    )
    if len(url) > MAX_URL_LENGTH:
        raise UserError(f"{what} is too long (at most {MAX_URL_LENGTH} characters).")
    return url


def well_formed_http_url(url: str | None) -> str | None:
    """The URL made well formed, or None when it cannot be (for values stored before checks existed)."""
    try:
        return normalize_http_url(url)
    except UserError:
        return None


def _ascii_host(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
    except UnicodeError:
        return ""


def _encode(part: str, safe: str) -> str:
    """Percent-encode what may not appear, keeping existing %XX escapes as they are."""
    return quote(_BAD_PERCENT.sub("%25", part), safe=safe + "%")


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
