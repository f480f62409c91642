"""The uploaded posts a persona was trained on, kept in its folder (split as the training split them),
so its voice report can be computed again; deleted with the persona (and so by /voice delete, opt-out
and model deletion), and never part of an export."""

from __future__ import annotations

import json
import os
from pathlib import Path

KEPT_POSTS_FILE = "posts.json"


def keep_posts(folder: Path, train: list[str], held_out: list[str]) -> None:
    partial = folder / f"{KEPT_POSTS_FILE}.tmp"
    partial.write_text(
        json.dumps({"train": train, "held_out": held_out}, ensure_ascii=False), encoding="utf-8"
    )
    os.replace(partial, folder / KEPT_POSTS_FILE)


def kept_posts(folder: Path) -> tuple[list[str], list[str]] | None:
    """(training posts, held-out posts), or None for a persona trained before posts were kept."""
    try:
        data = json.loads((folder / KEPT_POSTS_FILE).read_text(encoding="utf-8"))
        return list(data["train"]), list(data["held_out"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
