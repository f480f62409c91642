"""`service.reports`: a persona's voice report, shown again or computed again from its kept posts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from bot.core.errors import UserError
from bot.core.personas.keptposts import kept_posts
from bot.core.storage import ModelRecord
from bot.core.training.trainrun import report_plan
from bot.core.training.voicereport import voice_report


class VoiceReports:
    def __init__(self, service):
        self.service = service

    async def show(self, guild_id: int, handle: str, *, recompute: bool = False) -> tuple[ModelRecord, dict]:
        """The persona and its report; `recompute` samples it again with today's settings and
        stores it (in the training pool: it is as heavy as a short training)."""
        model = await self.service.get_model(guild_id, handle)
        report = model.metrics.get("voice_report")
        if report and not recompute:
            return model, report
        _, folder = await self.service.model_folder(guild_id, handle)
        posts = await asyncio.to_thread(kept_posts, folder)
        if posts is None or not posts[1]:
            raise UserError(
                f"`{model.handle}` has no voice report and no kept posts to make one from "
                "(imported, or trained before posts were kept with a persona); train it again."
            )
        plan = report_plan(self.service.settings)
        if plan is None:
            raise UserError("Voice reports are switched off (VOICE_REPORT_POSTS=0).")
        base = await asyncio.to_thread(_base_of, folder, model, report)
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(
            self.service.train_executor, voice_report, folder, base, posts, model.metrics, plan
        )
        model.metrics = model.metrics | {"voice_report": report}
        await self.service.storage.models.set_metrics(model.guild_id, model.handle, model.metrics)
        return model, report


def _base_of(folder: Path, model: ModelRecord, report: dict[str, Any] | None) -> str:
    """What the persona was trained from, as from_pretrained takes it."""
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        name = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if name:
            return name
    return (report or {}).get("base") or model.base_model
