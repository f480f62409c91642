"""/models: list, inspect and delete this server's personas."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from ..ui import ConfirmView, NO_PINGS, handle_autocomplete, stats_table


def _fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


class ModelsCog(commands.Cog):
    models = app_commands.Group(name="models", description="This server's personas", guild_only=True)

    def __init__(self, bot):
        self.bot = bot
        self.core = bot.core

    @models.command(name="list", description="List this server's personas")
    async def models_list(self, interaction: discord.Interaction) -> None:
        models = await self.core.list_models(interaction.guild_id)
        jobs = await self.core.registry.list_jobs(interaction.guild_id, active_only=True)
        if not models and not jobs:
            await interaction.response.send_message(
                "No personas yet. Someone with Manage Server can create one with `/train new`.", ephemeral=True
            )
            return
        lines = [
            f"**{m.display_name}** `@{m.handle}` · {m.method} · {m.stats.get('kept', '?')} tweets"
            for m in models
        ]
        lines += [f"⏳ `@{j.handle}` · {j.state} (job #{j.id})" for j in jobs]
        embed = discord.Embed(title=f"Personas ({len(models)})", description="\n".join(lines)[:4000])
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @models.command(name="info", description="Show a persona's model card")
    @app_commands.autocomplete(handle=handle_autocomplete)
    async def models_info(self, interaction: discord.Interaction, handle: str) -> None:
        model = await self.core.get_model(interaction.guild_id, handle)
        m = model.metrics
        embed = discord.Embed(title=f"{model.display_name} (@{model.handle})", colour=discord.Colour.blurple())
        if model.avatar_url:
            embed.set_thumbnail(url=model.avatar_url)
        if model.stats:
            embed.add_field(name="Data", value=f"```\n{stats_table(model.stats)}\n```", inline=False)
        embed.add_field(name="Base model", value=f"`{model.base_model}`")
        embed.add_field(name="Method", value=model.method)
        if m.get("val_loss") is not None:
            embed.add_field(
                name="Validation",
                value=f"loss {_fmt(m.get('initial_val_loss'))} → {_fmt(m.get('val_loss'))}\n"
                      f"perplexity {_fmt(m.get('val_perplexity'), 1)}",
            )
        if m.get("steps"):
            embed.add_field(name="Training", value=f"{m['steps']} steps, {m.get('epochs', '?')} epochs")
        who = f"<@{model.created_by}>" if model.created_by else "someone"
        embed.add_field(name="Trained by", value=f"{who} <t:{int(model.created_at)}:R>", inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True, allowed_mentions=NO_PINGS)

    @models.command(name="delete", description="Delete a persona and its files")
    @app_commands.autocomplete(handle=handle_autocomplete)
    @app_commands.checks.has_permissions(manage_guild=True)
    async def models_delete(self, interaction: discord.Interaction, handle: str) -> None:
        model = await self.core.get_model(interaction.guild_id, handle)
        view = ConfirmView(interaction.user.id)
        await interaction.response.send_message(
            f"Delete **{model.display_name}** (`@{model.handle}`) and its files? This cannot be undone.",
            view=view, ephemeral=True,
        )
        await view.wait()
        if not view.confirmed:
            await interaction.edit_original_response(content="Nothing was deleted.", view=None)
            return
        await self.core.delete_model(interaction.guild_id, model.handle)
        await interaction.edit_original_response(content=f"Deleted `@{model.handle}`.", view=None)


async def setup(bot) -> None:
    await bot.add_cog(ModelsCog(bot))
