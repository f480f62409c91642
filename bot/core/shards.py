"""Which servers one bot process serves when the gateway is sharded.

Discord routes a guild's events to shard `(guild_id >> 22) % shard_count` (discord-api-docs,
"Sharding"); a process that runs some of the shards serves exactly the guilds on them. The core
uses the same formula so that a process only claims the scheduled posts of its own guilds.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


def shard_of(guild_id: int, shard_count: int) -> int:
    return (guild_id >> 22) % shard_count


@dataclass(frozen=True)
class GuildShards:
    """Shards `ids` of `count`: the guilds one process serves."""

    count: int
    ids: tuple[int, ...]

    def owns(self, guild_id: int) -> bool:
        return shard_of(guild_id, self.count) in self.ids

    def describe(self) -> str:
        return f"shards {','.join(map(str, self.ids))} of {self.count}"


def instance_name(shards: GuildShards | None) -> str:
    """Who holds a claim: the host and its shards. A restarted process gets the same name back, so
    it takes over at once what its previous life had claimed (the post nonce keeps that safe)."""
    return f"{socket.gethostname()} {shards.describe() if shards else 'unsharded'}"
