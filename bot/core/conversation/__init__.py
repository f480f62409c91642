"""Personas in the conversation: /chatter (replies, mentions, chime-ins within limits), /autopost
schedules and the /realorfake game."""

from bot.core.conversation.chatter import Answer, Chatter, Incoming
from bot.core.conversation.realorfake import RealOrFake
from bot.core.conversation.schedules import Scheduler, parse_duration, parse_interval

__all__ = [
    "Answer",
    "Chatter",
    "Incoming",
    "RealOrFake",
    "Scheduler",
    "parse_duration",
    "parse_interval",
]
