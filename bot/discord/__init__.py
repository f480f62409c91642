"""The Discord layer: the client, one cog per command group, views and embeds, posting as a persona,
slash options checked where Discord hands them over, and Discord's documented limits. It reaches the
core only through `bot.core.service.PersonaService`."""
