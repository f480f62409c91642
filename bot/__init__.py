"""tweetalike: a Discord bot that learns to write like a person.

Entry points at the top (`python -m bot`, `bot.worker`, `bot.cli`, `bot.health`, `bot.config`),
the Discord layer in `bot/discord/`, everything else behind `bot.core.service.PersonaService`."""
