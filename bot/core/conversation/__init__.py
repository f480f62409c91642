"""Personas in the conversation: /chatter (replies, mentions, chime-ins within limits) and /autopost
schedules."""

from bot.core.conversation.chatter import Answer, Chatter, Incoming
from bot.core.conversation.schedules import Scheduler, parse_duration, parse_interval

__all__ = [
    "Answer",
    "Chatter",
    "Incoming",
    "Scheduler",
    "parse_duration",
    "parse_interval",
]
