"""Continuing a persona with new posts (`/train update`, `cli train --continue`): what the next version
trains on and is measured against, from the posts the current version kept (posts.json) and the new
upload.

- New posts are those the persona has not seen (training or held out); duplicates count once.
- The held-out set keeps every old held-out post and adds the same share of the new ones as a first
  training holds out, so "better than the current version" is judged on old and new posts alike.
- The update trains on the new posts plus a replay sample of the old ones (as many as there are new
  training posts, at least REPLAY_MIN), not on the whole union: the old posts are already in the
  weights, and the replay keeps them there at a fraction of a full retraining's time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from bot.core.errors import UserError
from bot.core.training.data import split_tweets

# Old training posts replayed per new training post, and the fewest replayed (a handful of new posts
# would otherwise pull the persona towards them alone).
REPLAY_RATIO = 1.0
REPLAY_MIN = 100


@dataclass
class UpdatePlan:
    train: list[str]  # what this update trains on: the new training posts and the replay sample
    held_out: list[str]  # the old held-out posts and a share of the new ones
    old_held_out: list[str]  # the previous version's held-out posts (watched for forgetting)
    all_train: list[str]  # every training post of the new version (kept, and the anti-recitation index)
    new_posts: int  # posts in the upload the persona had not seen
    repeated: int  # posts in the upload it had seen already
    replayed: int  # old training posts in `train`


def new_posts_of(kept: tuple[list[str], list[str]], uploaded: list[str], handle: str) -> list[str]:
    """The uploaded posts the persona has not seen, in order, each once; a UserError when none is new."""
    seen = {_key(post) for part in kept for post in part}
    fresh: list[str] = []
    for post in uploaded:
        key = _key(post)
        if key not in seen:
            seen.add(key)
            fresh.append(post)
    if not fresh:
        raise UserError(
            f"None of the {len(uploaded)} posts in that file is new to `{handle}`: it has seen them all."
        )
    return fresh


def plan_update(
    kept: tuple[list[str], list[str]], uploaded: list[str], val_fraction: float, seed: int, handle: str = ""
) -> UpdatePlan:
    old_train, old_held = kept
    fresh = new_posts_of(kept, uploaded, handle)
    new_train, new_held = split_tweets(fresh, val_fraction, seed)
    if not old_held and not new_held:  # a tiny persona: hold out one new post, as a first training would
        new_train, new_held = new_train[1:], new_train[:1]
    replay = min(len(old_train), max(REPLAY_MIN, round(len(new_train) * REPLAY_RATIO)))
    sample = random.Random(seed).sample(old_train, replay)
    return UpdatePlan(
        train=new_train + sample,
        held_out=old_held + new_held,
        old_held_out=list(old_held),
        all_train=old_train + new_train,
        new_posts=len(fresh),
        repeated=len(uploaded) - len(fresh),
        replayed=replay,
    )


def merged_stats(old: dict[str, Any], new: dict[str, Any], plan: UpdatePlan) -> dict[str, Any]:
    """The data table of the new version: the counts of every upload so far, the union kept once."""
    if old.get("people") or new.get("people"):  # several people in one persona: the new upload's table
        return new
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, int) and isinstance(old.get(key, 0), int):
            merged[key] = old.get(key, 0) + value
        else:
            merged.setdefault(key, value)
    merged["duplicates"] = old.get("duplicates", 0) + new.get("duplicates", 0) + plan.repeated
    merged["kept"] = len(plan.all_train) + len(plan.held_out)
    return merged


def _key(post: str) -> str:
    return " ".join(post.split()).casefold()


def queued_line(plan: UpdatePlan, version: int) -> str:
    """What an update will do, as /train update and the CLI say when it is queued."""
    seen = f" ({plan.repeated:,} it had seen already)" if plan.repeated else ""
    new_held = len(plan.held_out) - len(plan.old_held_out)
    return (
        f"Continues from v{version} with {plan.new_posts:,} new posts{seen}: trains on "
        f"{len(plan.train) - plan.replayed:,} of them and {plan.replayed:,} earlier ones replayed, "
        f"judged on {len(plan.held_out):,} held-out posts ({new_held:,} of them new)."
    )


def continued_line(metrics: dict[str, Any]) -> str | None:
    """How an update went, for the CLI and the ready message: which version it continued, and what
    it did to the fit of the earlier held-out posts (forgetting)."""
    parent = metrics.get("continued_from")
    if not parent:
        return None
    line = f"continued from v{parent} with {metrics.get('new_posts', 0):,} new posts"
    before, after = metrics.get("old_held_out_loss_before"), metrics.get("old_held_out_loss")
    if before is not None and after is not None:
        change = math.exp(after - before) - 1
        line += (
            f"; held-out perplexity on v{parent}'s posts {math.exp(before):.1f} -> {math.exp(after):.1f} "
            f"({change:+.1%})"
        )
    return line
