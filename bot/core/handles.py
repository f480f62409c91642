"""Persona handles and display names: what users type, and what is stored."""

from __future__ import annotations

import re

from bot.core.errors import UserError

HANDLE_RE = re.compile(r"^[a-z0-9_]{1,32}(?:-[a-z0-9_]{1,32}){0,2}$")
MAX_DISPLAY_NAME = 80
RESERVED_HANDLES = {"everyone", "here"}


class RegistryError(UserError):
    """A user-facing problem with a registry request (bad handle, unknown model...)."""


def normalize_handle(raw: str) -> str:
    """Turn user input such as '@JS_Thrill' into the stored handle 'js_thrill', or refuse it.

    Handles name folders on disk, so only [a-z0-9_] (Twitter's own alphabet) is accepted, with
    '-' joining up to three people for a multi-person model.
    """
    handle = (raw or "").strip().lstrip("@").lower()
    if not handle:
        raise RegistryError("The handle is empty.")
    if len(handle) > 98:
        raise RegistryError("That handle is too long (at most 32 characters per person).")
    if handle in RESERVED_HANDLES:
        raise RegistryError(
            f"`{handle}` is reserved by Discord (it would look like a mass mention); pick another handle."
        )
    if not HANDLE_RE.match(handle):
        raise RegistryError(
            "A handle may only use letters, digits and underscores (like a Twitter handle), "
            "at most 32 characters, e.g. `js_thrill`."
        )
    return handle


def handle_for_hub_id(repo: str) -> str:
    """The default handle for a hub model id (not yet normalized).

    huggingtweets names a model after its people's Twitter handles joined by "-" (`huggingtweets/a-b`
    is a model of @a and @b), which is this bot's own multi-person handle, so it is kept; elsewhere
    "-" is part of a name (`someone/tiny-gpt2`) and becomes "_".
    """
    owner, name = repo.split("/", 1)
    return name if owner.lower() == "huggingtweets" else name.replace("-", "_")


def clean_display_name(raw: str | None, handle: str) -> str:
    name = " ".join((raw or "").split())[:MAX_DISPLAY_NAME]
    return name or handle
