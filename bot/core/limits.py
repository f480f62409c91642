"""Limits on what a user may ask for, shared by the core's checks and the Discord options.

Discord's own limits on what the bot sends (message, embed, autocomplete sizes) are in
bot/discord/discord_limits.py.
"""

MAX_PROMPT_CHARS = 200  # a generation or schedule prompt
MAX_TWEETS_PER_REQUEST = 10
MAX_QUEUED_JOBS_PER_GUILD = 3
MAX_SCHEDULES_PER_GUILD = 25
MIN_INTERVAL = 5 * 60  # seconds between auto-posts
MAX_INTERVAL = 7 * 24 * 3600
MAX_EPOCHS = 20
MAX_SCHEDULE_FAILURES = 3  # refused scheduled posts in a row before the schedule is paused
MAX_CHATTER_SETTINGS_PER_GUILD = 25  # /chatter set: personas x channels
MAX_CHATTER_COOLDOWN = 24 * 3600  # seconds between chime-ins in a channel
MAX_CONTEXT_CHARS = 280  # a member's message used as an answer's prompt (a tweet's length)
