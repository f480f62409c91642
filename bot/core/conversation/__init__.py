"""Personas in the conversation: /chatter (replies, mentions, chime-ins within limits) and /autopost
schedules."""
