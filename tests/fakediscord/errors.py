"""Discord-shaped API errors.

Handlers raise :class:`DiscordError`; the server turns it into the JSON body Discord sends
(``{"message": ..., "code": ...}`` plus ``errors`` for form errors), so discord.py raises the
same ``HTTPException`` subclass with the same ``code`` it would against the real API.
"""

from __future__ import annotations

from typing import Any


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def unknown(what: str, code: int) -> DiscordError:
    """404 Unknown Channel / Message / Webhook / Interaction... (code per resource)."""
    return DiscordError(404, code, f"Unknown {what}")


def missing_access() -> DiscordError:
    return DiscordError(403, 50001, "Missing Access")


def missing_permissions() -> DiscordError:
    return DiscordError(403, 50013, "Missing Permissions")


def unauthorized() -> DiscordError:
    return DiscordError(401, 0, "401: Unauthorized")


def form_error(field_path: str, code: str, message: str) -> DiscordError:
    """50035 Invalid Form Body with the nested ``errors`` object Discord uses."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(field_path.split(".")):
        errors = {key: errors}
    return DiscordError(400, 50035, "Invalid Form Body", errors)


UNKNOWN_CHANNEL, UNKNOWN_GUILD, UNKNOWN_MEMBER, UNKNOWN_MESSAGE = 10003, 10004, 10007, 10008
UNKNOWN_USER, UNKNOWN_WEBHOOK, UNKNOWN_INTERACTION = 10013, 10015, 10062
