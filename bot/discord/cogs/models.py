"""/models: list, inspect and delete this server's personas."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.personas import KEPT_POSTS_FILE, check_hub_id
from bot.discord.discord_limits import fit_content, fit_embed, safe_url
from bot.discord.options import AvatarOrNone, Handle
from bot.discord.ui import (
    NO_PINGS,
    ConfirmView,
    defer_public,
    handle_autocomplete,
    number,
    stats_table,
    voice_text,
)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's limit for servers without boosts
HUB_URL = "https://huggingface.co/"

# How /models info names the decoding path a persona takes here (generation.Generator.decoding_path).
DECODING_PATHS = {"int8": "int8 engine (fast CPU path)", "generic": "transformers (generic path)"}


class ModelsCog(commands.Cog):
    models = app_commands.Group(name="models", description="This server's personas", guild_only=True)

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core

    @models.command(name="list", description="List this server's personas")
    async def models_list(self, interaction: discord.Interaction) -> None:
        models = await self.core.list_models(interaction.guild_id)
        jobs = await self.core.trainings.list(interaction.guild_id, active_only=True)
        if not models and not jobs:
            await interaction.response.send_message(
                "No personas yet. Someone with Manage Server can create one with `/train new`.",
                ephemeral=True,
            )
            return
        lines = [
            f"**{m.display_name}** `@{m.handle}` {m.version_label} · {m.method} · "
            f"{m.stats.get('kept', '?')} tweets"
            for m in models
        ]
        lines += [f"⏳ `@{j.handle}` · {j.state} (job #{j.id})" for j in jobs]
        embed = discord.Embed(title=f"Personas ({len(models)})", description="\n".join(lines))
        await interaction.response.send_message(embed=fit_embed(embed), ephemeral=True)

    @models.command(name="info", description="Show a persona's model card")
    @app_commands.autocomplete(handle=handle_autocomplete)
    async def models_info(self, interaction: discord.Interaction, handle: Handle) -> None:
        model = await self.core.get_model(interaction.guild_id, handle)
        m = model.metrics
        embed = discord.Embed(
            title=f"{model.display_name} (@{model.handle})", colour=discord.Colour.blurple()
        )
        if safe_url(model.avatar_url):
            embed.set_thumbnail(url=safe_url(model.avatar_url))
        if model.stats:
            embed.add_field(name="Data", value=f"```\n{stats_table(model.stats)}\n```", inline=False)
        embed.add_field(name="Base model", value=f"`{model.base_model}`")
        embed.add_field(name="Method", value=model.method)
        path = await self.core.decoding_path(model)
        embed.add_field(name="Decoding", value=DECODING_PATHS.get(path, path))
        earlier = await self.core.versions.earlier(interaction.guild_id, model.handle)
        embed.add_field(name="Version", value=version_text(model, earlier))
        if m.get("source"):
            embed.add_field(name="Imported from", value=f"[{m['source']}]({HUB_URL}{m['source']})")
        if m.get("suggested_prompt"):
            embed.add_field(name="Try", value=f"`{first_command(model)}`", inline=False)
        if m.get("val_loss") is not None:
            embed.add_field(
                name="Validation",
                value=f"held-out perplexity {number(m.get('initial_val_perplexity'), 1)} → "
                f"{number(m.get('val_perplexity'), 1)}\n"
                f"loss {number(m.get('initial_val_loss'))} → {number(m.get('val_loss'))}"
                + (
                    f"\nkept epoch {m['best_epoch']} of {m.get('epochs', '?')}" if m.get("best_epoch") else ""
                ),
            )
        if voice_text(m.get("voice_report")):
            embed.add_field(name="Voice", value=voice_text(m["voice_report"]), inline=False)
        fooled = await self.core.games.fool_rate(interaction.guild_id, model.handle)
        if fooled is not None:
            embed.add_field(
                name="/realorfake",
                value=f"its posts were voted real {fooled.hits} of {fooled.votes} times ({fooled.rate:.0%})",
            )
        if m.get("steps"):
            embed.add_field(name="Training", value=f"{m['steps']} steps, {m.get('epochs', '?')} epochs")
        who = f"<@{model.created_by}>" if model.created_by else "someone"
        made = "Imported by" if model.method == "imported" else "Trained by"
        embed.add_field(name=made, value=f"{who} <t:{int(model.created_at)}:R>", inline=False)
        await interaction.response.send_message(
            embed=fit_embed(embed), ephemeral=True, allowed_mentions=NO_PINGS
        )

    @models.command(name="edit", description="Change a persona's shown name or picture")
    @app_commands.describe(
        handle="Which persona",
        display_name="Name shown on its posts",
        avatar="Image URL shown on its posts (`none` removes it)",
    )
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_edit(
        self,
        interaction: discord.Interaction,
        handle: Handle,
        display_name: app_commands.Range[str, 1, 80] | None = None,
        avatar: AvatarOrNone | None = None,
    ) -> None:
        model = await self.core.edit_model(
            interaction.guild_id, handle, display_name=display_name, avatar=avatar
        )
        picture = "no picture" if not model.avatar_url else f"picture <{model.avatar_url}>"
        name = discord.utils.escape_markdown(model.display_name)
        await interaction.response.send_message(
            f"`@{model.handle}` is now shown as **{name}** with {picture}.",
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )

    @models.command(name="delete", description="Delete a persona and its files")
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_delete(self, interaction: discord.Interaction, handle: Handle) -> None:
        model = await self.core.get_model(interaction.guild_id, handle)
        view = ConfirmView(interaction.user.id)
        await interaction.response.send_message(
            f"Delete **{model.display_name}** (`@{model.handle}`) and its files? This cannot be undone.",
            view=view,
            ephemeral=True,
        )
        await view.wait()
        if not view.confirmed:
            await interaction.edit_original_response(content="Nothing was deleted.", view=None)
            return
        await self.core.delete_model(interaction.guild_id, model.handle)
        await interaction.edit_original_response(content=f"Deleted `@{model.handle}`.", view=None)

    @models.command(name="rollback", description="Go back to a persona's previous version")
    @app_commands.describe(handle="Which persona (its current version is deleted)")
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_rollback(self, interaction: discord.Interaction, handle: Handle) -> None:
        model = await self.core.get_model(interaction.guild_id, handle)
        earlier = await self.core.versions.earlier(interaction.guild_id, model.handle)
        if not earlier:
            await self.core.versions.rollback(interaction.guild_id, model.handle)  # says why not
        view = ConfirmView(interaction.user.id)
        await interaction.response.send_message(
            f"Go back from {model.version_label} of `@{model.handle}` to {earlier[0].version_label}? "
            f"{model.version_label} is deleted.",
            view=view,
            ephemeral=True,
        )
        await view.wait()
        if not view.confirmed:
            await interaction.edit_original_response(content="Nothing changed.", view=None)
            return
        back, gone = await self.core.versions.rollback(interaction.guild_id, model.handle)
        await interaction.edit_original_response(
            content=f"`@{back.handle}` is back to {back.version_label}; {gone.version_label} was deleted.",
            view=None,
        )

    @models.command(
        name="import", description="Use an existing Hugging Face model, e.g. huggingtweets/js_thrill"
    )
    @app_commands.describe(
        repo="Hub model id, e.g. huggingtweets/js_thrill", handle="Name to use here (default: from the id)"
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_import(
        self, interaction: discord.Interaction, repo: str, handle: str | None = None
    ) -> None:
        check_hub_id(repo)  # a typo gets an ephemeral answer, before the public "thinking..."
        await defer_public(interaction)
        model = await self.core.import_model(
            interaction.guild_id, repo, handle, created_by=interaction.user.id
        )
        interaction.extras["answered"] = True
        await interaction.edit_original_response(
            content=fit_content(imported_text(model, repo)), allowed_mentions=NO_PINGS
        )

    @models.command(
        name="export", description="Get a persona's model card and files, ready for the Hugging Face hub"
    )
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_export(self, interaction: discord.Interaction, handle: Handle) -> None:
        model, folder = await self.core.model_folder(interaction.guild_id, handle)
        await interaction.response.defer(ephemeral=True, thinking=True)
        limit = interaction.guild.filesize_limit if interaction.guild else DEFAULT_UPLOAD_LIMIT
        archive = await asyncio.to_thread(zip_folder, folder)
        files = []
        if (folder / "README.md").is_file():
            files.append(discord.File(folder / "README.md", filename="README.md"))
        if len(archive) <= limit - 64 * 1024:
            files.append(discord.File(io.BytesIO(archive), filename=f"{model.handle}.zip"))
            note = (
                "The zip is a Hugging Face model folder: unzip it and `huggingface-cli upload` it as it is."
            )
        else:
            note = (
                f"The model is {len(archive) / 2**20:.0f} MB, over this server's upload limit "
                f"({limit / 2**20:.0f} MB); here is its card. LoRA personas are small enough to send."
            )
        await interaction.followup.send(note, files=files, ephemeral=True)

    @models.command(
        name="personas", description="Post /impersonate answers as the persona (webhook name and avatar)"
    )
    @app_commands.describe(
        enabled="On: posts look like the person, labelled (bot). Off: the bot's own embeds."
    )
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_personas(self, interaction: discord.Interaction, enabled: bool) -> None:
        await self.core.posts.set_persona_webhooks(interaction.guild_id, enabled)
        text = (
            "Persona posts are **on**: answers go through a webhook with the persona's name and avatar "
            "(needs Manage Webhooks; otherwise I fall back to embeds)."
            if enabled
            else "Persona posts are **off**."
        )
        await interaction.response.send_message(text, ephemeral=True)


def version_text(model, earlier) -> str:
    """v3 (earlier: v2, v1), and what made it: an update of the version before, or a new training."""
    made = ""
    if model.metrics.get("continued_from"):
        new = model.metrics.get("new_posts", 0)
        made = f", continued from v{model.metrics['continued_from']} with {new:,} new posts"
    kept = ", ".join(v.version_label for v in earlier)
    return f"{model.version_label}{made}" + (f"\nearlier, for `/models rollback`: {kept}" if kept else "")


def imported_text(model, repo: str) -> str:
    """The answer to /models import: who it is, with what data and picture, and a first command."""
    name = discord.utils.escape_markdown(model.display_name)
    kept, people = model.stats.get("kept"), model.stats.get("people") or []
    data = f" ({kept} tweets" + (f" of {len(people)} people)" if people else ")") if kept else ""
    picture = ", with its picture" if model.avatar_url else ""
    return (
        f"Imported **{name}** (`@{model.handle}`) from `{repo}`{data}{picture}. Try `{first_command(model)}`."
    )


def first_command(model) -> str:
    """/impersonate with the card's widget prompt when it has one (one that fits in `code`)."""
    prompt = model.metrics.get("suggested_prompt")
    usable = prompt and "`" not in prompt
    return f"/impersonate {model.handle}" + (f" prompt:{prompt}" if usable else "")


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != KEPT_POSTS_FILE:  # the uploaded posts stay here
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


async def setup(bot) -> None:
    await bot.add_cog(ModelsCog(bot))
