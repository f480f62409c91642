"""Errors whose message is meant for the user (shown as a short ephemeral reply in Discord)."""


class UserError(Exception):
    """Bad input or a request that cannot be served now; str(error) says why, briefly."""
