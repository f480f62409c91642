"""The local server's REST routes under /api/v10 and the CDN, each as strict as Discord, plus the faults
tests inject (rate limits, failures, stalls)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .limits import (
    MANAGE_WEBHOOKS,
    MESSAGE_REPLY,
    choices_errors,
    invalid_form,
    iso_now,
    json_response,
    message_errors,
    snowflake,
    unknown_webhook,
    webhook_name_errors,
)
from .users import Interaction


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    files: dict[str, tuple[str, bytes]]
    at: float


class RestApi:
    """The REST half of LocalDiscord (state lives on LocalDiscord)."""

    def rate_limit(self, path_contains: str, times: int = 1, retry_after: float = 0.3) -> None:
        """The next `times` requests whose path contains `path_contains` answer 429."""
        self._rate_limits.append((path_contains, times, retry_after))

    def fail(
        self,
        path_contains: str,
        *,
        times: int = 1,
        status: int = 400,
        method: str = "POST",
        body: dict | None = None,
    ) -> None:
        """The next `times` matching requests are refused with `status` (default: a 400 form error)."""
        body = body or (
            {"message": "Invalid Form Body", "code": 50035, "errors": {}}
            if status == 400
            else {"message": "Internal Server Error", "code": 0}
        )
        self._failures.append([path_contains, method, times, status, body])

    def stall(self, path_contains: str) -> None:
        """Carry out matching requests but hold their responses until `unstall()`."""
        self._unstalled.clear()
        self._stalls.append(path_contains)

    def unstall(self) -> None:
        self._stalls.clear()
        self._unstalled.set()

    # -- REST ----------------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["key"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    async def _read_body(self, request: web.Request) -> tuple[Any, dict[str, tuple[str, bytes]]]:
        files: dict[str, tuple[str, bytes]] = {}
        if request.content_type.startswith("multipart/"):
            body = None
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files[part.name] = (part.filename, bytes(await part.read()))
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), files

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await self._read_body(request)
        self.requests.append(
            Recorded(request.method, path, dict(request.query), body, files, time.monotonic())
        )
        for i, (fragment, times, retry_after) in enumerate(self._rate_limits):
            if fragment in path and times > 0:
                self._rate_limits[i] = (fragment, times - 1, retry_after)
                return json_response(
                    {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                    status=429,
                    headers={
                        "Retry-After": str(retry_after),
                        "X-RateLimit-Scope": "user",
                        "Via": "1.1 google",
                    },
                )  # discord.py retries only real Discord 429s
        for failure in self._failures:
            if failure[0] in path and failure[1] == request.method and failure[2] > 0:
                failure[2] -= 1
                return self._refused(request.method, path, json_response(failure[4], status=failure[3]))
        if self._token_expired(path):
            expired = json_response({"message": "Invalid Webhook Token", "code": 50027}, status=401)
            return self._refused(request.method, path, expired)
        handler = self._route(request.method, path)
        if handler is None:
            self.unknown_routes.append(f"{request.method} {path}")
            return json_response({"message": "404: Not Found", "code": 0}, status=404)
        try:
            result = await handler(path.strip("/").split("/"), body, files, request.query)
        except LookupError:
            result = json_response({"message": "Unknown Channel", "code": 10003}, status=404)
        if any(fragment in path for fragment in self._stalls):
            await self._unstalled.wait()  # Discord did it, but the answer never reaches the client
        if isinstance(result, web.Response) and result.status >= 400:
            return self._refused(request.method, path, result)
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result) if result is not None else web.Response(status=204)

    def _token_expired(self, path: str) -> bool:
        """An interaction's token (follow-ups, its original response) works for 15 minutes only."""
        p = path.strip("/").split("/")
        interaction = self.interactions.get(p[2]) if len(p) > 2 and p[0] == "webhooks" else None
        return (
            interaction is not None
            and time.monotonic() - interaction.sent_at > self.interaction_token_lifetime
        )

    def _refused(self, method: str, path: str, response: web.Response) -> web.Response:
        """Keep every refusal, and show it on the interaction it belongs to (tests then fail fast)."""
        error = json.loads(response.body) if response.body else {}
        self.refusals.append((method, path, response.status, error))
        p = path.strip("/").split("/")
        token = p[2] if len(p) > 2 and p[0] in ("interactions", "webhooks") else None
        if token in self.interactions:
            self.interactions[token].refused.append(error)
            self.interactions[token].changed.set()
        return response

    def _route(self, method: str, path: str):
        p = path.strip("/").split("/")
        table = [
            ("GET", ["users", "@me"], self._me),
            ("GET", ["oauth2", "applications", "@me"], self._app),
            ("GET", ["applications", "@me"], self._app),
            ("GET", ["gateway", "bot"], self._gateway_bot),
            ("GET", ["gateway"], self._gateway_url),
            ("PUT", ["applications", "*", "commands"], self._sync),
            ("PUT", ["applications", "*", "guilds", "*", "commands"], self._sync),
            ("GET", ["applications", "*", "commands"], self._get_commands),
            ("POST", ["interactions", "*", "*", "callback"], self._callback),
            ("GET", ["webhooks", "*", "*", "messages", "@original"], self._get_original),
            ("PATCH", ["webhooks", "*", "*", "messages", "@original"], self._edit_original),
            ("DELETE", ["webhooks", "*", "*", "messages", "@original"], self._delete_original),
            ("PATCH", ["webhooks", "*", "*", "messages", "*"], self._edit_followup),
            ("POST", ["webhooks", "*", "*"], self._execute_webhook),
            ("POST", ["channels", "*", "messages"], self._create_message),
            ("PATCH", ["channels", "*", "messages", "*"], self._edit_message),
            ("GET", ["channels", "*", "messages"], self._history),
            ("GET", ["channels", "*", "webhooks"], self._channel_webhooks),
            ("POST", ["channels", "*", "webhooks"], self._create_webhook),
            ("GET", ["guilds", "*", "threads", "active"], self._active_threads),
            ("GET", ["channels", "*"], self._get_channel),
        ]
        for m, pattern, handler in table:
            if (
                m == method
                and len(pattern) == len(p)
                and all(a == "*" or a == b for a, b in zip(pattern, p, strict=False))
            ):
                return handler
        return None

    async def _me(self, *_):
        return self.bot_user

    async def _app(self, *_):
        return {
            "id": str(self.application_id),
            "name": "tweetalike",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.bot_user,
            "verify_key": "x",
            "flags": 0,
            "team": None,
        }

    async def _gateway_url(self, *_):
        return {"url": self.gateway_url}

    async def _gateway_bot(self, *_):
        shards = self.recommended_shards or max(1, math.ceil(len(self.guilds) / 1000))
        return {
            "url": self.gateway_url,
            "shards": shards,
            "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
        }

    async def _sync(self, p, body, files, query):
        scope = p[3] if len(p) == 5 else "global"
        synced = [
            {
                **command,
                "id": str(snowflake()),
                "application_id": str(self.application_id),
                "version": "1",
                "type": command.get("type", 1),
                "description": command.get("description", ""),
                "default_member_permissions": command.get("default_member_permissions"),
                **({"guild_id": scope} if scope != "global" else {}),
            }
            for command in body or []
        ]
        self.commands[scope] = synced
        return synced

    async def _get_commands(self, *_):
        return self.commands.get("global", [])

    def _message(self, channel_id: int, author: dict, body: dict, files: dict, **extra) -> dict:
        attachments = [
            {
                "id": str(snowflake()),
                "filename": name,
                "size": len(data),
                "url": f"{self.base}/cdn/x/{name}",
                "proxy_url": f"{self.base}/cdn/x/{name}",
                "data": data,
            }
            for name, data in files.values()
        ]
        return {
            "id": str(snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": body.get("content") or "",
            "timestamp": iso_now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": body.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags") or 0,
            "components": body.get("components") or [],
            "allowed_mentions": body.get("allowed_mentions"),
            **extra,
        }

    def _store_message(
        self, channel_id: int, author: dict, body: dict, files: dict | None = None, **extra
    ) -> dict:
        message = self._message(channel_id, author, body, files or {}, **extra)
        self.messages.setdefault(channel_id, []).append(message)
        return message

    @staticmethod
    def _public(message: dict) -> dict:
        """A message as Discord returns it (our recorded file bytes stay on our side)."""
        public = {k: v for k, v in message.items() if k != "allowed_mentions"}
        public["attachments"] = [{k: v for k, v in a.items() if k != "data"} for a in message["attachments"]]
        return public

    async def _callback(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        interaction.callback_attempts += 1
        if interaction.callback is not None:
            return json_response(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, status=400
            )
        if time.monotonic() - interaction.sent_at > self.callback_deadline:
            return json_response({"message": "Unknown interaction", "code": 10062}, status=404)
        data = body.get("data") or {}
        errors: dict = {}
        if body["type"] == 8:  # autocomplete answer
            errors = choices_errors(data.get("choices"))
        elif body["type"] in (4, 7) and (message := message_errors(data)):  # a message, or its update
            errors = {"data": message}
        if errors:
            return invalid_form(errors)
        interaction.callback, interaction.callback_at = body, time.monotonic()
        response = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_loading": body["type"] == 5,
                "response_message_ephemeral": bool(data.get("flags", 0) & 64),
            }
        }
        if body["type"] in (4, 5):
            channel_id = self._channel_of(interaction)
            interaction.original = self._message(
                channel_id, self.bot_user, data, files, application_id=str(self.application_id)
            )
            if not interaction.ephemeral:
                self.messages.setdefault(channel_id, []).append(interaction.original)
            response["interaction"]["response_message_id"] = interaction.original["id"]
            response["resource"] = {"type": body["type"], "message": self._public(interaction.original)}
        interaction.changed.set()
        return response

    def _channel_of(self, interaction: Interaction) -> int:
        return interaction.channel_id

    async def _get_original(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        if interaction.callback is None:
            return unknown_webhook()  # the interaction's webhook exists once it is acknowledged
        if interaction.original is None:
            raise LookupError
        return self._public(interaction.original)

    async def _edit_original(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        if interaction.callback is None:
            return unknown_webhook()
        if errors := message_errors(body):
            return invalid_form(errors)
        if interaction.original is None:
            interaction.original = self._message(0, self.bot_user, {}, {})
        for key in ("content", "embeds", "components", "allowed_mentions", "flags"):
            if key in (body or {}):
                interaction.original[key] = body[key]
        if files:
            interaction.original["attachments"] = self._message(0, self.bot_user, {}, files)["attachments"]
        interaction.original["edited_timestamp"] = iso_now()
        interaction.changed.set()
        return self._public(interaction.original)

    async def _delete_original(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        interaction.original = None
        interaction.changed.set()
        return None

    async def _edit_followup(self, p, body, files, query):
        interaction = self.interactions[p[2]]
        if errors := message_errors(body):
            return invalid_form(errors)
        for message in interaction.followups:
            if message["id"] == p[4]:
                message.update(
                    {k: v for k, v in (body or {}).items() if k in ("content", "embeds", "components")}
                )
                interaction.changed.set()
                return self._public(message)
        raise LookupError

    async def _execute_webhook(self, p, body, files, query):
        if p[2] in self.interactions:  # an interaction follow-up
            interaction = self.interactions[p[2]]
            if interaction.callback is None:
                return unknown_webhook()
            if errors := message_errors(body):
                return invalid_form(errors)
            message = self._message(0, self.bot_user, body or {}, files)
            interaction.followups.append(message)
            interaction.changed.set()
            return self._public(message)
        webhook = self.webhooks.get(int(p[1]))
        if webhook is None or webhook["token"] != p[2]:
            return unknown_webhook()
        if errors := message_errors(body, webhook=True):
            return invalid_form(errors)
        author = {
            "id": str(webhook["id"]),
            "username": (body or {}).get("username") or webhook["name"],
            "discriminator": "0000",
            "avatar": None,
            "bot": True,
        }
        message = self._store_message(
            int(webhook["channel_id"]),
            author,
            body or {},
            files,
            webhook_id=str(webhook["id"]),
            avatar_url=(body or {}).get("avatar_url"),
        )
        self._dispatch_message(message)
        return self._public(message)

    def _guild_of_channel(self, channel_id: int) -> int:
        for guild_id, guild in self.guilds.items():
            if channel_id in guild["channels"] or channel_id in guild["threads"]:
                return guild_id
        raise LookupError

    def _bot_can(self, channel_id: int, permission: int) -> bool:
        return bool(self.permissions(self._guild_of_channel(channel_id), self.application_id) & permission)

    async def _create_message(self, p, body, files, query):
        channel_id = int(p[1])
        self._guild_of_channel(channel_id)
        if not self._bot_can(channel_id, 1 << 11):
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        if errors := message_errors(body):
            return invalid_form(errors)
        nonce = (body or {}).get("nonce")
        if nonce and (body or {}).get("enforce_nonce") and (channel_id, nonce) in self.nonces:
            return self._public(self.nonces[(channel_id, nonce)])
        reference, referenced = (body or {}).get("message_reference"), None
        if reference is not None:
            referenced = next(
                (m for m in self.messages.get(channel_id, []) if m["id"] == str(reference.get("message_id"))),
                None,
            )
            if referenced is None and reference.get("fail_if_not_exists", True):
                return invalid_form(
                    {
                        "message_reference": {
                            "_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}]
                        }
                    }
                )
        extra: dict[str, Any] = {"nonce": nonce}
        if referenced is not None:
            extra["message_reference"] = {
                "type": 0,
                "message_id": referenced["id"],
                "channel_id": str(channel_id),
                "guild_id": str(self._guild_of_channel(channel_id)),
            }
            extra["referenced_message"] = self._public(referenced)
        message = self._store_message(channel_id, self.bot_user, body or {}, files, **extra)
        if referenced is not None:
            message["type"] = MESSAGE_REPLY
            replied = (body.get("allowed_mentions") or {}).get("replied_user", False)
            message["mentions"] = self._mentions("", referenced, replied)
        if nonce:
            self.nonces[(channel_id, nonce)] = message
        self._dispatch_message(message)
        return self._public(message)

    async def _edit_message(self, p, body, files, query):
        if errors := message_errors(body):
            return invalid_form(errors)
        for message in self.messages.get(int(p[1]), []):
            if message["id"] == p[3]:
                message.update(
                    {k: v for k, v in (body or {}).items() if k in ("content", "embeds", "components")}
                )
                message["edited_timestamp"] = iso_now()
                return self._public(message)
        raise LookupError

    async def _history(self, p, body, files, query):
        channel_id = int(p[1])
        self._guild_of_channel(channel_id)
        limit = min(100, int(query.get("limit", 50)))
        newest_first = list(reversed(self.messages.get(channel_id, [])))
        if "before" in query:
            newest_first = [m for m in newest_first if int(m["id"]) < int(query["before"])]
        if "after" in query:
            newest_first = [m for m in newest_first if int(m["id"]) > int(query["after"])]
        return [self._public(m) for m in newest_first[:limit]]

    async def _channel_webhooks(self, p, body, files, query):
        channel_id = int(p[1])
        if not self._bot_can(channel_id, MANAGE_WEBHOOKS):
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        return [w for w in self.webhooks.values() if int(w["channel_id"]) == channel_id]

    async def _create_webhook(self, p, body, files, query):
        channel_id = int(p[1])
        guild_id = self._guild_of_channel(channel_id)
        if not self._bot_can(channel_id, MANAGE_WEBHOOKS):
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        if errors := webhook_name_errors({}, ["name"], (body or {}).get("name")):
            return invalid_form(errors)
        if len([w for w in self.webhooks.values() if int(w["channel_id"]) == channel_id]) >= 10:
            return json_response(
                {"message": "Maximum number of webhooks reached (10)", "code": 30007}, status=400
            )
        return self.add_webhook(guild_id, channel_id, body.get("name", "hook"), owner=self.bot_user)

    def add_webhook(self, guild_id: int, channel_id: int, name: str, owner: dict | None = None) -> dict:
        webhook_id = snowflake()
        webhook = {
            "id": str(webhook_id),
            "type": 1,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "name": name,
            "avatar": None,
            "token": f"wtoken-{webhook_id}",
            "application_id": None,
            "user": owner or self.users[self.guilds[guild_id]["owner_id"]],
        }
        self.webhooks[webhook_id] = webhook
        return webhook

    async def _active_threads(self, p, body, files, query):
        guild = self.guilds[int(p[1])]
        return {"threads": list(guild["threads"].values()), "members": []}

    async def _get_channel(self, p, body, files, query):
        channel_id = int(p[1])
        guild = self.guilds[self._guild_of_channel(channel_id)]
        return guild["channels"].get(channel_id) or guild["threads"][channel_id]
