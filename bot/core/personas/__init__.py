"""The personas on disk and what describes them: the model store (atomic folders), model cards, and
members' own voices (data packages, erasure), the posts a persona was trained on."""

from bot.core.personas.hubimport import check_hub_id
from bot.core.personas.keptposts import KEPT_POSTS_FILE, keep_posts, kept_posts
from bot.core.personas.modelcard import read_card, render_card
from bot.core.personas.modelstore import ModelStore, StoreError
from bot.core.personas.voices import Voices

__all__ = [
    "KEPT_POSTS_FILE",
    "keep_posts",
    "kept_posts",
    "ModelStore",
    "StoreError",
    "Voices",
    "check_hub_id",
    "read_card",
    "render_card",
]
