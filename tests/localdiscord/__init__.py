"""A small Discord-compatible server on 127.0.0.1 for end-to-end tests.

The real discord.py client connects to it unmodified (the bot's DISCORD_API_BASE and
DISCORD_GATEWAY_URL settings point at it). It speaks:

- the gateway websocket: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats (their arrival
  times are recorded), RESUME -> RESUMED, and INTERACTION_CREATE pushed by tests;
- MESSAGE_CREATE for every message posted in a channel (members' messages sent by tests with
  `member_says`, the bot's messages, webhook messages with `webhook_id`, system messages), only to
  sessions that asked for GUILD_MESSAGES, with the Message Content intent honoured as Discord does
  (gateway.mdx "Message Content Intent"): without it `content`, `embeds`, `attachments` and
  `components` are empty, except in messages the app sent and messages that mention it; replies
  carry `message_reference` and `referenced_message` (type 19); a privileged intent the portal
  has not enabled closes the session with 4014;
- sharding as Discord does it: IDENTIFY's `shard: [shard_id, num_shards]` gives a session the guilds
  with `(guild_id >> 22) % num_shards == shard_id` and their events (events without a guild go to
  shard 0), an invalid shard closes with 4010, a session over `max_guilds_per_session` guilds
  with 4011 (sharding required), and GET /gateway/bot recommends a number of shards;
- the REST routes the bot uses under /api/v10: login and application info, command sync,
  interaction callbacks and webhooks (original response, follow-ups), channel messages (with
  `enforce_nonce`), history pagination, channel webhooks, active threads; files in multipart;
- a CDN route serving attachment bytes, so `/train` downloads a real file; interactions carry
  `attachment_size_limit` (10 MiB, Discord's default for users without Nitro on unboosted servers)
  and, like Discord's clients, `slash` refuses to attach a file over it: the bot never sees one;
  an interaction token works for `interaction_token_lifetime` (15 minutes), then 401 (50027).

It is as strict as Discord: a payload over one of the documented limits (message content, embeds,
autocomplete choices, webhook names), a malformed URL, a second interaction callback, a callback
after 3 s, or a follow-up/edit before the callback is refused with Discord's status, code and
error body (50035 "Invalid Form Body" names the field path). Refusals are kept in `refusals`.

Everything the bot sends is recorded in `requests`; tests drive users through `slash`,
`autocomplete`, `click` and `message_command`, and inject faults (`drop_gateway`, `rate_limit`,
`fail`).

Its parts: limits.py (Discord's limits and refusals, constants, ids), gateway.py (the websocket, sharding,
intents, events), rest.py (the REST and CDN routes, injected faults), users.py (simulated members and their
interactions) and server.py (LocalDiscord: the state, lifecycle and queries, with the other three mixed in).
Tests import everything from `tests.localdiscord`.
"""

from .gateway import GatewayClose, GatewaySession, check_shard, shard_of
from .limits import (
    ALL_PERMISSIONS,
    BASIC_MEMBER,
    CALLBACK_DEADLINE_S,
    CONTENT_LIMIT,
    DISCORD_EPOCH_MS,
    EMBED_LIMITS,
    EMBED_TOTAL,
    GUILD_MESSAGES_INTENT,
    GUILDS_INTENT,
    MANAGE_GUILD,
    MANAGE_WEBHOOKS,
    MESSAGE_CONTENT_INTENT,
    MESSAGE_DEFAULT,
    MESSAGE_PINNED,
    MESSAGE_REPLY,
    MESSAGE_USER_JOIN,
    OPTION_TYPES,
    PRIVILEGED_INTENTS,
    SYSTEM_MESSAGE_TYPES,
    choices_errors,
    invalid_form,
    iso_now,
    json_response,
    message_errors,
    snowflake,
    unknown_webhook,
    webhook_name_errors,
    well_formed_url,
)
from .rest import Recorded
from .server import LocalDiscord
from .users import Interaction, UploadTooLarge

__all__ = [
    "ALL_PERMISSIONS",
    "BASIC_MEMBER",
    "CALLBACK_DEADLINE_S",
    "CONTENT_LIMIT",
    "DISCORD_EPOCH_MS",
    "EMBED_LIMITS",
    "EMBED_TOTAL",
    "GUILDS_INTENT",
    "GUILD_MESSAGES_INTENT",
    "GatewayClose",
    "GatewaySession",
    "Interaction",
    "LocalDiscord",
    "MANAGE_GUILD",
    "MANAGE_WEBHOOKS",
    "MESSAGE_CONTENT_INTENT",
    "MESSAGE_DEFAULT",
    "MESSAGE_PINNED",
    "MESSAGE_REPLY",
    "MESSAGE_USER_JOIN",
    "OPTION_TYPES",
    "PRIVILEGED_INTENTS",
    "Recorded",
    "SYSTEM_MESSAGE_TYPES",
    "UploadTooLarge",
    "check_shard",
    "choices_errors",
    "invalid_form",
    "iso_now",
    "json_response",
    "message_errors",
    "shard_of",
    "snowflake",
    "unknown_webhook",
    "webhook_name_errors",
    "well_formed_url",
]
