"""Members' own voices: a persona from the member's Discord data package, and erasing it.

The bot never reads members' messages to train. Discord's Developer Policy: "Do not use message
content obtained through the APIs to train machine learning or AI models (including large language
models) unless express permission is granted by Discord." A member who wants a persona of
themselves downloads their own data package from Discord and hands it over (`/voice train
file:`); only they can, for themselves: the package's account must be theirs when it says, a
handle already used by another persona is refused, and `/train new` refuses packages.

What went into a persona is recorded (`model_sources`), so `/voice mydata` lists it and
`/voice delete` (here) or `/voice optout` (everywhere) erase the member's personas, their
schedules and pending trainings, whether made from a package or, before, from collected history.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.core.errors import UserError
from bot.core.handles import normalize_handle
from bot.core.ingest.datapackage import PACKAGE_HELP, is_data_package
from bot.core.ingest.download import Transfer
from bot.core.ingest.pipeline import ingest
from bot.core.ingest.result import IngestResult
from bot.core.storage import Erasure, JobRecord


@dataclass
class PackageTraining:
    """What /voice train queued, and the package as it was read (data table, warnings)."""

    job: JobRecord
    result: IngestResult


class Voices:
    """`service.voices`: members' personas of themselves and their erasure."""

    def __init__(self, service):
        self.service = service

    async def check_can_train(self, guild_id: int, member_id: int, handle: str) -> str:
        """Refuse, before the download, a handle the member may not take; returns it normalized."""
        handle = normalize_handle(handle)
        existing = await self.service.storage.models.get(guild_id, handle)
        if existing is not None and (guild_id, handle) not in await self.personas_using(member_id, guild_id):
            raise UserError(f"`@{handle}` is another persona here; pick another handle.")
        await self.service.trainings.check_can_queue(guild_id, handle)
        return handle

    async def train_from_package(
        self,
        *,
        guild_id: int,
        member_id: int,
        handle: str,
        data: bytes | None = None,
        filename: str = "",
        url: str | None = None,
        transfer: Transfer | None = None,
        display_name: str | None = None,
        avatar_url: str | None = None,
        channel_id: int | None = None,
        this_server_only: bool = False,
    ) -> PackageTraining:
        """Read the member's own package, uploaded (`data`) or by link (`url`, downloaded by
        service.downloads: only the package's message files where the server takes range requests),
        server channels only (this server's alone when asked), and queue their persona."""
        handle = await self.check_can_train(guild_id, member_id, handle)
        scope = guild_id if this_server_only else None

        def read(source, name: str):
            if not is_data_package(source):
                raise UserError("That is not a Discord data package: " + PACKAGE_HELP)
            return ingest(source, name, guild_id=scope)

        if url is not None:
            result = await self.service.downloads.read(url, read, transfer)
        else:
            result = await asyncio.to_thread(read, data, filename)
        if result.owner_id is not None and result.owner_id != member_id:
            raise UserError("That data package belongs to another account: only its owner can train on it.")
        job = await self.service.trainings.submit(
            guild_id=guild_id,
            handle=handle,
            tweets=result.tweets,
            stats=result.stats.as_dict(),
            display_name=display_name,
            avatar_url=avatar_url,
            requested_by=member_id,
            channel_id=channel_id,
            source_user_id=member_id,
        )
        return PackageTraining(job=job, result=result)

    async def personas_using(self, user_id: int, guild_id: int | None = None) -> list[tuple[int, str]]:
        """(guild, handle) of every persona trained on this member's data."""
        return await self.service.storage.models.using(user_id, guild_id)

    async def pending_trainings(self, user_id: int, guild_id: int | None = None) -> list[JobRecord]:
        return await self.service.storage.jobs.active_for_source(user_id, guild_id)

    async def erase(self, user_id: int, guild_id: int | None = None) -> Erasure:
        """Delete the member's personas (in one guild or all), their schedules and the pending
        trainings on their data."""
        service, report = self.service, Erasure()
        for g, handle in await self.personas_using(user_id, guild_id):
            if await service.storage.models.get(g, handle) is not None:
                await service.delete_model(g, handle)
                report.personas.append((g, handle))
            report.schedules += await service.schedules.remove_for_handle(g, handle)
        for job in await self.pending_trainings(user_id, guild_id):
            if job.state == "running":
                await service.queue.cancel(job.id)
            else:
                await service.storage.jobs.cancel_queued(job.guild_id, job.id)
            report.jobs_cancelled += 1
        await service.storage.models.forget_sources(user_id, guild_id)
        await service.storage.games.forget_member(user_id, guild_id)  # their /realorfake votes
        return report

    async def opt_out(self, user_id: int) -> Erasure:
        """Everything of the member's, in every server."""
        return await self.erase(user_id)
